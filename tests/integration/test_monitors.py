"""The alerting monitors against real data: a burst of rejections triggers, clean traffic does not.

Two layers:

* Always: each monitor's own search (``{{period_end}}`` filled in as the Alerting plugin does)
  runs on the real index, and its trigger condition runs in real Painless — a query-level
  condition through the Painless execute API with the plugin's ``ctx.results`` as a param, a
  bucket-level condition as the ``bucket_selector`` it is. This needs no plugin.
* In the Alerting plugin: ``POST _plugins/_alerting/monitors/_execute?dryrun=true`` runs the
  very bodies (and renders their notification messages), and ``setup`` installs them (create →
  unchanged → update in place). These need the plugin (the ``alerting_plugin`` fixture): the
  local node has it when built from the plugin's sources; a clone without them skips these
  tests, saying how to get the sources.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shipper import monitors
from shipper.batching import prepare
from shipper.config import DeferralRateSettings, Settings, ThresholdSettings
from shipper.setup import Outcome, index_steps

pytestmark = pytest.mark.integration

PERIOD_END = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
PERIOD_END_MS = int(PERIOD_END.timestamp() * 1000)
MONITORS = ("rejections", "rejections per recipient domain", "rejections per reason", "deferral rate")


# --------------------------------------------------------------------------- data
def doc(n: int, minutes_ago: float, verdict: str, domain: str, *, reason: str | None = None,
        direction: str = "outbound") -> dict[str, Any]:
    """A delivery document as the pipeline writes it (the fields monitors read, and an id's)."""
    at = PERIOD_END - timedelta(minutes=minutes_ago)
    stamp = at.isoformat(timespec="milliseconds")
    d: dict[str, Any] = {
        "@timestamp": stamp,
        "event": {"start": stamp, "end": stamp, "duration": 1_000_000, "dataset": "xeams.smtp",
                  "outcome": {"delivered": "success", "deferred": "unknown"}.get(verdict, "failure")},
        "smtp": {"verdict": verdict, "direction": direction, "session_id": f"s{n}", "transaction": 0,
                 "stage": "rcpt", "recipient_domain": domain,
                 "reply": {"code": {"delivered": "250", "deferred": "451", "rejected": "550"}[verdict]}},
        "email": {"to": {"address": f"user{n}@{domain}"}, "from": {"address": "john@ourcompany.example"}},
        "host": {"name": "test-host"},
    }
    if reason:
        d["smtp"]["reason"] = reason
    return d


def burst() -> list[dict[str, Any]]:
    """54 outbound rejections in 14 minutes (45 from blocked.example, "blocklisted"; 9 single
    unknown recipients elsewhere), 40 deferrals and 30 deliveries in 30 minutes."""
    docs = [doc(i, i * 0.3, "rejected", "blocked.example", reason="blocklisted") for i in range(45)]
    docs += [doc(100 + i, 2 + i, "rejected", f"d{i}.example", reason="unknown-recipient") for i in range(9)]
    docs += [doc(200 + i, i * 0.7, "deferred", "slow.example", reason="greylisted") for i in range(40)]
    docs += [doc(300 + i, i * 0.9, "delivered", "gmail.example") for i in range(30)]
    return docs


def clean() -> list[dict[str, Any]]:
    """Normal traffic: deliveries, a few rejections and deferrals, many inbound rejections
    (our own spam refusals), and a big outbound burst three hours ago (outside every window)."""
    docs = [doc(i, i * 0.25, "delivered", "gmail.example") for i in range(100)]
    docs += [doc(200 + i, 5 + i, "rejected", f"d{i}.example", reason="unknown-recipient") for i in range(5)]
    docs += [doc(300 + i, 3 + i, "deferred", "slow.example", reason="greylisted") for i in range(3)]
    docs += [doc(400 + i, i * 0.1, "rejected", "ourcompany.example", reason="spam", direction="inbound") for i in range(200)]
    docs += [doc(1000 + i, 180 + i * 0.1, "rejected", "blocked.example", reason="blocklisted") for i in range(300)]
    return docs


def index(client: Any, prefix: str, docs: list[dict[str, Any]]) -> Settings:
    base = Settings()
    settings = dataclasses.replace(base, opensearch=dataclasses.replace(base.opensearch, index_prefix=prefix))
    for step in index_steps(settings, client):
        step.run(dry_run=False)
    body = b"".join(i.action + i.source for i in (prepare(d, prefix) for d in docs))
    answer = client.bulk(body=body, refresh=True)
    assert not answer["errors"], [i for i in answer["items"] if i["index"].get("error")][:2]
    return settings


@pytest.fixture
def datasets(opensearch, index_prefix) -> dict[str, Settings]:
    """Two sub-prefixes of the test's prefix (so cleanup takes both): a burst and clean traffic."""
    return {
        "burst": index(opensearch, f"{index_prefix}-burst", burst()),
        "clean": index(opensearch, f"{index_prefix}-clean", clean()),
    }


# --------------------------------------------------------------------------- emulation
def _fill(node: Any) -> Any:
    return json.loads(json.dumps(node).replace("{{period_end}}", str(PERIOD_END_MS)))


def evaluate(client: Any, body: dict[str, Any]) -> set[str] | bool:
    """Run a monitor the way the plugin does: True/False for a query-level monitor, the set of
    triggering bucket keys for a bucket-level one."""
    search = body["inputs"][0]["search"]
    query = _fill(search["query"])
    (wrapped,) = body["triggers"]
    ((kind, trig),) = wrapped.items()
    condition = trig["condition"]
    if kind == "query_level_trigger":
        results = client.search(index=",".join(search["indices"]), body=query)
        script = condition["script"]
        answer = client.transport.perform_request(
            "POST", "/_scripts/painless/_execute",
            body={"script": {"source": script["source"].replace("ctx.", "params.ctx."), "lang": "painless",
                             "params": {"ctx": {"results": [results]}}},
                  "context": "painless_test"},
        )
        return answer["result"] == "true"
    parent = query["aggregations"][condition["parent_bucket_path"]]
    parent["aggs"] = {"trigger": {"bucket_selector": {"buckets_path": condition["buckets_path"], "script": condition["script"]}}}
    results = client.search(index=",".join(search["indices"]), body=query)
    buckets = results["aggregations"][condition["parent_bucket_path"]]["buckets"]
    return {",".join(str(v) for v in b["key"].values()) for b in buckets}


EXPECTED_BURST = {
    "rejections": True,
    "rejections per recipient domain": {"blocked.example"},
    "rejections per reason": {"blocklisted"},
    "deferral rate": True,
}
EXPECTED_CLEAN = {"rejections": False, "rejections per recipient domain": set(), "rejections per reason": set(), "deferral rate": False}


def named(settings: Settings) -> dict[str, dict[str, Any]]:
    return {b["name"].split(": ", 1)[1]: b for b in monitors.render_monitors(settings)}


@pytest.mark.parametrize("name", MONITORS)
def test_monitor_query_and_condition_on_a_burst_and_on_clean_traffic(opensearch, datasets, name):
    """Burst → triggered (for the right buckets); clean traffic → quiet."""
    assert evaluate(opensearch, named(datasets["burst"])[name]) == EXPECTED_BURST[name]
    assert evaluate(opensearch, named(datasets["clean"])[name]) == EXPECTED_CLEAN[name]


def test_thresholds_from_config_move_the_trigger(opensearch, datasets):
    """The same burst stays quiet when the configured threshold is above it."""
    settings = dataclasses.replace(
        datasets["burst"],
        alerting=dataclasses.replace(datasets["burst"].alerting, rejections=ThresholdSettings(60, 15),
                                     domain_rejections=ThresholdSettings(45, 60)),
    )
    monitors_ = named(settings)
    assert evaluate(opensearch, monitors_["rejections"]) is False  # 54 is not above 60
    assert evaluate(opensearch, monitors_["rejections per recipient domain"]) == set()  # 45 is not above 45


def test_deferral_rate_waits_for_enough_attempts(opensearch, index_prefix):
    """6 of 10 attempts deferred is 60 %, but 10 attempts are below min_documents (20)."""
    few = [doc(i, i, "deferred", "slow.example", reason="greylisted") for i in range(6)]
    few += [doc(10 + i, i, "delivered", "gmail.example") for i in range(4)]
    settings = index(opensearch, f"{index_prefix}-few", few)
    assert evaluate(opensearch, named(settings)["deferral rate"]) is False
    lower = dataclasses.replace(
        settings, alerting=dataclasses.replace(settings.alerting, deferral_rate=DeferralRateSettings(20.0, 30, 10))
    )
    assert evaluate(opensearch, named(lower)["deferral rate"]) is True


# --------------------------------------------------------------------------- the real plugin
def _execute_outcome(result: dict[str, Any]) -> set[str] | bool:
    assert result.get("error") in (None, ""), result.get("error")
    assert result["input_results"].get("error") in (None, ""), result["input_results"]["error"]
    (trigger_result,) = result["trigger_results"].values()
    assert trigger_result.get("error") in (None, ""), trigger_result["error"]
    if "agg_result_buckets" in trigger_result:
        # each bucket comes wrapped: {"agg_alert_content": {"bucket_keys": [...], "bucket": {...}}}
        return {",".join(b["agg_alert_content"]["bucket_keys"]) for b in trigger_result["agg_result_buckets"].values()}
    return bool(trigger_result["triggered"])


@pytest.mark.parametrize("name", MONITORS)
def test_monitor_executes_in_the_alerting_plugin(opensearch, alerting_plugin, datasets, name):
    burst_result = monitors.execute_monitor(opensearch, named(datasets["burst"])[name], period_end_ms=PERIOD_END_MS)
    clean_result = monitors.execute_monitor(opensearch, named(datasets["clean"])[name], period_end_ms=PERIOD_END_MS)
    assert _execute_outcome(burst_result) == EXPECTED_BURST[name]
    assert _execute_outcome(clean_result) == EXPECTED_CLEAN[name]


# What each notification must name on the burst (the wording is free; these facts are not).
EXPECTED_IN_MESSAGE = {
    "rejections": ["54"],
    "rejections per recipient domain": ["blocked.example"],
    "rejections per reason": ["blocklisted"],
    "deferral rate": ["40", "124"],
}


@pytest.mark.parametrize("name", MONITORS)
def test_notification_messages_render_with_the_plugins_variables(opensearch, alerting_plugin, datasets, name):
    """A dry run renders the actions without sending them (the channel need not exist): every
    mustache variable the messages use must be one the plugin fills in."""
    settings = dataclasses.replace(
        datasets["burst"], alerting=dataclasses.replace(datasets["burst"].alerting, channel_id="no-such-channel")
    )
    result = monitors.execute_monitor(opensearch, named(settings)[name], period_end_ms=PERIOD_END_MS)
    (trigger_result,) = result["trigger_results"].values()
    if "agg_result_buckets" in trigger_result:  # bucket level: {bucket key: {action id: result}}
        (per_action,) = trigger_result["action_results"].values()
    else:
        per_action = trigger_result["action_results"]
    (action,) = per_action.values()
    assert action["error"] is None, action["error"]
    message, subject = action["output"]["message"], action["output"]["subject"]
    assert subject == f"smtp-shipper [{datasets['burst'].opensearch.index_prefix}]: {name}"
    for fact in EXPECTED_IN_MESSAGE[name]:
        assert fact in message, message
    assert "{{" not in message and "()" not in message and "( " not in message, message


def setup_outcomes(settings: Settings, client: Any, *, dry_run: bool = False) -> list[Outcome]:
    return [s.run(dry_run=dry_run).outcome for s in monitors.setup_steps(settings, client)]


def test_setup_installs_monitors_idempotently(opensearch, alerting_plugin, index_prefix):
    """Dry run → nothing; create → unchanged → a changed threshold updates that monitor in
    place (same id) → a channel added later updates them all."""
    base = Settings()
    settings = dataclasses.replace(base, opensearch=dataclasses.replace(base.opensearch, index_prefix=index_prefix))
    assert setup_outcomes(settings, opensearch, dry_run=True) == [Outcome.CREATED] * 4
    assert all(monitors.find_monitors(opensearch, b["name"]) == [] for b in monitors.render_monitors(settings))

    assert setup_outcomes(settings, opensearch) == [Outcome.CREATED] * 4
    assert setup_outcomes(settings, opensearch) == [Outcome.UNCHANGED] * 4
    (before,) = monitors.find_monitors(opensearch, f"smtp-shipper [{index_prefix}]: rejections")

    raised = dataclasses.replace(settings, alerting=dataclasses.replace(settings.alerting, rejections=ThresholdSettings(99, 15)))
    assert setup_outcomes(raised, opensearch, dry_run=True) == [Outcome.UPDATED] + [Outcome.UNCHANGED] * 3
    assert setup_outcomes(raised, opensearch) == [Outcome.UPDATED] + [Outcome.UNCHANGED] * 3
    (after,) = monitors.find_monitors(opensearch, f"smtp-shipper [{index_prefix}]: rejections")
    assert after["_id"] == before["_id"]
    stored = monitors.get_monitor(opensearch, after["_id"])["monitor"]
    assert "> 99" in json.dumps(stored["triggers"])
    assert setup_outcomes(raised, opensearch) == [Outcome.UNCHANGED] * 4

    channel = dataclasses.replace(raised, alerting=dataclasses.replace(raised.alerting, channel_id="chan-1"))
    assert setup_outcomes(channel, opensearch) == [Outcome.UPDATED] * 4
    assert setup_outcomes(channel, opensearch) == [Outcome.UNCHANGED] * 4
