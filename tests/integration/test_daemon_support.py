"""Shared pieces of the daemon integration tests (no tests here): a transcript writer, a config
writer, the daemon as a real subprocess, a loopback HTTP proxy that can cut the connection or
answer 429, and readers of what reached the index."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from opensearchpy import helpers
from opensearchpy.exceptions import TransportError

REPO = Path(__file__).resolve().parents[2]
SCALE = float(os.environ.get("SMTP_SHIPPER_SOAK_SCALE", "1"))


# --------------------------------------------------------------------------- transcripts
class TranscriptWriter:
    """Writes Xeams-style sessions, ``concurrency`` interleaved, to a log file (which the test
    may rotate under it), and every line also to ``journal`` — the whole stream, for the
    expected documents."""

    def __init__(self, path: Path, journal: Path, *, concurrency: int = 4, first_id: int = 1000,
                 seed: int = 1, start: dt.datetime | None = None) -> None:
        self.path = path
        self.journal = journal.open("ab")
        self.concurrency = concurrency
        self.next_id = first_id
        self.rand = random.Random(seed)
        self.clock = start or dt.datetime(2024, 3, 21, 11, 0, 0)
        self.open: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()
        self.fh = path.open("ab")
        self.sessions_written = 0

    def _ts(self) -> str:
        self.clock += dt.timedelta(milliseconds=self.rand.randint(1, 40))
        return self.clock.strftime("%Y-%m-%d %H:%M:%S,") + f"{self.clock.microsecond // 1000:03d}"

    def session_lines(self, sid: str, *, terminate: bool = True, rcpts: int = 1) -> list[str]:
        n = int(sid)
        lines = [f"************ New (secure) connection to: 10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}",
                 "S <-- EHLO mail.example.net", "C --> 250-mx.example.com at your service",
                 "C --> 250 SMTPUTF8", f"S <-- MAIL FROM:<sender{n}@example.net>",
                 "C --> 250 2.1.0 OK"]
        for r in range(rcpts):
            lines += [f"S <-- RCPT TO:<user{n}.{r}@example.org>", "C --> 250 2.1.5 OK"]
        lines += ["S <-- DATA", "C --> 354  Go ahead", "C --> 250 2.0.0 OK queued",
                  "S <-- QUIT", "C --> 221 2.0.0 closing connection"]
        if terminate:
            lines.append("~~~~~~~~~~~~ Connection Terminated ( 842)")
        return lines

    def _format(self, sid: str, payload: str) -> bytes:
        return f"{self._ts()} - [{sid:>10}] {payload}\n".encode()

    def write_raw(self, data: bytes) -> None:
        self.fh.write(data)
        self.fh.flush()
        self.journal.write(data)
        self.journal.flush()

    def new_session(self, *, terminate: bool = True) -> str:
        sid = str(self.next_id)
        self.next_id += 1
        self.open.append((sid, self.session_lines(sid, terminate=terminate, rcpts=1 + int(sid) % 2)))
        return sid

    def step(self, n_lines: int = 1) -> None:
        """Write ``n_lines`` lines, interleaving open sessions; start new ones as needed."""
        with self.lock:
            out = []
            for _ in range(n_lines):
                while len(self.open) < self.concurrency:
                    self.new_session()
                i = self.rand.randrange(len(self.open))
                sid, lines = self.open[i]
                out.append(self._format(sid, lines.pop(0)))
                if not lines:
                    self.open.pop(i)
                    self.sessions_written += 1
            self.write_raw(b"".join(out))

    def finish_all(self) -> None:
        """Write the rest of every open session (they all end terminated)."""
        with self.lock:
            out = []
            for sid, lines in self.open:
                out.extend(self._format(sid, p) for p in lines)
                self.sessions_written += 1
            self.open.clear()
            self.write_raw(b"".join(out))

    def write_session(self, *, terminate: bool = True) -> str:
        """One whole session at once (not interleaved)."""
        with self.lock:
            sid = str(self.next_id)
            self.next_id += 1
            self.write_raw(b"".join(self._format(sid, p) for p in self.session_lines(sid, terminate=terminate)))
            return sid

    def reopen(self) -> None:
        """After the test renamed/deleted the file: write to a new file at the same path."""
        self.fh.close()
        self.fh = self.path.open("ab")

    def close(self) -> None:
        self.fh.close()
        self.journal.close()


class BackgroundWriter(threading.Thread):
    """Calls ``writer.step`` every ``interval`` seconds until stopped."""

    def __init__(self, writer: TranscriptWriter, interval: float = 0.01, lines: int = 3) -> None:
        super().__init__(daemon=True)
        self.writer, self.interval, self.lines = writer, interval, lines
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.writer.step(self.lines)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


# --------------------------------------------------------------------------- expected documents
def expected_ids(paths: Iterable[Path], host_name: str) -> list[str]:
    """Ids of the documents of a whole-file parse of ``paths`` (``shipper.pipeline.documents_of_files``,
    the same path as `smtp-shipper parse`), in order through one assembler."""
    from zoneinfo import ZoneInfo

    from shipper.batching import document_id
    from shipper.model import Direction
    from shipper.pipeline import ParseOptions, ParseStats, documents_of_files

    options = ParseOptions(direction=Direction.OUTBOUND, tz=ZoneInfo("UTC"), host_name=host_name)
    docs = documents_of_files([str(p) for p in paths], options, ParseStats())
    return [document_id(d) for d in docs]


def indexed_docs(client: Any, prefix: str) -> list[dict[str, Any]]:
    client.indices.refresh(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
    return list(helpers.scan(client, index=f"{prefix}-*", query={"query": {"match_all": {}}},
                             ignore_unavailable=True, allow_no_indices=True))


def indexed_ids(client: Any, prefix: str) -> list[str]:
    return [h["_id"] for h in indexed_docs(client, prefix)]


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = pred()
        except TransportError as exc:
            if exc.status_code != 503:
                raise
            value = None  # "all shards failed": an index the daemon just created is not started yet
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- the daemon
HOST_NAME = "test-host"


def write_config(path: Path, *, url: str, prefix: str, state_dir: Path, inputs: list[dict[str, Any]],
                 idle_timeout: float = 300, **pipeline: Any) -> Path:
    cfg = {
        "opensearch": {"hosts": [url], "index_prefix": prefix,
                       "bulk": {"initial_backoff": 0.2, "max_backoff": 2}},
        "inputs": inputs,
        "state_dir": str(state_dir),
        "host_name": HOST_NAME,
        "idle_timeout": idle_timeout,
        "pipeline": {"status_interval": 5, **pipeline},
        "log_level": "info",
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def xeams_input(*globs: str, **kw: Any) -> dict[str, Any]:
    return {"paths": list(globs), "format": "xeams", "direction": "outbound", "timezone": "UTC", **kw}


class DaemonProcess:
    """``python -m shipper run --config ...`` as a real child process; stderr to a file."""

    def __init__(self, config: Path, log_path: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "INVOCATION_ID")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shipper", "run", "--config", str(config), *extra],
            stdout=subprocess.DEVNULL, stderr=self._log, env=full_env, cwd=str(REPO))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kib(self) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0


def run_once(config: Path, log_path: Path, *extra: str, timeout: float = 120) -> int:
    d = DaemonProcess(config, log_path, "--once", *extra)
    return d.wait(timeout)


def read_status(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- HTTP proxy
class FaultProxy:
    """A loopback HTTP proxy in front of OpenSearch. ``down = True`` closes every connection
    without an answer (the cluster is unreachable); ``reject_fraction`` > 0 rewrites that share
    of the items of each ``_bulk`` response to 429 (the documents were in fact indexed; the
    shipper re-sends them, which is harmless with deterministic ids)."""

    def __init__(self, upstream: str, *, seed: int = 7) -> None:
        u = upstream.split("://", 1)[1].rstrip("/")
        host, port = u.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.down = False
        self.reject_fraction = 0.0
        self.rand = random.Random(seed)
        self.rejected_items = 0
        self.cut_requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.down:
                    proxy.cut_requests += 1
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
                if "_bulk" in self.path and proxy.reject_fraction and status == 200:
                    data = proxy._reject_some(data)
                self.send_response(status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _reject_some(self, data: bytes) -> bytes:
        try:
            doc = json.loads(data)
        except ValueError:
            return data
        items = doc.get("items") or []
        for item in items:
            (detail,) = item.values()
            if 200 <= int(detail.get("status", 0)) < 300 and self.rand.random() < self.reject_fraction:
                detail["status"] = 429
                detail["error"] = {"type": "es_rejected_execution_exception", "reason": "proxy says 429"}
                self.rejected_items += 1
                doc["errors"] = True
        return json.dumps(doc).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
