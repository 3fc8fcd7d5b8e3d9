"""What OpenSearch Dashboards sends for our saved objects, and what their titles promise.

Shared by the offline checks (tests/unit/test_dashboards_objects.py) and the checks on real
data (tests/integration/test_dashboards_*.py). The translations follow OSD 2.x's own code,
cited per function; they cover what the shipped objects use and fail loudly on anything
else, so that a new kind of view gets a translation before it gets a test.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from shipper import dashboards

VERDICTS = frozenset({"delivered", "rejected", "deferred", "failed"})
NON_DELIVERED = frozenset({"rejected", "deferred", "failed"})


# --------------------------------------------------------------------------- titles
def title_meaning(title: str) -> tuple[str | None, frozenset[str]]:
    """(direction or None for both, verdicts counted) as a reader takes them from a title.

    The vocabulary of dashboards/saved-objects.yml.j2: "outbound" / "inbound" / "both
    directions"; "non-deliveries" = rejected, deferred, failed; "rejections and deferrals";
    "rejections" = rejected; any other view ("deliveries", "verdicts") counts every verdict.
    A title naming no direction, or both, is an error: the reader could not tell."""
    words = title.lower()
    directions = [d for d in ("outbound", "inbound") if re.search(rf"\b{d}\b", words)]
    if "both directions" in words:
        directions.append("both")
    if len(directions) != 1:
        raise AssertionError(f"title {title!r} does not name exactly one direction: {directions}")
    direction = None if directions[0] == "both" else directions[0]
    if "non-deliveries" in words:
        verdicts = NON_DELIVERED
    elif "rejections and deferrals" in words:
        verdicts = frozenset({"rejected", "deferred"})
    elif "rejections" in words:
        verdicts = frozenset({"rejected"})
    else:
        verdicts = VERDICTS
    return direction, verdicts


# --------------------------------------------------------------------------- saved object → DSL
def decoded(obj: dict[str, Any], attribute: str) -> Any:
    node: Any = obj["attributes"]
    for part in attribute.split("."):
        node = node[part]
    return json.loads(node) if isinstance(node, str) else node


def search_source_query(source: dict[str, Any], extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The query of a search source: its (empty) query bar plus its enabled filter pills
    (and ``extra`` filters: a dashboard's own, a time range)."""
    query = source.get("query", {})
    assert query.get("query", "") == "", "the translator only knows empty query bars; use filter pills"
    filters = [dashboards.filter_query(f) for f in source.get("filter", []) if not f["meta"].get("disabled")]
    return {"bool": {"filter": filters + list(extra or [])}}


def dql_field_is(field: str, text: str) -> dict[str, Any]:
    """What OSD's DQL sends for ``field:"text"`` typed in the query bar: a phrase match in a
    bool should (data/common/opensearch_query/kuery/functions/is.ts, quoted value → isPhrase)."""
    return {"bool": {"should": [{"match_phrase": {field: text}}], "minimum_should_match": 1}}


def time_range(start: str, end: str) -> dict[str, Any]:
    """The time filter OSD adds for the time picker's range (both ends included)."""
    return {"range": {"@timestamp": {"gte": start, "lte": end, "format": "strict_date_optional_time"}}}


def translate_aggs(aggs: list[dict[str, Any]], *, unlimited: bool = False) -> dict[str, Any]:
    """Nest the enabled bucket aggs in their order, as Dashboards' AggConfigs does; a count
    metric is each bucket's doc_count. Unknown agg types fail, so a new one gets a translation.
    ``unlimited`` lifts the terms sizes (a display limit) so every bucket can be compared."""
    buckets = [a for a in aggs if a.get("enabled", True) and a["schema"] != "metric"]
    metrics = [a for a in aggs if a.get("enabled", True) and a["schema"] == "metric"]
    assert [m["type"] for m in metrics] == ["count"], "only count metrics are translated"
    tree: dict[str, Any] = {}
    for agg in reversed(buckets):
        params = agg["params"]
        if agg["type"] == "terms":
            size = 10_000 if unlimited else params["size"]
            body: dict[str, Any] = {"terms": {"field": params["field"], "size": size, "order": {"_count": params["order"]}}}
            if params.get("missingBucket"):
                body["terms"]["missing"] = "__missing__"
        elif agg["type"] == "date_histogram":
            # "auto" picks an interval from the time range; the data here spans hours → 1h.
            body = {"date_histogram": {"field": params["field"], "fixed_interval": "1h", "min_doc_count": params["min_doc_count"]}}
        else:
            raise AssertionError(f"no translation for agg type {agg['type']}")
        if tree:
            body["aggs"] = tree
        tree = {agg["id"]: body}
    return tree


def flatten(aggs: list[dict[str, Any]], result: dict[str, Any]) -> Counter[tuple[Any, ...]]:
    """Rows of key tuples → doc_count, one column per bucket agg (a data table's rows). Terms
    keys of booleans are read as "true"/"false" (key_as_string), dates as epoch ms (key)."""
    bucket_aggs = [a for a in aggs if a.get("enabled", True) and a["schema"] != "metric"]
    rows: Counter[tuple[Any, ...]] = Counter()

    def walk(node: dict[str, Any], depth: int, keys: tuple[Any, ...]) -> None:
        if depth == len(bucket_aggs):
            rows[keys] += node["doc_count"]
            return
        agg = bucket_aggs[depth]
        for bucket in node[agg["id"]]["buckets"]:
            key = bucket.get("key_as_string", bucket["key"]) if agg["type"] == "terms" else bucket["key"]
            walk(bucket, depth + 1, keys + (key,))

    walk(result, 0, ())
    return rows


def run_view(client: Any, index: str, obj: dict[str, Any], *, extra: list[dict[str, Any]] | None = None,
             unlimited: bool = True, drop_filters: tuple[str, ...] = ()) -> Counter[tuple[Any, ...]]:
    """A visualization's rows on real data, as Dashboards would ask for them. ``drop_filters``
    leaves out the view's filter pills on those fields (to show that the data would notice)."""
    vis = decoded(obj, "visState")
    source = dict(decoded(obj, "kibanaSavedObjectMeta.searchSourceJSON"))
    source["filter"] = [f for f in source.get("filter", []) if f["meta"]["key"] not in drop_filters]
    body = {"size": 0, "query": search_source_query(source, extra), "aggs": translate_aggs(vis["aggs"], unlimited=unlimited)}
    return flatten(vis["aggs"], client.search(index=index, body=body)["aggregations"])
