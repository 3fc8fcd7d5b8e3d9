"""`smtp-shipper backfill` against a real node: golden scenarios found again by trace with the
right verdicts, idempotence, gzip, and clear failures."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shipper.cli import main

from .test_daemon_support import wait_until
from .xeams_samples import mixed_log, session

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
# The conventions of tests/test_golden.py: a .log or a folder of .log files read in name order,
# optional <scenario>.args.json with direction and timezone (default America/New_York).
SCENARIOS = sorted([p.stem for p in GOLDEN.glob("*.log")] + [p.name for p in GOLDEN.iterdir() if p.is_dir()])


def golden_inputs(name: str) -> list[str]:
    if (GOLDEN / name).is_dir():
        return [f"{name}/{p.name}" for p in sorted((GOLDEN / name).glob("*.log"))]
    return [f"{name}.log"]


def golden_args(name: str) -> list[str]:
    args_file = GOLDEN / f"{name}.args.json"
    args = json.loads(args_file.read_text()) if args_file.exists() else {}
    return ["--format", args.get("format", "xeams"), "--direction", args.get("direction", "auto"),
            "--timezone", args.get("timezone", "America/New_York"), "--host-name", "golden-host",
            *(["--year", str(args["year"])] if "year" in args else [])]


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for name in ("SMTP_SHIPPER_CONFIG", "SMTP_SHIPPER_OPENSEARCH_HOSTS", "SMTP_SHIPPER_INDEX_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SMTP_SHIPPER_STATE_DIR", str(tmp_path / "state"))


def count(opensearch, prefix: str) -> int:
    opensearch.indices.refresh(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
    return opensearch.count(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)["count"]


@pytest.fixture
def cli(capsys, opensearch_url, index_prefix):
    common = ["--opensearch", opensearch_url, "--index-prefix", index_prefix]

    def run(command: str, *args: str) -> tuple[int, str, str]:
        code = main([command, *args, *common])
        out, err = capsys.readouterr()
        return code, out, err

    assert 0 == run("setup")[0]
    return run


def _get(doc: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_golden_scenario_backfilled_and_traced(cli, opensearch, index_prefix, scenario, monkeypatch):
    """Every expected document of the scenario is indexed, and trace (by recipient, else by
    sender) gives it back exactly as the parser's reviewed golden output has it."""
    monkeypatch.chdir(GOLDEN)  # log.file.path is relative in the golden files
    expected = [json.loads(line) for line in (GOLDEN / f"{scenario}.expected.jsonl").read_text().splitlines() if line.strip()]
    code, out, err = cli("backfill", "--no-progress", *golden_args(scenario), *golden_inputs(scenario))
    assert 0 == code, err
    assert f"indexed {len(expected)}, dead-lettered 0" in out
    assert len(expected) == count(opensearch, index_prefix)
    for want in expected:
        who = _get(want, "email.to.address") or _get(want, "email.from.address")
        if not who:
            continue  # a session without addresses: counted above, nothing to trace by
        code, out, _ = cli("trace", who, "--json", "--limit", "1000")
        assert 0 == code
        found = [json.loads(line) for line in out.splitlines()]
        same = [d for d in found if _get(d, "smtp.session_id") == _get(want, "smtp.session_id")
                and _get(d, "smtp.transaction") == _get(want, "smtp.transaction")
                and _get(d, "smtp.direction") == _get(want, "smtp.direction")
                and _get(d, "smtp.verdict") == _get(want, "smtp.verdict")
                and _get(d, "email.to.address") == _get(want, "email.to.address")]
        assert [want] == same, f"{who}: {len(same)} matching documents of {len(found)}"


def test_backfill_twice_same_count_and_gzip(cli, opensearch, index_prefix, tmp_path):
    """The same sessions, plain and gzipped, backfilled twice: still one document each."""
    plain = tmp_path / "SMTPOutboundConversation.log"
    plain.write_text(mixed_log())
    rotated = tmp_path / "SMTPOutboundConversation.log.1.gz"
    rotated.write_bytes(gzip.compress(mixed_log().encode()))
    code, out, err = cli("backfill", "--no-progress", str(plain))
    assert 0 == code, err
    assert "backfill: 5 documents from 5 sessions (delivered 3, rejected 1, deferred 1, failed 0)" in out
    assert_sender_line(out)
    first = count(opensearch, index_prefix)
    assert 5 == first
    code, out, err = cli("backfill", "--no-progress", "--no-worker", str(plain), str(rotated))  # the in-process path
    assert 0 == code, err
    assert "indexed 10" in out
    assert_sender_line(out)
    assert first == count(opensearch, index_prefix)


