"""The whole alerting story in the real Alerting plugin: `setup` installs the monitors with a
1-minute schedule, `backfill` ships a burst of rejected deliveries, and the plugin's own
scheduler runs the monitors and raises alerts that name what fired.

Slow (the monitors first run a minute after they are installed) but bounded: the alerts are
polled for, never slept for.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shipper import monitors
from shipper.cli import main

from .xeams_samples import session

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A 1-minute schedule: the first run is a minute after the monitor is saved; a run takes
# well under a second here. Generous for a busy 2-core machine, still bounded.
ALERT_DEADLINE_SECONDS = 240
BLOCKED = "550 5.7.1 Service unavailable; client host [203.0.113.7] blocked using zen.spamhaus.org"


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for name in ("SMTP_SHIPPER_CONFIG", "SMTP_SHIPPER_OPENSEARCH_HOSTS", "SMTP_SHIPPER_INDEX_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SMTP_SHIPPER_STATE_DIR", str(tmp_path / "state"))


def burst_log(now: datetime) -> str:
    """8 outbound rejections by one blocklisting domain and 3 deliveries, in the last 2 minutes
    (UTC, as the log is read with --timezone UTC)."""
    parts = []
    for i in range(8):
        at = (now - timedelta(seconds=10 + 10 * i)).strftime("%Y-%m-%d %H:%M:%S")
        parts.append(session(9200000 + i, at, f"user{i}@blocked.example", BLOCKED))
    for i in range(3):
        at = (now - timedelta(seconds=15 + 20 * i)).strftime("%Y-%m-%d %H:%M:%S")
        parts.append(session(9200100 + i, at, f"friend{i}@gmail.example", "250 2.1.5 OK"))
    return "".join(parts)


def alerts(client: Any, monitor_id: str) -> list[dict[str, Any]]:
    answer = client.transport.perform_request(
        "GET", f"{monitors.API}/alerts", params={"monitorId": monitor_id, "alertState": "ACTIVE", "size": 50}
    )
    return list(answer.get("alerts", []))


def test_a_burst_of_rejections_shipped_by_backfill_raises_alerts(
    capsys, opensearch, opensearch_url, alerting_plugin, index_prefix, tmp_path
):
    cfg = tmp_path / "config.yml"
    cfg.write_text(
        "alerting:\n"
        "  interval_minutes: 1\n"
        "  rejections: {threshold: 5, window_minutes: 15}\n"
        "  domain_rejections: {threshold: 5, window_minutes: 15}\n"
    )
    common = ["--config", str(cfg), "--opensearch", opensearch_url, "--index-prefix", index_prefix]
    assert main(["setup", *common]) == 0
    out = capsys.readouterr().out
    assert out.count(": created (id ") == 4, out  # the four monitors

    log = tmp_path / "SMTPOutboundConversation.log"
    log.write_text(burst_log(datetime.now(UTC)))
    assert main(["backfill", "--no-progress", "--timezone", "UTC", str(log), *common]) == 0
    capsys.readouterr()

    names = ("rejections", "rejections per recipient domain", "rejections per reason", "deferral rate")
    ids = {n: monitors.find_monitors(opensearch, f"smtp-shipper [{index_prefix}]: {n}")[0]["_id"] for n in names}
    expected = {"rejections", "rejections per recipient domain", "rejections per reason"}
    found: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + ALERT_DEADLINE_SECONDS
    while time.monotonic() < deadline and set(found) != expected:
        for name in expected - set(found):
            active = alerts(opensearch, ids[name])
            if active:
                found[name] = active
        time.sleep(2)
    assert set(found) == expected, f"no active alert within {ALERT_DEADLINE_SECONDS}s for {sorted(expected - set(found))}"

    (overall,) = found["rejections"]
    assert overall["monitor_name"] == f"smtp-shipper [{index_prefix}]: rejections"
    assert overall["trigger_name"] == "more than 5 outbound rejections in 15 minutes"
    assert (overall["state"], overall["severity"]) == ("ACTIVE", "2")
    (domain,) = found["rejections per recipient domain"]
    assert domain["agg_alert_content"]["bucket_keys"] == ["blocked.example"]
    assert domain["trigger_name"] == "more than 5 rejections for one recipient domain in 15 minutes"
    (reason,) = found["rejections per reason"]
    assert reason["agg_alert_content"]["bucket_keys"] == ["blocklisted"]
    # 11 outbound attempts are below the deferral-rate monitor's minimum of 20: never an alert.
    assert alerts(opensearch, ids["deferral rate"]) == []
