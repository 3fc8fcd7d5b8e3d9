"""Offline validation of the OpenSearch Dashboards saved objects (dashboards/saved-objects.yml.j2).

Dashboards' import checks little: a panel whose panelRefName names no reference, or a
visualization on a field the index does not have, imports "successfully" and breaks when the
dashboard is opened. So every shipped object is checked here, against the field types of the
index template in mappings/ as ``shipper.setup`` renders it.

The second half runs the Dashboards import client against a small local HTTP server that
plays the saved-objects API (real HTTP, real multipart), to pin the request we send and how
we read the answer; a real Dashboards is used in tests/integration/test_dashboards_import.py
when a Docker engine exists.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dashboard_queries
import pytest

from shipper import dashboards
from shipper.config import DashboardsSettings, Settings
from shipper.errors import ConnectionFailed, RequestRefused
from shipper.setup import Outcome, rendered_bodies

PREFIX = "smtp-deliveries"

#: Required attributes per saved-object type (what OSD 2.x writes on export).
REQUIRED = {
    "index-pattern": {"title", "timeFieldName"},
    "search": {"title", "columns", "sort", "kibanaSavedObjectMeta"},
    "visualization": {"title", "visState", "uiStateJSON", "description", "version", "kibanaSavedObjectMeta"},
    "dashboard": {"title", "panelsJSON", "optionsJSON", "timeRestore", "kibanaSavedObjectMeta"},
}
AGGREGATABLE = {"keyword", "long", "integer", "short", "byte", "double", "float", "date", "ip", "boolean"}
#: Field types of documents that are not in the mapping but every index has.
META_FIELDS = {"_id": "keyword", "_index": "keyword", "_score": "float"}


# --------------------------------------------------------------------------- the index mapping
def mapping_field_types(prefix: str = PREFIX) -> dict[str, str]:
    """Dotted field name → type, from the component template setup installs (multi-fields too)."""
    bodies = rendered_bodies(prefix, replicas=0, refresh_interval="5s", retention_days=90)
    types: dict[str, str] = {}

    def walk(properties: dict[str, Any], path: str) -> None:
        for name, spec in properties.items():
            full = f"{path}{name}"
            if "properties" in spec:
                walk(spec["properties"], full + ".")
                continue
            types[full] = spec["type"]
            for sub, subspec in spec.get("fields", {}).items():
                types[f"{full}.{sub}"] = subspec["type"]

    walk(bodies["mappings"]["template"]["mappings"]["properties"], "")
    return types


# --------------------------------------------------------------------------- the validator
def _query_fields(query: Any) -> Iterator[str]:
    """Field names a query DSL fragment (as stored in filters) refers to."""
    if isinstance(query, dict):
        for key, value in query.items():
            if key in ("match_phrase", "match", "term", "terms", "range", "prefix", "wildcard") and isinstance(value, dict):
                yield from value.keys()
            elif key == "exists":
                yield value["field"]
            else:
                yield from _query_fields(value)
    elif isinstance(query, list):
        for item in query:
            yield from _query_fields(item)


def validate(lines: list[str], field_types: dict[str, str]) -> list[str]:
    """Every problem found in an NDJSON export, one message each (empty: all good)."""
    problems: list[str] = []
    objects = []
    for n, line in enumerate(lines, 1):
        try:
            objects.append(json.loads(line))
        except ValueError as exc:
            problems.append(f"line {n}: not JSON: {exc}")
    present = {(o.get("type"), o.get("id")) for o in objects}
    by_id = {o.get("id"): o for o in objects}
    ids = [o.get("id") for o in objects]
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate ids: {sorted(i for i in ids if ids.count(i) > 1)}")

    def field_ok(where: str, name: str, *, aggregated: bool) -> None:
        kind = field_types.get(name) or META_FIELDS.get(name)
        if kind is None:
            problems.append(f"{where}: field {name!r} is not in the index template")
        elif aggregated and kind not in AGGREGATABLE:
            problems.append(f"{where}: field {name!r} is {kind}, not aggregatable")

    for obj in objects:
        where = f"{obj.get('type')} {obj.get('id')}"
        for key in ("id", "type", "attributes", "references", "migrationVersion"):
            if key not in obj:
                problems.append(f"{where}: no {key!r}")
        kind = obj.get("type")
        attrs = obj.get("attributes", {})
        wanted_version = dashboards.MIGRATION_VERSIONS.get(kind)
        if wanted_version is None:
            problems.append(f"{where}: unexpected type")
            continue
        if obj.get("migrationVersion") != {kind: wanted_version}:
            problems.append(f"{where}: migrationVersion {obj.get('migrationVersion')} is not {{{kind!r}: {wanted_version!r}}}")
        for missing in sorted(REQUIRED[kind] - set(attrs)):
            problems.append(f"{where}: no attribute {missing!r}")
        refs = {r["name"]: r for r in obj.get("references", [])}
        for ref in obj.get("references", []):
            if (ref["type"], ref["id"]) not in present:
                problems.append(f"{where}: reference {ref['name']} → {ref['type']} {ref['id']} is not in the file")

        decoded: dict[str, Any] = {}
        for dotted in dashboards.STRING_ENCODED:
            node: Any = attrs
            for part in dotted.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                continue
            if not isinstance(node, str):
                problems.append(f"{where}: {dotted} must be a JSON string, is {type(node).__name__}")
                continue
            try:
                decoded[dotted] = json.loads(node)
            except ValueError as exc:
                problems.append(f"{where}: {dotted} is not JSON: {exc}")

        source = decoded.get("kibanaSavedObjectMeta.searchSourceJSON", {})
        used_refs: set[str] = set()
        vis_type = decoded.get("visState", {}).get("type")
        if vis_type == "input_control_vis":
            # Controls query through their own index pattern references, not a search source.
            if "indexRefName" in source or source.get("filter"):
                problems.append(f"{where}: an input control's search source must be empty")
            control_ids = [c.get("id") for c in decoded["visState"]["params"].get("controls", [])]
            for i, control in enumerate(decoded["visState"]["params"].get("controls", [])):
                ref_name = control.get("indexPatternRefName")
                if ref_name != f"control_{i}_index_pattern" or ref_name not in refs or refs[ref_name]["type"] != "index-pattern":
                    problems.append(f"{where}: control {i} indexPatternRefName {ref_name!r} names no index-pattern reference")
                used_refs.add(str(ref_name))
                if "indexPattern" in control:
                    problems.append(f"{where}: control {i} has a literal index pattern id (pre-7.0 format)")
                field_ok(f"{where} control {i}", control.get("fieldName", ""), aggregated=True)
                if control.get("parent") and control["parent"] not in control_ids[:i]:
                    problems.append(f"{where}: control {i} has parent {control['parent']!r}, not an earlier control")
        elif kind in ("search", "visualization"):
            ref_name = source.get("indexRefName")
            if ref_name not in refs or refs[ref_name]["type"] != "index-pattern":
                problems.append(f"{where}: searchSourceJSON.indexRefName {ref_name!r} names no index-pattern reference")
            used_refs.add(str(ref_name))
            if "index" in source:
                problems.append(f"{where}: searchSourceJSON has a literal index id (pre-7.0 format)")
        for i, flt in enumerate(source.get("filter", [])):
            ref_name = flt.get("meta", {}).get("indexRefName")
            if ref_name != f"kibanaSavedObjectMeta.searchSourceJSON.filter[{i}].meta.index" or ref_name not in refs:
                problems.append(f"{where}: filter[{i}] indexRefName {ref_name!r} names no reference")
            used_refs.add(str(ref_name))
            field_ok(f"{where} filter[{i}]", flt["meta"]["key"], aggregated=False)
            for name in _query_fields(dashboards.filter_query(flt)):
                field_ok(f"{where} filter[{i}] query", name, aggregated=False)

        if kind == "index-pattern":
            field_ok(where, attrs.get("timeFieldName", ""), aggregated=True)
            listed = {f.get("name"): f for f in decoded.get("fields", [])}
            for name, es_type in field_types.items():
                spec = listed.get(name)
                if spec is None:
                    problems.append(f"{where}: field list lacks {name!r}")
                elif spec.get("esTypes") != [es_type] or spec.get("aggregatable") != (es_type in AGGREGATABLE):
                    problems.append(f"{where}: field list has {name!r} as {spec.get('esTypes')}, aggregatable={spec.get('aggregatable')}")
            for name in sorted(set(listed) - set(field_types) - {"_id", "_index", "_score", "_source", "_type"}):
                problems.append(f"{where}: field list has {name!r}, which the index template does not")
            for name in decoded.get("fieldFormatMap", {}):
                field_ok(f"{where} fieldFormatMap", name, aggregated=False)
        elif kind == "search":
            for name in attrs.get("columns", []):
                field_ok(f"{where} columns", name, aggregated=False)
            for name, _direction in attrs.get("sort", []):
                field_ok(f"{where} sort", name, aggregated=True)
        elif kind == "visualization":
            vis = decoded.get("visState", {})
            if vis.get("title") != attrs.get("title"):
                problems.append(f"{where}: visState.title {vis.get('title')!r} differs from title {attrs.get('title')!r}")
            agg_ids = [a["id"] for a in vis.get("aggs", [])]
            if len(agg_ids) != len(set(agg_ids)):
                problems.append(f"{where}: duplicate agg ids {agg_ids}")
            for agg in vis.get("aggs", []):
                if "field" in agg.get("params", {}):
                    field_ok(f"{where} agg {agg['id']} ({agg['type']})", agg["params"]["field"], aggregated=True)
                order_by = agg.get("params", {}).get("orderBy")
                if order_by and order_by not in agg_ids and not order_by.startswith("_"):
                    problems.append(f"{where}: agg {agg['id']} orders by unknown agg {order_by!r}")
        elif kind == "dashboard":
            panels = decoded.get("panelsJSON", [])
            names = [p.get("panelRefName") for p in panels]
            for name in names:
                if name not in refs:
                    problems.append(f"{where}: panelRefName {name!r} names no reference")
                used_refs.add(str(name))
            if len(names) != len(set(names)):
                problems.append(f"{where}: a panelRefName is used twice")
            indexes = [p.get("panelIndex") for p in panels]
            if len(indexes) != len(set(indexes)) or any(p["gridData"].get("i") != p.get("panelIndex") for p in panels):
                problems.append(f"{where}: panelIndex values are not unique or differ from gridData.i")
            # A filter controlled by an input control must name a control shown on this dashboard.
            shown_controls: set[str] = set()
            for name in names:
                panel_obj = by_id.get(refs.get(str(name), {}).get("id"))
                vis_state = panel_obj and json.loads(panel_obj["attributes"].get("visState", "{}"))
                if vis_state and vis_state.get("type") == "input_control_vis":
                    shown_controls |= {c["id"] for c in vis_state["params"]["controls"]}
            for i, flt in enumerate(source.get("filter", [])):
                controlled_by = flt["meta"].get("controlledBy")
                if controlled_by is not None and controlled_by not in shown_controls:
                    problems.append(f"{where}: filter[{i}] is controlled by {controlled_by!r}, no control on this dashboard")
        for name in sorted(set(refs) - used_refs):
            problems.append(f"{where}: reference {name!r} is not used")
    return problems


# --------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def field_types() -> dict[str, str]:
    return mapping_field_types()


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return dashboards.render_ndjson(PREFIX).splitlines()


def test_mapping_has_the_contract_fields(field_types):
    """The validator reads real types from mappings/ (smtp.reason keyword, transcript text)."""
    assert field_types["smtp.reason"] == "keyword"
    assert field_types["smtp.transcript"] == "text"
    assert field_types["smtp.reply.text.keyword"] == "keyword"
    assert field_types["smtp.remote.ip"] == "ip"


def test_every_shipped_object_is_valid(lines, field_types):
    """Each line parses; keys, JSON strings, references, fields and versions are right."""
    assert validate(lines, field_types) == []


def _objects(lines: list[str]) -> dict[str, dict[str, Any]]:
    return {json.loads(line)["id"]: json.loads(line) for line in lines}


def _oid(name: str) -> str:
    return f"smtp-shipper-{PREFIX}-{name}"


OUTBOUND_DASHBOARD = _oid("dashboard-overview")  # the id of the dashboard before issue 17
INBOUND_DASHBOARD = _oid("dashboard-inbound")


def test_the_objects_are_the_ones_promised(lines):
    """One index pattern; a search of both directions; per direction a non-deliveries search,
    seven views, a controls panel and a dashboard."""
    by_type: dict[str, list[str]] = {}
    for obj in map(json.loads, lines):
        by_type.setdefault(obj["type"], []).append(obj["attributes"]["title"])
    assert by_type["index-pattern"] == [f"{PREFIX}-*"]
    assert sorted(by_type["search"]) == [
        "SMTP deliveries, both directions",
        "SMTP inbound non-deliveries: rejected, deferred, failed",
        "SMTP outbound non-deliveries: rejected, deferred, failed",
    ]
    assert len(by_type["visualization"]) == 16
    assert sorted(by_type["dashboard"]) == [
        "SMTP inbound: what are we refusing, and from whom?",
        "SMTP outbound: is the world refusing our mail?",
    ]


def test_outbound_views_keep_the_ids_of_the_views_they_replace(lines):
    """An upgrade overwrites the mixed views in place (and dashboards built on them keep
    working) instead of leaving them behind beside new ones."""
    objects = _objects(lines)
    before_issue_17 = ["search-deliveries", "search-non-deliveries", "vis-deliveries-over-time", "vis-verdict-share",
                       "vis-rejections-by-domain", "vis-reply-codes", "vis-remote-servers", "vis-tls-share", "vis-reasons",
                       "dashboard-overview"]
    for name in before_issue_17:
        title = objects[_oid(name)]["attributes"]["title"]
        assert "outbound" in title or name == "search-deliveries", (name, title)


@pytest.mark.parametrize("obj_id", [obj["id"] for obj in dashboards.render_saved_objects(PREFIX)])
def test_every_view_filters_what_its_title_says(lines, obj_id):
    """The title's direction and verdicts (read as tests/dashboard_queries.title_meaning reads
    them) are exactly the view's own filter pills: nothing mixed, nothing left to the dashboard."""
    obj = _objects(lines)[obj_id]
    if obj["type"] not in ("search", "visualization") or "controls" in obj["attributes"]["title"]:
        return
    direction, verdicts = dashboard_queries.title_meaning(obj["attributes"]["title"])
    filters = {f["meta"]["key"]: f for f in dashboard_queries.decoded(obj, "kibanaSavedObjectMeta.searchSourceJSON")["filter"]}
    if direction is None:
        assert "smtp.direction" not in filters
    else:
        assert filters.pop("smtp.direction")["query"] == {"match_phrase": {"smtp.direction": direction}}
    if verdicts == dashboard_queries.VERDICTS:
        assert "smtp.verdict" not in filters
    else:
        verdict = filters.pop("smtp.verdict")
        listed = verdict["meta"]["params"] if verdict["meta"]["type"] == "phrases" else [verdict["meta"]["params"]["query"]]
        assert frozenset(listed) == verdicts
    assert filters == {}, f"filters the title does not announce: {sorted(filters)}"


