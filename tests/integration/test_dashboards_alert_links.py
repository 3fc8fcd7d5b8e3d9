"""An alert sends the reader to a view that shows the very numbers the monitor counted.

For each alerting monitor, on real data of both directions around the alert's period end:
the monitor's own search runs as the Alerting plugin runs it (``{{period_end}}`` filled in);
its alert text is rendered by OpenSearch's own Mustache engine (the plugin's template
language; ``_render/template``) with the context the plugin gives an action (``ctx.results``,
``ctx.periodEnd``, ``ctx.newAlerts``); the link in that text is followed as Dashboards reads
it (the dashboard id, the ``_g`` time range with date math on the period end); and the panel
the text names, on that dashboard, for that range, must show the numbers the text reports.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from dashboard_queries import decoded, run_view, time_range

from shipper import dashboards, monitors
from shipper.batching import prepare
from shipper.config import DashboardsSettings, Settings
from shipper.setup import index_steps

pytestmark = pytest.mark.integration

PERIOD_END = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
PERIOD_END_MS = int(PERIOD_END.timestamp() * 1000)
CTX_PERIOD_END = "2026-11-20T12:00:00Z"  # how the plugin writes ctx.periodEnd (java.time.Instant)
DASHBOARDS_URL = "https://dashboards.example.net:5601/osd"


def doc(n: int, minutes_ago: float, verdict: str, domain: str, *, reason: str | None = None,
        direction: str = "outbound") -> dict[str, Any]:
    """A delivery document with the fields monitors and views read."""
    stamp = (PERIOD_END - timedelta(minutes=minutes_ago)).isoformat(timespec="milliseconds")
    d: dict[str, Any] = {
        "@timestamp": stamp,
        "event": {"start": stamp, "end": stamp, "duration": 1_000_000, "dataset": "xeams.smtp",
                  "outcome": {"delivered": "success", "deferred": "unknown"}.get(verdict, "failure")},
        "smtp": {"verdict": verdict, "direction": direction, "session_id": f"s{n}", "transaction": 0, "stage": "rcpt",
                 "recipient_domain": domain, "remote": {"ip": f"192.0.2.{n % 250}"}, "tls": n % 2 == 0},
        "email": {"to": {"address": f"user{n}@{domain}"}, "from": {"address": "john@ourcompany.example"}},
        "host": {"name": "test-host"},
    }
    if verdict != "delivered":
        d["smtp"]["reason"] = reason or "other"
    if verdict != "failed":
        d["smtp"]["reply"] = {"code": {"delivered": "250", "deferred": "451", "rejected": "550"}[verdict]}
    return d


def traffic() -> list[dict[str, Any]]:
    """Outbound trouble inside every window, inbound refusals in the same minutes, and more
    outbound trouble just before the widest window (which a link without the range would show)."""
    docs = [doc(i, i * 0.3, "rejected", "blocked.example", reason="blocklisted") for i in range(45)]
    docs += [doc(100 + i, 2 + i, "rejected", f"d{i}.example", reason="unknown-recipient") for i in range(9)]
    docs += [doc(200 + i, i * 0.7, "deferred", "slow.example", reason="greylisted") for i in range(40)]
    docs += [doc(300 + i, i * 0.9, "delivered", "gmail.example") for i in range(30)]
    docs += [doc(400 + i, 20 + i, "rejected", "blocked.example", reason="blocklisted") for i in range(30)]
    docs += [doc(500 + i, i * 0.2, "rejected", "ourcompany.example", reason="spam-content", direction="inbound") for i in range(60)]
    docs += [doc(600 + i, i * 0.2, "deferred", "ourcompany.example", reason="greylisted", direction="inbound") for i in range(25)]
    docs += [doc(700 + i, 61 + i, "rejected", "blocked.example", reason="blocklisted") for i in range(20)]
    return docs


def in_window(minutes: int, **fields: str) -> list[dict[str, Any]]:
    """The documents of ``traffic()`` in the last ``minutes`` before the period end (both
    ends included, like the monitors' range) with these smtp fields."""
    start = PERIOD_END - timedelta(minutes=minutes)
    return [d for d in traffic() if start <= datetime.fromisoformat(d["@timestamp"]) <= PERIOD_END
            and all(d["smtp"].get(k) == v for k, v in fields.items())]


@pytest.fixture
def settings(opensearch, index_prefix) -> Settings:
    base = Settings()
    settings = dataclasses.replace(
        base,
        opensearch=dataclasses.replace(base.opensearch, index_prefix=index_prefix),
        dashboards=DashboardsSettings(url=DASHBOARDS_URL),
        alerting=dataclasses.replace(base.alerting, channel_id="a-channel"),
    )
    for step in index_steps(settings, opensearch):
        step.run(dry_run=False)
    body = b"".join(i.action + i.source for i in (prepare(d, index_prefix) for d in traffic()))
    answer = opensearch.bulk(body=body, refresh=True)
    assert not answer["errors"]
    return settings


# --------------------------------------------------------------------------- the plugin's side
def search(client: Any, monitor: dict[str, Any]) -> dict[str, Any]:
    """The monitor's input, run as the plugin runs it."""
    search_input = monitor["inputs"][0]["search"]
    query = json.loads(json.dumps(search_input["query"]).replace("{{period_end}}", str(PERIOD_END_MS)))
    return dict(client.search(index=",".join(search_input["indices"]), body=query))


def new_alerts(results: dict[str, Any], trigger: dict[str, Any]) -> list[dict[str, Any]]:
    """ctx.newAlerts of a bucket-level trigger: one per composite bucket above the threshold, as
    Alerting 2.19 gives them to a message (common-utils' Alert.asTemplateArg: the bucket's keys
    joined with commas and the parent bucket path — no count; tests/integration/test_alerting_e2e.py
    runs the real plugin)."""
    threshold = int(re.search(r"> (\d+)", trigger["condition"]["script"]["source"]).group(1))  # type: ignore[union-attr]
    path = trigger["condition"]["parent_bucket_path"]
    buckets = results["aggregations"][path]["buckets"]
    return [{"bucket_keys": ",".join(b["key"].values()), "parent_bucket_path": path}
            for b in buckets if b["doc_count"] > threshold]


def render(client: Any, template: str, ctx: dict[str, Any]) -> str:
    """Mustache as the plugin compiles an action's message (a JSON string wrapper keeps the
    engine's answer JSON; its values are JSON-escaped either way)."""
    answer = client.transport.perform_request(
        "POST", "/_render/template", body={"source": json.dumps({"m": template}), "params": {"ctx": ctx}}
    )
    return str(answer["template_output"]["m"])


# --------------------------------------------------------------------------- Dashboards' side
LINK = re.compile(re.escape(DASHBOARDS_URL) + r"/app/dashboards#/view/(?P<id>[^?\s]+)\?_g=(?P<g>\S+)")


def follow(message: str) -> tuple[str, str, str]:
    """(dashboard id, from, to) of the message's link, as Dashboards reads its _g state."""
    (match,) = LINK.finditer(message)
    g = unquote(match.group("g"))
    time = re.fullmatch(r"\(time:\(from:'(?P<start>[^']+)',to:'(?P<end>[^']+)'\)\)", g)
    assert time, g
    return match.group("id"), datemath(time.group("start")), datemath(time.group("end"))


def datemath(text: str) -> str:
    """OSD's datemath for what the links use: an ISO anchor, optionally ``||-<n>m``."""
    anchor, _, math = text.partition("||")
    when = datetime.fromisoformat(anchor)
    if math:
        minutes = re.fullmatch(r"-(\d+)m", math)
        assert minutes, math
        when -= timedelta(minutes=int(minutes.group(1)))
    return when.isoformat()


def named_panel(message: str, board: dict[str, Any], objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The panel of ``board`` whose title the message quotes."""
    titles = re.findall(r'"([^"]+)"', message)
    panels = [objects[r["id"]] for r in board["references"] if r["name"].startswith("panel_")]
    (panel,) = [p for p in panels if p["attributes"]["title"] in titles]
    assert board["attributes"]["title"] in titles  # the dashboard is named too, for a text without link
    return panel


def rows_in_range(client: Any, index: str, panel: dict[str, Any], board: dict[str, Any], start: str, end: str) -> dict[Any, int]:
    pills = [dashboards.filter_query(f) for f in decoded(board, "kibanaSavedObjectMeta.searchSourceJSON")["filter"]]
    return dict(run_view(client, index, panel, extra=[*pills, time_range(start, end)]))


# --------------------------------------------------------------------------- the tests
def monitor_named(settings: Settings, suffix: str) -> dict[str, Any]:
    (body,) = [b for b in monitors.render_monitors(settings) if b["name"].endswith(": " + suffix)]
    return body


def trigger_and_message(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    ((_kind, trigger),) = body["triggers"][0].items()
    (action,) = trigger["actions"]
    return trigger, action["message_template"]["source"]


def setup_view(settings: Settings, message: str) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    objects = {o["id"]: o for o in dashboards.render_saved_objects(settings.opensearch.index_prefix)}
    board_id, start, end = follow(message)
    board = objects[board_id]
    assert board["type"] == "dashboard" and board["attributes"]["timeRestore"] is False
    return board, named_panel(message, board, objects), start, end


def test_rejections_alert_links_to_the_same_count(opensearch, settings):
    body = monitor_named(settings, "rejections")
    results = search(opensearch, body)
    _trigger, template = trigger_and_message(body)
    message = render(opensearch, template, {"results": [results], "periodEnd": CTX_PERIOD_END})
    counted = results["hits"]["total"]["value"]
    assert counted == len(in_window(15, direction="outbound", verdict="rejected")) > 0
    assert message.startswith(f"{counted} outbound deliveries were rejected")
    board, panel, start, end = setup_view(settings, message)
    assert (start, end) == ((PERIOD_END - timedelta(minutes=15)).isoformat(), PERIOD_END.isoformat())
    assert rows_in_range(opensearch, f"{settings.opensearch.index_prefix}-*", panel, board, start, end)[("rejected",)] == counted


def test_deferral_rate_alert_links_to_the_same_counts(opensearch, settings):
    body = monitor_named(settings, "deferral rate")
    results = search(opensearch, body)
    _trigger, template = trigger_and_message(body)
    message = render(opensearch, template, {"results": [results], "periodEnd": CTX_PERIOD_END})
    deferred, total = results["aggregations"]["deferred"]["doc_count"], results["hits"]["total"]["value"]
    assert message.startswith(f"{deferred} of {total} outbound attempts were deferred")
    board, panel, start, end = setup_view(settings, message)
    rows = rows_in_range(opensearch, f"{settings.opensearch.index_prefix}-*", panel, board, start, end)
    assert (rows[("deferred",)], sum(rows.values())) == (deferred, total)
    assert (deferred, total) == (len(in_window(30, direction="outbound", verdict="deferred")), len(in_window(30, direction="outbound")))


@pytest.mark.parametrize(("suffix", "expected"), [
    ("rejections per recipient domain", {"blocked.example": len(in_window(60, direction="outbound", verdict="rejected",
                                                                          recipient_domain="blocked.example"))}),
    ("rejections per reason", {"blocklisted": len(in_window(60, direction="outbound", verdict="rejected", reason="blocklisted"))}),
])
def test_bucket_alerts_link_to_the_same_counts_per_bucket(opensearch, settings, suffix, expected):
    body = monitor_named(settings, suffix)
    results = search(opensearch, body)
    trigger, template = trigger_and_message(body)
    alerts = new_alerts(results, trigger)
    message = render(opensearch, template, {"results": [results], "periodEnd": CTX_PERIOD_END, "newAlerts": alerts})
    named = re.findall(r" ([^\s;]+);", message.split("):", 1)[1].split(" Same numbers:")[0])
    assert named == list(expected)  # the buckets above the threshold, by their keys
    board, panel, start, end = setup_view(settings, message)
    rows = rows_in_range(opensearch, f"{settings.opensearch.index_prefix}-*", panel, board, start, end)
    # The per-domain table has one row per domain; the reasons chart a bar per reason with
    # its rejected part: the count per bucket the monitor compared with its threshold.
    shown = {key[0]: n for key, n in rows.items() if len(key) == 1 or key[1] == "rejected"}
    assert {k: shown[k] for k in named} == expected


def test_without_dashboards_url_the_text_names_the_view_and_its_range(opensearch, settings):
    plain = dataclasses.replace(settings, dashboards=DashboardsSettings(url=None))
    for body in monitors.render_monitors(plain):
        _trigger, template = trigger_and_message(body)
        assert "/app/dashboards" not in template
        assert '"SMTP outbound: is the world refusing our mail?' in template
        assert re.search(r"time range the \d+ minutes until \{\{ctx.periodEnd\}\}\.$", template), template
