"""shipper.systemd: sd_notify on a real datagram socket, watchdog timing, journald logging."""

from __future__ import annotations

import io
import logging
import os
import socket

import pytest

from shipper import systemd


@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_notify_sends_key_value_lines(notify_socket):
    """READY=1 with MAINPID and STATUS arrive as one datagram of KEY=VALUE lines."""
    path, sock = notify_socket
    n = systemd.Notifier({"NOTIFY_SOCKET": path})
    assert n.ready("shipping 1 file")
    msg = sock.recv(4096).decode()
    assert msg.splitlines() == ["READY=1", f"MAINPID={os.getpid()}", "STATUS=shipping 1 file"]
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    n.close()


def test_abstract_namespace_socket():
    """'@name' addresses the abstract namespace (leading NUL)."""
    name = f"smtp-shipper-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        n = systemd.Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.status("hello")
        assert sock.recv(100) == b"STATUS=hello"
        n.close()
    finally:
        sock.close()


def test_no_socket_means_disabled():
    """Without NOTIFY_SOCKET nothing is sent and nothing fails."""
    n = systemd.Notifier({})
    assert not n.enabled
    assert not n.ready()


def test_unreachable_socket_never_raises(tmp_path):
    """A vanished socket only loses the message."""
    n = systemd.Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not n.status("x")
    n.close()


def test_watchdog_pings_at_half_the_interval(notify_socket):
    """WATCHDOG=1 at most every WATCHDOG_USEC/2."""
    path, sock = notify_socket
    n = systemd.Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.watchdog_interval == 1.0
    assert n.watchdog(now=100.0)
    assert not n.watchdog(now=100.5)
    assert n.watchdog(now=101.0)
    assert sock.recv(100) == b"WATCHDOG=1"
    assert sock.recv(100) == b"WATCHDOG=1"
    n.close()


def test_watchdog_for_another_pid_is_ignored():
    """WATCHDOG_PID names another process: not ours to ping."""
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert systemd.watchdog_interval({}) is None


def _emit(env, level, msg):
    buf = io.StringIO()
    root = logging.getLogger()
    old_handlers, old_level = list(root.handlers), root.level
    try:
        systemd.setup_logging("debug", env=env, stream=buf)
        logging.getLogger("shipper.x").log(level, msg)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in old_handlers:
            root.addHandler(h)
        root.setLevel(old_level)
    return buf.getvalue()


def test_journal_logging_has_priority_prefix_and_no_timestamp():
    """Under systemd: '<N>' sd-daemon priority, no timestamp of our own."""
    out = _emit({"JOURNAL_STREAM": "8:123"}, logging.WARNING, "disk full")
    assert out == "<4>shipper.x: disk full\n"
    assert _emit({"INVOCATION_ID": "abc"}, logging.ERROR, "a\nb") == "<3>shipper.x: a\n<3>b\n"
    assert _emit({"INVOCATION_ID": "abc"}, logging.DEBUG, "d").startswith("<7>")


def test_terminal_logging_has_timestamp():
    """On a terminal: a timestamp and the level name."""
    out = _emit({}, logging.INFO, "hi")
    assert out.endswith("INFO shipper.x: hi\n")
    assert out[:4].isdigit()


def test_reloading_carries_monotonic_usec(notify_socket):
    """RELOADING=1 comes with MONOTONIC_USEC (CLOCK_MONOTONIC, µs), as systemd ≥ 253 expects."""
    import time

    path, sock = notify_socket
    n = systemd.Notifier({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    lines = sock.recv(200).decode().splitlines()
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) >= before
    n.close()