def test_each_dashboard_shows_its_direction_only(lines):
    """Every panel of a dashboard is a view of its direction; all views are on one of them."""
    objects = _objects(lines)
    shown: set[str] = set()
    for board_id, direction in ((OUTBOUND_DASHBOARD, "outbound"), (INBOUND_DASHBOARD, "inbound")):
        board = objects[board_id]
        panels = [objects[r["id"]] for r in board["references"] if r["name"].startswith("panel_")]
        shown |= {p["id"] for p in panels}
        for panel in panels:
            assert f" {direction} " in panel["attributes"]["title"], (board_id, panel["attributes"]["title"])
        assert {p["type"] for p in panels} == {"search", "visualization"}
    views = {i for i, o in objects.items() if o["type"] == "visualization" or "non-deliveries" in i}
    assert views == shown


def test_dashboards_follow_the_time_picker_so_alert_links_keep_their_range(lines):
    """timeRestore would replace the range an alert link carries (OSD 2.9+ applies a saved
    time on load, use_saved_dashboard_instance.ts)."""
    for board_id in (OUTBOUND_DASHBOARD, INBOUND_DASHBOARD):
        attributes = _objects(lines)[board_id]["attributes"]
        assert attributes["timeRestore"] is False
        assert "timeFrom" not in attributes and "timeTo" not in attributes


