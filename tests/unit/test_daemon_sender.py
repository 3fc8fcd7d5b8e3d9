"""A sender thread that dies must not leave the daemon reading on while nothing is shipped: the
daemon stops with the reason, non-zero (systemd restarts it). The fake here is the OpenSearch
client (the network); the daemon, its loop and the sender thread are real."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper import config
from shipper.daemon import Daemon
from shipper.errors import ShipperError

SESSION = """\
2024-03-21 11:39:49,056 - [   7054286] ************ New (secure) connection to: 142.251.171.26
2024-03-21 11:39:49,056 - [   7054286] S <-- EHLO mail.example.net
2024-03-21 11:39:49,170 - [   7054286] C --> 250 mx.example.com
2024-03-21 11:39:49,898 - [   7054286] ~~~~~~~~~~~~ Connection Terminated ( 842)
"""


class BrokenClient:
    """Answers info(); its bulk raises what no retry handles (a bug in the shipping code)."""

    def __init__(self) -> None:
        self.bulk_calls = 0

    def info(self) -> dict[str, Any]:
        return {"version": {"number": "2.19.4"}}

    def bulk(self, **kwargs: Any) -> dict[str, Any]:
        self.bulk_calls += 1
        raise RuntimeError("something nobody expected")


def test_a_dead_sender_stops_the_daemon_with_its_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "SMTPOutboundConversation.log"
    log.write_text(SESSION)
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(yaml.safe_dump({
        "opensearch": {"hosts": ["http://127.0.0.1:1"], "index_prefix": "t"},
        "inputs": [{"paths": [str(log)], "format": "xeams", "direction": "outbound", "timezone": "UTC"}],
        "state_dir": str(tmp_path / "state")}))
    client = BrokenClient()
    daemon = Daemon(config.load(cfg, env={}), client=client)  # type: ignore[arg-type]  # the fake network
    failure: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # noqa: BLE001 — examined below
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the daemon kept running with a dead sender"
    (exc,) = failure
    assert isinstance(exc, ShipperError) and exc.exit_status != 0
    assert "the sender thread died (RuntimeError: something nobody expected)" in exc.message
    assert client.bulk_calls == 1
    assert "something nobody expected" in caplog.text  # the traceback is logged
