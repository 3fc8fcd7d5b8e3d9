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
    "dashboard": {"title", "panelsJSON", "optionsJSON", "timeRestore", "timeFrom", "timeTo", "kibanaSavedObjectMeta"},
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
        if kind in ("search", "visualization"):
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


def test_the_objects_are_the_ones_promised(lines):
    """One index pattern, two searches, the visualizations of issue 6 and 7, one dashboard."""
    objects = [json.loads(line) for line in lines]
    by_type: dict[str, list[str]] = {}
    for obj in objects:
        by_type.setdefault(obj["type"], []).append(obj["attributes"]["title"])
    assert by_type["index-pattern"] == [f"{PREFIX}-*"]
    assert sorted(by_type["search"]) == ["Rejected and deferred deliveries", "SMTP deliveries"]
    assert len(by_type["visualization"]) == 7
    assert by_type["dashboard"] == ["SMTP delivery overview"]
    fields = {
        obj["attributes"]["title"]: {a["params"].get("field") for a in json.loads(obj["attributes"]["visState"])["aggs"]}
        for obj in objects
        if obj["type"] == "visualization"
    }
    assert {"@timestamp", "smtp.verdict"} <= fields["SMTP deliveries over time by verdict"]
    assert "smtp.reason" in fields["SMTP rejections by reason"]
    assert "smtp.recipient_domain" in fields["SMTP top recipient domains by rejections"]
    assert {"smtp.reply.code", "smtp.reply.enhanced"} <= fields["SMTP top reply codes of rejections and deferrals"]
    assert {"smtp.remote.ip", "smtp.remote.host"} <= fields["SMTP remote servers with most rejections and deferrals"]
    assert "smtp.tls" in fields["SMTP TLS share"]


def test_dashboard_restores_the_last_24_hours_and_shows_every_visualization(lines):
    objects = {json.loads(line)["id"]: json.loads(line) for line in lines}
    board = objects[f"smtp-shipper-{PREFIX}-dashboard-overview"]
    assert board["attributes"]["timeRestore"] is True
    assert board["attributes"]["timeFrom"] == "now-24h"
    shown = {r["id"] for r in board["references"]}
    visualizations = {i for i, o in objects.items() if o["type"] == "visualization"}
    assert visualizations <= shown
    assert f"smtp-shipper-{PREFIX}-search-deliveries" in shown


def test_index_pattern_formats_duration_as_nanoseconds(lines):
    pattern = json.loads(lines[0])
    assert pattern["attributes"]["timeFieldName"] == "@timestamp"
    formats = json.loads(pattern["attributes"]["fieldFormatMap"])
    assert formats["event.duration"]["id"] == "duration"
    assert formats["event.duration"]["params"]["inputFormat"] == "nanoseconds"


def test_rejected_search_filters_on_verdict_and_shows_reason(lines):
    search = next(o for o in map(json.loads, lines) if o["id"].endswith("-search-non-deliveries"))
    source = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert source["query"]["query"] == ""  # the query bar stays free for an address
    (flt,) = source["filter"]
    assert flt["meta"]["params"] == ["rejected", "deferred"]
    assert "smtp.reason" in search["attributes"]["columns"]


def test_reasons_chart_has_room_for_every_reason(lines):
    """The closed vocabulary is small enough to chart whole: no reason may fall off the chart."""
    from shipper.reasons import REASONS

    vis = next(o for o in map(json.loads, lines) if o["id"].endswith("-vis-reasons"))
    (reason_agg,) = [a for a in json.loads(vis["attributes"]["visState"])["aggs"] if a["params"].get("field") == "smtp.reason"]
    assert reason_agg["params"]["size"] >= len(REASONS)