def test_the_direction_control_opens_on_its_dashboards_direction(lines):
    """The dashboard's pill smtp.direction is owned by the Direction control (controlledBy),
    which the other controls follow (parent), so their options are this direction's."""
    objects = _objects(lines)
    for board_id, direction in ((OUTBOUND_DASHBOARD, "outbound"), (INBOUND_DASHBOARD, "inbound")):
        board = objects[board_id]
        (pill,) = dashboard_queries.decoded(board, "kibanaSavedObjectMeta.searchSourceJSON")["filter"]
        assert pill["query"] == {"match_phrase": {"smtp.direction": direction}}
        (controls_id,) = [r["id"] for r in board["references"] if r["id"].endswith("controls")]
        controls = dashboard_queries.decoded(objects[controls_id], "visState")["params"]["controls"]
        assert [(c["fieldName"], c["label"]) for c in controls] == [
            ("smtp.direction", "Direction"), ("smtp.verdict", "Verdict"), ("smtp.reason", "Reason"),
            ("smtp.recipient_domain", "Recipient domain"), ("host.name", "Mail server"),
        ]
        assert controls[0]["id"] == pill["meta"]["controlledBy"] and controls[0]["options"]["multiselect"] is False
        assert all(c["parent"] == controls[0]["id"] for c in controls[1:])


