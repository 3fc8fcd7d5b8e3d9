"""Alerting monitors: rendering from settings, and the create/update/unchanged logic of setup.

The monitors are run for real (``_execute``) in tests/integration/test_monitors.py and
installed in the real plugin there and in test_setup.py; here the bodies are checked offline,
and the install logic runs against an in-memory stand-in of the Alerting REST API (the lowest
seam: ``client.transport.perform_request``), which behaves like Alerting 2.19 where it matters:
search by ``monitor.name.keyword``, a 404 "Configured indices are not found" before the first
monitor, monitors handed back normalised (term queries as ``{"value", "boost"}``,
``track_total_hits: true`` as a number, ids on triggers and actions) and without
``ui_metadata``, ``seq_no`` checks on PUT, "no handler found" when the plugin is absent.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from opensearchpy import exceptions as os_exc
from test_dashboards_objects import AGGREGATABLE, mapping_field_types

from shipper import monitors
from shipper.config import DeferralRateSettings, Settings, ThresholdSettings
from shipper.errors import RequestRefused
from shipper.setup import Outcome


def settings_with(prefix: str = "smtp-deliveries", **alerting: Any) -> Settings:
    base = Settings()
    return dataclasses.replace(
        base,
        opensearch=dataclasses.replace(base.opensearch, index_prefix=prefix),
        alerting=dataclasses.replace(base.alerting, **alerting),
    )


def by_name(bodies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {b["name"].split(": ", 1)[1]: b for b in bodies}


def trigger(body: dict[str, Any]) -> dict[str, Any]:
    (wrapped,) = body["triggers"]
    (inner,) = wrapped.values()
    return inner


# --------------------------------------------------------------------------- rendering
def test_four_monitors_with_stable_prefixed_names():
    bodies = monitors.render_monitors(settings_with("mail-x"))
    assert [b["name"] for b in bodies] == [
        "smtp-shipper [mail-x]: rejections",
        "smtp-shipper [mail-x]: rejections per recipient domain",
        "smtp-shipper [mail-x]: rejections per reason",
        "smtp-shipper [mail-x]: deferral rate",
    ]
    assert all(b["inputs"][0]["search"]["indices"] == ["mail-x-*"] for b in bodies)


def test_thresholds_and_schedule_come_from_config_and_names_do_not_change():
    s = settings_with(
        interval_minutes=7,
        rejections=ThresholdSettings(123, 9),
        domain_rejections=ThresholdSettings(4, 30),
        deferral_rate=DeferralRateSettings(threshold_percent=35.0, window_minutes=45, min_documents=12),
    )
    bodies = by_name(monitors.render_monitors(s))
    defaults = by_name(monitors.render_monitors(settings_with()))
    assert bodies.keys() == defaults.keys()
    assert all(b["schedule"] == {"period": {"interval": 7, "unit": "MINUTES"}} for b in bodies.values())
    rej = bodies["rejections"]
    assert trigger(rej)["condition"]["script"]["source"] == "ctx.results[0].hits.total.value > 123"
    assert "{{period_end}}||-9m" in json.dumps(rej["inputs"])
    for name in ("rejections per recipient domain", "rejections per reason"):
        assert trigger(bodies[name])["condition"]["script"]["source"] == "params.rejections > 4"
        assert "{{period_end}}||-30m" in json.dumps(bodies[name]["inputs"])
    rate = trigger(bodies["deferral rate"])["condition"]["script"]["source"]
    assert "total >= 12" in rate and "> 35.0" in rate
    assert "{{period_end}}||-45m" in json.dumps(bodies["deferral rate"]["inputs"])
    assert all(bodies[n] != defaults[n] for n in bodies)


def test_monitors_look_at_outbound_deliveries_only():
    for body in monitors.render_monitors(settings_with()):
        filters = body["inputs"][0]["search"]["query"]["query"]["bool"]["filter"]
        assert {"term": {"smtp.direction": {"value": "outbound"}}} in filters, body["name"]


def test_bucket_monitors_group_by_domain_and_by_reason():
    bodies = by_name(monitors.render_monitors(settings_with()))
    for name, field in (("rejections per recipient domain", "smtp.recipient_domain"), ("rejections per reason", "smtp.reason")):
        body = bodies[name]
        assert body["monitor_type"] == "bucket_level_monitor"
        composite = body["inputs"][0]["search"]["query"]["aggregations"]["composite_agg"]["composite"]
        ((source,),) = [s.values() for s in composite["sources"]]
        assert source == {"terms": {"field": field}}
        condition = trigger(body)["condition"]
        assert condition["parent_bucket_path"] == "composite_agg"
        assert condition["buckets_path"] == {"rejections": "_count"}


def test_every_field_a_monitor_uses_is_in_the_template_and_aggregatable():
    types = mapping_field_types()

    def fields(node: Any) -> list[str]:
        out = []
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("term", "range") and isinstance(value, dict):
                    out.extend(value)
                elif key == "field" and isinstance(value, str):
                    out.append(value)
                else:
                    out.extend(fields(value))
        elif isinstance(node, list):
            for item in node:
                out.extend(fields(item))
        return out

    for body in monitors.render_monitors(settings_with()):
        used = fields(body["inputs"])
        assert used, body["name"]
        for name in used:
            assert types.get(name) in AGGREGATABLE, f"{body['name']}: {name} is {types.get(name)}"


def test_without_channel_no_actions_with_channel_every_trigger_notifies_it():
    assert all(trigger(b)["actions"] == [] for b in monitors.render_monitors(settings_with()))
    for body in monitors.render_monitors(settings_with(channel_id="Xy12_channel")):
        (action,) = trigger(body)["actions"]
        assert action["destination_id"] == "Xy12_channel"
        assert action["message_template"]["lang"] == "mustache"
        assert "{{" in action["message_template"]["source"]  # mustache survived Jinja
        if body["monitor_type"] == "bucket_level_monitor":
            assert action["action_execution_policy"]["action_execution_scope"]["per_alert"]["actionable_alerts"] == ["NEW"]


def test_rendering_is_stable():
    assert monitors.render_monitors(settings_with()) == monitors.render_monitors(settings_with())


def test_queries_are_written_as_the_plugin_stores_them():
    """setup finds a monitor unchanged only when the plugin's copy holds ours as a subset: a term
    query in short form ({"field": "v"}) comes back as {"field": {"value": "v", "boost": 1.0}}
    and track_total_hits: true as 2147483647, and would look changed on every run."""

    def terms(node: Any) -> list[Any]:
        if isinstance(node, dict):
            found = [v for k, v in node.items() if k == "term"]
            return found + [t for v in node.values() for t in terms(v)]
        if isinstance(node, list):
            return [t for v in node for t in terms(v)]
        return []

    for body in monitors.render_monitors(settings_with()):
        query = body["inputs"][0]["search"]["query"]
        for term in terms(query):
            assert all(isinstance(v, dict) and "value" in v for v in term.values()), (body["name"], term)
        assert query.get("track_total_hits", 2147483647) == 2147483647, body["name"]


def test_export_writes_one_json_per_monitor(tmp_path):
    paths = monitors.export(settings_with("p1"), tmp_path / "m")
    assert sorted(p.name for p in paths) == [
        "smtp-shipper-p1-deferral-rate.json",
        "smtp-shipper-p1-rejections-per-reason.json",
        "smtp-shipper-p1-rejections-per-recipient-domain.json",
        "smtp-shipper-p1-rejections.json",
    ]
    assert [json.loads(p.read_text()) for p in paths] == monitors.render_monitors(settings_with("p1"))


# --------------------------------------------------------------------------- installing
class FakeAlerting:
    """An in-memory Alerting API behind ``client.transport.perform_request``."""

    def __init__(self, *, installed: bool = True) -> None:
        self.installed = installed
        self.monitors: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.transport = self
        self.nodes = self

    def info(self, metric: str) -> dict[str, Any]:
        """``GET _nodes/plugins``, as ``shipper.setup.installed_plugins`` asks it."""
        assert metric == "plugins"
        plugins = [{"name": "opensearch-alerting", "classname": "org.opensearch.alerting.AlertingPlugin"}] if self.installed else []
        return {"nodes": {"n1": {"plugins": plugins}}}

    def perform_request(self, method: str, url: str, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        self.calls.append((method, url))
        if not self.installed:
            raise os_exc.RequestError(400, "no handler found", {"error": f"no handler found for uri [{url}] and method [{method}]"})
        base = monitors.API
        if (method, url) == ("POST", f"{base}/_search"):
            if not self.monitors:
                raise os_exc.NotFoundError(404, "alerting_exception", {
                    "error": {"type": "alerting_exception",
                              "reason": "Configured indices are not found: [.opendistro-alerting-config]",
                              "caused_by": {"type": "exception", "reason": "org.opensearch.index.IndexNotFoundException: no such index"}},
                    "status": 404})
            name = body["query"]["term"]["monitor.name.keyword"]
            hits = [{"_id": i, "_source": {"monitor": dict(m["monitor"])}} for i, m in self.monitors.items() if m["monitor"]["name"] == name]
            return {"hits": {"hits": hits}}
        if method == "POST" and url == base:
            new_id = f"m{len(self.monitors) + 1}"
            self.monitors[new_id] = {"seq": 0, "term": 1, "monitor": self._stored(body)}
            return {"_id": new_id}
        monitor_id = url.rsplit("/", 1)[1]
        entry = self.monitors[monitor_id]
        if method == "GET":
            return {"_id": monitor_id, "_seq_no": entry["seq"], "_primary_term": entry["term"], "monitor": entry["monitor"]}
        if method == "PUT":
            if (params["if_seq_no"], params["if_primary_term"]) != (entry["seq"], entry["term"]):
                raise os_exc.ConflictError(409, "version_conflict_engine_exception", {"error": "version_conflict_engine_exception"})
            entry.update(seq=entry["seq"] + 1, monitor=self._stored(body))
            return {"_id": monitor_id}
        raise AssertionError(f"unexpected {method} {url}")

    @classmethod
    def _stored(cls, body: dict[str, Any]) -> dict[str, Any]:
        """What Alerting 2.19 hands back: normalised, with fields of its own, ui_metadata left out."""
        stored = cls._normalised(json.loads(json.dumps(body)))
        stored.pop("ui_metadata", None)
        stored.update(last_update_time=1, schema_version=5, owner="alerting", data_sources={"alerts_index": ".opendistro-alerting-alerts"})
        for wrapped in stored["triggers"]:
            for trig in wrapped.values():
                trig["id"] = "trigger-id"
                for action in trig.get("actions", []):
                    action["id"] = "action-id"
        return stored

    @classmethod
    def _normalised(cls, node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "term" and isinstance(value, dict):
                    value = {f: (dict(v, boost=1.0) if isinstance(v, dict) else {"value": v, "boost": 1.0}) for f, v in value.items()}
                elif key == "track_total_hits" and value is True:
                    value = 2147483647
                out[key] = cls._normalised(value)
            return out
        if isinstance(node, list):
            return [cls._normalised(v) for v in node]
        return node


def run_all(settings: Settings, client: Any, *, dry_run: bool = False):
    return [step.run(dry_run=dry_run) for step in monitors.setup_steps(settings, client)]


def test_install_creates_then_is_unchanged_then_updates_in_place():
    api = FakeAlerting()
    first = run_all(settings_with(), api)
    assert [r.outcome for r in first] == [Outcome.CREATED] * 4
    assert all("alerting.channel_id is not set" in r.detail for r in first)
    assert len(api.monitors) == 4

    assert [r.outcome for r in run_all(settings_with(), api)] == [Outcome.UNCHANGED] * 4

    changed = settings_with(rejections=ThresholdSettings(80, 15))
    outcomes = [r.outcome for r in run_all(changed, api)]
    assert outcomes == [Outcome.UPDATED, Outcome.UNCHANGED, Outcome.UNCHANGED, Outcome.UNCHANGED]
    assert len(api.monitors) == 4  # in place, not a second monitor
    stored = next(m["monitor"] for m in api.monitors.values() if m["monitor"]["name"].endswith(": rejections"))
    assert trigger(stored)["condition"]["script"]["source"].endswith("> 80")


def test_dry_run_changes_nothing():
    api = FakeAlerting()
    reports = run_all(settings_with(), api, dry_run=True)
    assert [r.line().split(": ", 2)[-1][:12] for r in reports] == ["would create"] * 4
    assert api.monitors == {}


def test_a_monitor_changed_in_the_plugin_is_put_back():
    """Edited by hand (Dashboards → Alerting): setup finds the difference and updates it back."""
    api = FakeAlerting()
    run_all(settings_with(), api)
    edited = next(m["monitor"] for m in api.monitors.values() if m["monitor"]["name"].endswith(": rejections"))
    trigger(edited)["condition"]["script"]["source"] = "ctx.results[0].hits.total.value > 5000"
    outcomes = [r.outcome for r in run_all(settings_with(), api)]
    assert outcomes == [Outcome.UPDATED, Outcome.UNCHANGED, Outcome.UNCHANGED, Outcome.UNCHANGED]
    stored = next(m["monitor"] for m in api.monitors.values() if m["monitor"]["name"].endswith(": rejections"))
    assert trigger(stored)["condition"]["script"]["source"] == "ctx.results[0].hits.total.value > 50"


def test_a_channel_added_later_updates_the_monitors():
    api = FakeAlerting()
    run_all(settings_with(), api)
    reports = run_all(settings_with(channel_id="chan-1"), api)
    assert [r.outcome for r in reports] == [Outcome.UPDATED] * 4
    assert all("channel_id" not in r.detail for r in reports)


def test_without_the_alerting_plugin_every_monitor_is_skipped_with_the_reason():
    api = FakeAlerting(installed=False)
    reports = run_all(settings_with(), api)
    assert [r.outcome for r in reports] == [Outcome.SKIPPED] * 4
    assert all("Alerting plugin is not installed" in r.detail for r in reports)
    assert api.calls == []  # asked _nodes/plugins (once), never the missing API


def test_a_missing_monitors_api_is_also_read_as_no_plugin():
    """A cluster that hides _nodes/plugins but has no alerting API ("no handler found")."""
    api = FakeAlerting(installed=False)
    step = monitors.MonitorStep(api, monitors.render_monitors(settings_with())[0])
    report = step.run(dry_run=False)
    assert report.outcome is Outcome.SKIPPED
    assert api.calls == [("POST", f"{monitors.API}/_search")]


def test_a_concurrent_change_is_reported_not_overwritten():
    api = FakeAlerting()
    run_all(settings_with(), api)
    step = monitors.setup_steps(settings_with(interval_minutes=1), api)[0]
    original_get = monitors.get_monitor

    def get_then_someone_edits(client, monitor_id):
        answer = original_get(client, monitor_id)
        api.monitors[monitor_id]["seq"] += 1  # edited in Dashboards meanwhile
        return answer

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(monitors, "get_monitor", get_then_someone_edits)
        with pytest.raises(RequestRefused, match="changed by someone else"):
            step.run(dry_run=False)