def assert_sender_line(out: str) -> None:
    """The summary says where the sender's time went: a share and seconds for bulk requests and
    for waiting on the parser, the shares adding up to the whole (a run that sent nothing fails)."""
    (line,) = [line for line in out.splitlines() if line.startswith("sender: ")]
    m = re.fullmatch(r"sender: (\d+)% of the time in bulk requests \((\d+\.\d) s\), "
                     r"(\d+)% of the time waiting for the parser \((\d+\.\d) s\)", line)
    assert m is not None, line
    assert 99 <= int(m[1]) + int(m[3]) <= 101  # two rounded shares of the same whole


def test_documents_are_searchable_at_once_unless_no_refresh(cli, opensearch, index_prefix, tmp_path):
    log = tmp_path / "SMTPOutboundConversation.log"
    log.write_text(mixed_log())
    cli("backfill", "--no-progress", str(log))
    assert 5 == opensearch.count(index=f"{index_prefix}-*")["count"]  # no refresh of our own here


def test_missing_template_says_run_setup(capsys, opensearch_url, opensearch, tmp_path):
    log = tmp_path / "x.log"
    log.write_text(mixed_log())
    prefix = "t-never-set-up"
    code = main(["backfill", "--no-progress", str(log), "--opensearch", opensearch_url, "--index-prefix", prefix])
    err = capsys.readouterr().err
    assert 3 == code
    assert "run `smtp-shipper setup` first" in err
    assert {} == opensearch.indices.get(index=f"{prefix}-*", allow_no_indices=True, ignore_unavailable=True)


def test_closed_port_is_exit_5_without_traceback(tmp_path):
    """Run as a user would (a real process, real logging set-up): one message, no traceback."""
    log = tmp_path / "x.log"
    log.write_text(mixed_log())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "shipper", "backfill", "--no-progress", str(log), "--opensearch", f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    code, err = done.returncode, done.stderr
    assert 5 == code
    assert f"cannot reach OpenSearch at http://127.0.0.1:{port}: connection refused" in err
    assert "Traceback" not in err


def test_missing_file_is_exit_4(capsys, tmp_path):
    code = main(["backfill", str(tmp_path / "nope.log"), "--opensearch", "http://127.0.0.1:9"])
    assert 4 == code
    assert "no such file" in capsys.readouterr().err


def test_stdin_is_read(cli, opensearch, index_prefix, monkeypatch):
    """`backfill -` reads standard input (in this process: a worker would get /dev/null)."""
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(mixed_log().encode())))
    code, out, err = cli("backfill", "--no-progress", "-")
    assert 0 == code, err
    assert "indexed 5," in out
    assert 5 == count(opensearch, index_prefix)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for a reaper that never comes counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_backfill_killed_outright_takes_its_parser_worker_with_it(cli, opensearch, opensearch_url, index_prefix,
                                                                    tmp_path):
    """SIGKILL of a backfill (or the OOM killer) leaves no parser worker behind: the worker would
    otherwise wait forever on the queue its dead parent no longer reads, holding the log open."""
    log = tmp_path / "SMTPOutboundConversation.log"
    with log.open("w") as fh:
        for n in range(40_000):
            fh.write(session(9_000_000 + n, f"2024-03-22 {n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}",
                             f"user{n}@example.org", "250 2.1.5 OK"))
    backfill = subprocess.Popen(
        [sys.executable, "-m", "shipper", "backfill", "--no-progress", "--timezone", "UTC", "--direction", "outbound",
         "--opensearch", opensearch_url, "--index-prefix", index_prefix, str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    worker = None
    try:
        children = Path(f"/proc/{backfill.pid}/task/{backfill.pid}/children")
        worker = int(wait_until(lambda: children.read_text().split()[:1], 60, "the parser worker")[0])
        wait_until(lambda: count(opensearch, index_prefix) > 0, 60, "the backfill's first documents")
        assert backfill.poll() is None, "the backfill ended before it was killed: make the log longer"
        assert _alive(worker)
        backfill.kill()
        backfill.wait()
        wait_until(lambda: not _alive(worker), 10, "the parser worker to end with its parent", interval=0.1)
    finally:
        if backfill.poll() is None:
            backfill.kill()
            backfill.wait()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)