def test_index_pattern_shows_durations_in_seconds_with_the_unit(lines):
    pattern = json.loads(lines[0])
    assert pattern["attributes"]["timeFieldName"] == "@timestamp"
    assert pattern["id"] == dashboards.index_pattern_id(PREFIX)
    formats = json.loads(pattern["attributes"]["fieldFormatMap"])
    assert formats["event.duration"]["id"] == "duration"
    assert formats["event.duration"]["params"]["inputFormat"] == "nanoseconds"
    assert formats["event.duration"]["params"]["outputFormat"] == "asSeconds"
    assert formats["event.duration"]["params"]["showSuffix"] is True  # "1.234 Seconds"


def test_index_pattern_lists_the_lowercase_address_fields_as_multi_fields(lines):
    fields = {f["name"]: f for f in json.loads(json.loads(lines[0])["attributes"]["fields"])}
    for name in ("email.to.address", "email.from.address", "smtp.remote.host", "smtp.helo"):
        sub = fields[f"{name}.lowercase"]
        assert (sub["esTypes"], sub["aggregatable"], sub["subType"]) == (["keyword"], True, {"multi": {"parent": name}})


def test_non_deliveries_search_is_on_its_dashboard_with_the_stage(lines):
    objects = _objects(lines)
    for board_id, search_id in ((OUTBOUND_DASHBOARD, _oid("search-non-deliveries")),
                                (INBOUND_DASHBOARD, _oid("search-inbound-non-deliveries"))):
        assert search_id in {r["id"] for r in objects[board_id]["references"]}
        search = objects[search_id]
        source = dashboard_queries.decoded(search, "kibanaSavedObjectMeta.searchSourceJSON")
        assert source["query"]["query"] == ""  # the query bar stays free for an address
        assert {"smtp.stage", "smtp.reason", "smtp.verdict"} <= set(search["attributes"]["columns"])