def test_two_prefixes_render_disjoint_ids_and_patterns():
    one = [json.loads(x) for x in dashboards.render_ndjson("mail-a").splitlines()]
    two = [json.loads(x) for x in dashboards.render_ndjson("mail-b").splitlines()]
    assert not {o["id"] for o in one} & {o["id"] for o in two}
    assert all("mail-a" in o["id"] for o in one)
    assert [o["attributes"]["title"] for o in one if o["type"] == "index-pattern"] == ["mail-a-*"]
    assert all(r["id"].startswith("smtp-shipper-mail-a-") for o in one for r in o["references"])
    assert any(o["attributes"]["title"] == "SMTP delivery overview [mail-a]" for o in one)


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
    def drop_last_reference(obj):
        obj["references"].pop()

    problems = validate(_mutated(lines, "-dashboard-overview", drop_last_reference), field_types)
    assert any("panelRefName 'panel_7' names no reference" in p for p in problems)


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
class FakeDashboards:
    """Plays POST /api/saved_objects/_bulk_get and /_import over real HTTP, keeping objects."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.import_errors: list[dict[str, Any]] = []
        self.status = 200
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if fake.status != 200:
                    self._answer(fake.status, {"statusCode": fake.status, "message": "nope"})
                elif self.path.startswith("/api/saved_objects/_bulk_get"):
                    wanted = json.loads(body)
                    found = [
                        fake.objects.get((w["type"], w["id"]), {**w, "error": {"statusCode": 404, "message": "Not found"}})
                        for w in wanted
                    ]
                    self._answer(200, {"saved_objects": found})
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


@pytest.fixture
def fake_dashboards() -> Iterator[FakeDashboards]:
    fake = FakeDashboards()
    try:
        yield fake
    finally:
        fake.close()


def _settings(url: str | None, tmp_path, **dashboards_kw: Any) -> Settings:
    return dataclasses.replace(Settings(), dashboards=DashboardsSettings(url=url, **dashboards_kw))


def _steps(settings):
    steps = dashboards.setup_steps(settings, None)
    assert len(steps) == 1
    return steps[0]


def test_without_url_the_step_is_skipped_with_the_reason(tmp_path):
    report = _steps(_settings(None, tmp_path)).run(dry_run=False)
    assert report.outcome is Outcome.SKIPPED
    assert "dashboards.url not set" in report.detail


def test_first_import_creates_then_second_is_unchanged(fake_dashboards, tmp_path):
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    password.chmod(0o600)  # a password file open to others is refused
    settings = _settings(fake_dashboards.url, tmp_path, username="admin", password_file=password, tenant="global")
    first = _steps(settings).run(dry_run=False)
    assert first.outcome is Outcome.CREATED
    (request,) = fake_dashboards.imports()
    assert "overwrite=true" in request["path"]
    assert request["headers"]["osd-xsrf"] == "true"
    assert request["headers"]["securitytenant"] == "global"
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"admin:s3cret").decode()
    assert b'filename="smtp-shipper-smtp-deliveries-saved-objects.ndjson"' in request["body"]
    assert len(fake_dashboards.objects) == 11

    second = _steps(settings).run(dry_run=False)
    assert second.outcome is Outcome.UNCHANGED
    assert len(fake_dashboards.imports()) == 1


def test_a_changed_object_is_updated_and_dry_run_changes_nothing(fake_dashboards, tmp_path):
    settings = _settings(fake_dashboards.url, tmp_path)
    _steps(settings).run(dry_run=False)
    key = ("dashboard", f"smtp-shipper-{PREFIX}-dashboard-overview")
    fake_dashboards.objects[key]["attributes"]["timeFrom"] = "now-7d"  # someone saved it
    dry = _steps(settings).run(dry_run=True)
    assert (dry.outcome, dry.dry_run) == (Outcome.UPDATED, True)
    assert "1 of 11" in dry.detail
    assert len(fake_dashboards.imports()) == 1
    wet = _steps(settings).run(dry_run=False)
    assert wet.outcome is Outcome.UPDATED
    assert fake_dashboards.objects[key]["attributes"]["timeFrom"] == "now-24h"


def test_failed_objects_are_reported_one_by_one(fake_dashboards, tmp_path):
    fake_dashboards.import_errors = [
        {
            "id": "smtp-shipper-smtp-deliveries-vis-tls-share",
            "type": "visualization",
            "title": "SMTP TLS share",
            "error": {"type": "missing_references", "references": [{"type": "index-pattern", "id": "x"}]},
        }
    ]
    with pytest.raises(RequestRefused) as caught:
        _steps(_settings(fake_dashboards.url, tmp_path)).run(dry_run=False)
    message = str(caught.value)
    assert "vis-tls-share" in message and "missing_references" in message and "index-pattern:x" in message


def test_refused_credentials_and_unreachable_dashboards_say_so(fake_dashboards, tmp_path):
    fake_dashboards.status = 401
    with pytest.raises(ConnectionFailed, match="refused our credentials"):
        _steps(_settings(fake_dashboards.url, tmp_path)).run(dry_run=False)
    fake_dashboards.close()
    with pytest.raises(ConnectionFailed, match="unreachable"):
        _steps(_settings(fake_dashboards.url, tmp_path)).run(dry_run=False)