def test_reasons_chart_lists_every_reason_on_a_readable_axis(lines):
    """The closed vocabulary is charted whole, one unrotated label per bar on the left axis."""
    from shipper.reasons import REASONS

    objects = _objects(lines)
    for vis_id, controls_id in ((_oid("vis-reasons"), _oid("vis-outbound-controls")),
                                (_oid("vis-inbound-reasons"), _oid("vis-inbound-controls"))):
        vis = dashboard_queries.decoded(objects[vis_id], "visState")
        assert vis["type"] == "horizontal_bar"
        (reason_agg,) = [a for a in vis["aggs"] if a["params"].get("field") == "smtp.reason"]
        assert reason_agg["params"]["size"] >= len(REASONS)
        (axis,) = vis["params"]["categoryAxes"]
        assert (axis["position"], axis["labels"]["rotate"], axis["labels"]["filter"]) == ("left", 0, False)
        controls = dashboard_queries.decoded(objects[controls_id], "visState")["params"]["controls"]
        (reason_control,) = [c for c in controls if c["fieldName"] == "smtp.reason"]
        assert reason_control["options"]["size"] >= len(REASONS) and reason_control["options"]["dynamicOptions"] is False


def test_titles_are_read_as_the_template_documents():
    """The reading of tests/dashboard_queries.title_meaning, which the checks on real data
    rely on, on titles the template writes."""
    assert dashboard_queries.title_meaning("SMTP outbound rejections by recipient domain") == ("outbound", frozenset({"rejected"}))
    assert dashboard_queries.title_meaning("SMTP inbound reply codes of rejections and deferrals") == ("inbound", frozenset({"rejected", "deferred"}))
    assert dashboard_queries.title_meaning("SMTP inbound non-deliveries: rejected, deferred, failed") == ("inbound", dashboard_queries.NON_DELIVERED)
    assert dashboard_queries.title_meaning("SMTP deliveries, both directions") == (None, dashboard_queries.VERDICTS)
    with pytest.raises(AssertionError):
        dashboard_queries.title_meaning("SMTP rejections by reason")  # the title before issue 17: no direction


def test_two_prefixes_render_disjoint_ids_and_patterns():
    one = [json.loads(x) for x in dashboards.render_ndjson("mail-a").splitlines()]
    two = [json.loads(x) for x in dashboards.render_ndjson("mail-b").splitlines()]
    assert not {o["id"] for o in one} & {o["id"] for o in two}
    assert all("mail-a" in o["id"] for o in one)
    assert [o["attributes"]["title"] for o in one if o["type"] == "index-pattern"] == ["mail-a-*"]
    assert all(r["id"].startswith("smtp-shipper-mail-a-") for o in one for r in o["references"])
    assert any(o["attributes"]["title"] == "SMTP outbound: is the world refusing our mail? [mail-a]" for o in one)


def test_rendering_is_stable():
    """Same prefix, same bytes: re-import is an overwrite of identical objects."""
    assert dashboards.render_ndjson(PREFIX) == dashboards.render_ndjson(PREFIX)


def test_custom_prefix_objects_are_valid(field_types):
    assert validate(dashboards.render_ndjson("mail.example-1").splitlines(), field_types) == []


# The validator must catch what Dashboards' import lets through.
def _mutated(lines: list[str], obj_id_suffix: str, change) -> list[str]:
    out = []
    for line in lines:
        obj = json.loads(line)
        if obj["id"].endswith(obj_id_suffix):
            obj = copy.deepcopy(obj)
            change(obj)
        out.append(json.dumps(obj))
    return out


def test_validator_catches_a_dangling_panel(lines, field_types):
    def drop_a_panel_reference(obj):
        obj["references"] = [r for r in obj["references"] if r["name"] != "panel_7"]

    problems = validate(_mutated(lines, "-dashboard-overview", drop_a_panel_reference), field_types)
    assert any("panelRefName 'panel_7' names no reference" in p for p in problems)


def test_validator_catches_a_control_without_its_index_pattern(lines, field_types):
    def drop_control_reference(obj):
        obj["references"] = [r for r in obj["references"] if r["name"] != "control_2_index_pattern"]

    problems = validate(_mutated(lines, "-vis-inbound-controls", drop_control_reference), field_types)
    assert problems == [
        f"visualization smtp-shipper-{PREFIX}-vis-inbound-controls: control 2 indexPatternRefName "
        "'control_2_index_pattern' names no index-pattern reference"
    ]


def test_validator_catches_a_pill_controlled_by_no_control_on_the_dashboard(lines, field_types):
    def rename_controller(obj):
        source = json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        source["filter"][0]["meta"]["controlledBy"] = "1525098134264"
        obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"] = json.dumps(source)

    problems = validate(_mutated(lines, "-dashboard-inbound", rename_controller), field_types)
    assert problems == [
        f"dashboard smtp-shipper-{PREFIX}-dashboard-inbound: filter[0] is controlled by '1525098134264', "
        "no control on this dashboard"
    ]


def test_validator_catches_a_text_field_in_an_aggregation(lines, field_types):
    def aggregate_transcript(obj):
        vis = json.loads(obj["attributes"]["visState"])
        vis["aggs"][1]["params"]["field"] = "smtp.transcript"
        obj["attributes"]["visState"] = json.dumps(vis)

    problems = validate(_mutated(lines, "-vis-verdict-share", aggregate_transcript), field_types)
    assert any("'smtp.transcript' is text, not aggregatable" in p for p in problems)


def test_validator_catches_an_unknown_field_and_a_kibana_8_version(lines, field_types):
    def break_search(obj):
        obj["attributes"]["columns"].append("smtp.no_such_field")
        obj["migrationVersion"] = {"search": "7.12.0"}

    problems = validate(_mutated(lines, "-search-deliveries", break_search), field_types)
    assert any("'smtp.no_such_field' is not in the index template" in p for p in problems)
    assert any("migrationVersion" in p for p in problems)


def test_validator_catches_a_stale_field_list(lines, field_types):
    def drop_reason(obj):
        fields = [f for f in json.loads(obj["attributes"]["fields"]) if f["name"] != "smtp.reason"]
        obj["attributes"]["fields"] = json.dumps(fields)

    problems = validate(_mutated(lines, "-index-pattern", drop_reason), field_types)
    assert problems == [f"index-pattern smtp-shipper-{PREFIX}-index-pattern: field list lacks 'smtp.reason'"]


def test_validator_catches_a_broken_index_ref_and_bad_json(lines, field_types):
    def break_source(obj):
        obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"] = '{"indexRefName": "nope"'

    problems = validate(_mutated(lines, "-vis-tls-share", break_source), field_types)
    assert any("searchSourceJSON is not JSON" in p for p in problems)


def test_export_writes_the_ndjson(tmp_path):
    settings = Settings()
    (path,) = dashboards.export(settings, tmp_path / "out")
    assert path.name == f"smtp-shipper-{PREFIX}-saved-objects.ndjson"
    assert path.read_text(encoding="utf-8") == dashboards.render_ndjson(PREFIX)


# --------------------------------------------------------------------------- the import client
N_OBJECTS = len(dashboards.render_saved_objects(PREFIX))


class FakeDashboards:
    """Plays Dashboards' saved-objects and advanced-settings APIs over real HTTP, keeping
    objects and settings: POST /api/saved_objects/_bulk_get and /_import, GET and POST
    /api/opensearch-dashboards/settings. It fakes what these tests do not test (storage,
    migrations); ``refuse_import`` answers an import as OSD does when its document migrator
    meets a newer migrationVersion (a Boom 422 for the whole file, nothing stored)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.settings: dict[str, Any] = {}
        self.requests: list[dict[str, Any]] = []
        self.import_errors: list[dict[str, Any]] = []
        self.refuse_import: str | None = None
        self.status = 200
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                fake.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers), "body": b""})
                if fake.status != 200:
                    self._answer(fake.status, {"statusCode": fake.status, "message": "nope"})
                elif self.path == "/api/opensearch-dashboards/settings":
                    self._answer(200, {"settings": fake.settings})
                else:
                    self._answer(404, {"statusCode": 404})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers), "body": body})
                if fake.status != 200:
                    self._answer(fake.status, {"statusCode": fake.status, "message": "nope"})
                elif self.path.startswith("/api/saved_objects/_bulk_get"):
                    wanted = json.loads(body)
                    found = [
                        fake.objects.get((w["type"], w["id"]), {**w, "error": {"statusCode": 404, "message": "Not found"}})
                        for w in wanted
                    ]
                    self._answer(200, {"saved_objects": found})
                elif self.path.startswith("/api/saved_objects/_import") and fake.refuse_import:
                    self._answer(422, {"statusCode": 422, "error": "Unprocessable Entity", "message": fake.refuse_import})
                elif self.path.startswith("/api/saved_objects/_import"):
                    ndjson = body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
                    for line in ndjson.decode().splitlines():
                        obj = json.loads(line)
                        fake.objects[(obj["type"], obj["id"])] = obj
                    self._answer(
                        200,
                        {
                            "success": not fake.import_errors,
                            "successCount": len(fake.objects) - len(fake.import_errors),
                            "errors": fake.import_errors,
                        },
                    )
                elif self.path == "/api/opensearch-dashboards/settings":
                    for key, value in json.loads(body)["changes"].items():
                        fake.settings[key] = {"userValue": value}
                    self._answer(200, {"settings": fake.settings})
                else:
                    self._answer(404, {"statusCode": 404})

            def _answer(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def imports(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].startswith("/api/saved_objects/_import")]

    def settings_writes(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST" and r["path"] == "/api/opensearch-dashboards/settings"]


@pytest.fixture
def fake_dashboards() -> Iterator[FakeDashboards]:
    fake = FakeDashboards()
    try:
        yield fake
    finally:
        fake.close()


def _settings(url: str | None, tmp_path, **dashboards_kw: Any) -> Settings:
    return dataclasses.replace(Settings(), dashboards=DashboardsSettings(url=url, **dashboards_kw))


def _run(settings, *, dry_run: bool = False) -> list[Any]:
    """Every Dashboards step of setup, in order, as ``smtp-shipper setup`` runs them."""
    return [step.run(dry_run=dry_run) for step in dashboards.setup_steps(settings, None)]


def test_without_url_the_step_is_skipped_with_the_reason(tmp_path):
    (report,) = _run(_settings(None, tmp_path))
    assert report.outcome is Outcome.SKIPPED
    assert "dashboards.url not set" in report.detail


def test_first_setup_imports_and_sets_the_default_then_nothing_changes(fake_dashboards, tmp_path):
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    password.chmod(0o600)  # a password file open to others is refused
    settings = _settings(fake_dashboards.url, tmp_path, username="admin", password_file=password, tenant="global")
    imported, default = _run(settings)
    assert (imported.outcome, default.outcome) == (Outcome.CREATED, Outcome.CREATED)
    (request,) = fake_dashboards.imports()
    assert "overwrite=true" in request["path"]
    assert request["headers"]["osd-xsrf"] == "true"
    assert request["headers"]["securitytenant"] == "global"
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"admin:s3cret").decode()
    assert b'filename="smtp-shipper-smtp-deliveries-saved-objects.ndjson"' in request["body"]
    assert len(fake_dashboards.objects) == N_OBJECTS
    (write,) = fake_dashboards.settings_writes()
    assert json.loads(write["body"]) == {"changes": {"defaultIndex": f"smtp-shipper-{PREFIX}-index-pattern"}}
    assert write["headers"]["securitytenant"] == "global"  # the tenant's own advanced settings

    again = _run(settings)
    assert [r.outcome for r in again] == [Outcome.UNCHANGED, Outcome.UNCHANGED]
    assert again[1].detail == "already the default"
    assert (len(fake_dashboards.imports()), len(fake_dashboards.settings_writes())) == (1, 1)


def test_another_default_index_pattern_is_left_alone(fake_dashboards, tmp_path):
    fake_dashboards.objects[("index-pattern", "logs")] = {"type": "index-pattern", "id": "logs", "attributes": {}}
    fake_dashboards.settings["defaultIndex"] = {"userValue": "logs"}
    _imported, default = _run(_settings(fake_dashboards.url, tmp_path))
    assert default.outcome is Outcome.UNCHANGED
    assert "another default (logs)" in default.detail
    assert fake_dashboards.settings_writes() == []


def test_a_default_naming_a_deleted_index_pattern_counts_as_none(fake_dashboards, tmp_path):
    fake_dashboards.settings["defaultIndex"] = {"userValue": "deleted-long-ago"}
    _imported, dry = _run(_settings(fake_dashboards.url, tmp_path), dry_run=True)
    assert (dry.outcome, dry.dry_run) == (Outcome.CREATED, True)
    assert fake_dashboards.settings_writes() == []  # dry run
    _imported, default = _run(_settings(fake_dashboards.url, tmp_path))
    assert default.outcome is Outcome.CREATED
    assert fake_dashboards.settings["defaultIndex"] == {"userValue": f"smtp-shipper-{PREFIX}-index-pattern"}


def test_a_changed_object_is_updated_and_dry_run_changes_nothing(fake_dashboards, tmp_path):
    settings = _settings(fake_dashboards.url, tmp_path)
    _run(settings)
    key = ("dashboard", f"smtp-shipper-{PREFIX}-dashboard-overview")
    fake_dashboards.objects[key]["attributes"]["timeRestore"] = True  # someone saved it
    dry, _default = _run(settings, dry_run=True)
    assert (dry.outcome, dry.dry_run) == (Outcome.UPDATED, True)
    assert f"1 of {N_OBJECTS}" in dry.detail
    assert len(fake_dashboards.imports()) == 1
    wet, _default = _run(settings)
    assert wet.outcome is Outcome.UPDATED
    assert fake_dashboards.objects[key]["attributes"]["timeRestore"] is False


def test_failed_objects_are_reported_one_by_one(fake_dashboards, tmp_path):
    fake_dashboards.import_errors = [
        {
            "id": "smtp-shipper-smtp-deliveries-vis-tls-share",
            "type": "visualization",
            "title": "SMTP outbound deliveries over TLS",
            "error": {"type": "missing_references", "references": [{"type": "index-pattern", "id": "x"}]},
        }
    ]
    with pytest.raises(RequestRefused) as caught:
        _run(_settings(fake_dashboards.url, tmp_path))
    message = str(caught.value)
    assert "vis-tls-share" in message and "missing_references" in message and "index-pattern:x" in message


def test_an_object_of_a_newer_dashboards_refuses_the_whole_file(fake_dashboards, tmp_path):
    """OSD's migrator throws for the whole import: say that nothing was imported, and why."""
    fake_dashboards.refuse_import = (
        'Document "smtp-shipper-smtp-deliveries-vis-reasons" has property "visualization" which belongs to a more '
        "recent version of OpenSearch Dashboards [7.12.0]. The last known version is [7.10.0]"
    )
    with pytest.raises(RequestRefused) as caught:
        _run(_settings(fake_dashboards.url, tmp_path))
    assert str(caught.value).startswith(
        f"OpenSearch Dashboards at {fake_dashboards.url} refused the whole import, nothing was imported (HTTP 422): "
        'Document "smtp-shipper-smtp-deliveries-vis-reasons" has property "visualization"'
    )
    assert "newer Dashboards" in str(caught.value.hint)
    assert fake_dashboards.objects == {} and fake_dashboards.settings_writes() == []


def test_refused_credentials_and_unreachable_dashboards_say_so(fake_dashboards, tmp_path):
    fake_dashboards.status = 401
    with pytest.raises(ConnectionFailed, match="refused our credentials"):
        _run(_settings(fake_dashboards.url, tmp_path))
    fake_dashboards.close()
    with pytest.raises(ConnectionFailed, match="unreachable"):
        _run(_settings(fake_dashboards.url, tmp_path))
