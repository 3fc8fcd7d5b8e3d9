"""`smtp-shipper setup` against a real node: idempotence, dry run, prefix isolation, the ISM
policy and alerting monitors in the real plugins, and clear failures (unreachable, TLS
verification, credentials)."""

from __future__ import annotations

import http.server
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch, tmp_path):
    for name in ("SMTP_SHIPPER_CONFIG", "SMTP_SHIPPER_OPENSEARCH_HOSTS", "SMTP_SHIPPER_INDEX_PREFIX",
                 "SMTP_SHIPPER_DASHBOARDS_URL", "SMTP_SHIPPER_OPENSEARCH_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SMTP_SHIPPER_STATE_DIR", str(tmp_path / "state"))


def setup(capsys, url: str, prefix: str, *extra: str) -> tuple[int, list[str], str]:
    code = main(["setup", "--opensearch", url, "--index-prefix", prefix, *extra])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def template_lines(lines: list[str], prefix: str) -> list[str]:
    return [line for line in lines if f" {prefix}" in line and "template" in line]


def plugin_lines(lines: list[str], prefix: str) -> list[str]:
    """The ISM policy's and the four alerting monitors' lines."""
    return [line for line in lines if f"{prefix}" in line and line.startswith(("ISM policy", "alerting monitor"))]


def step_lines(lines: list[str], prefix: str) -> list[str]:
    return template_lines(lines, prefix) + plugin_lines(lines, prefix)


_OUTCOME = re.compile(r": (created|updated|unchanged|skipped|would create|would update)(?: \(.*\))?$")


def outcome(line: str) -> str:
    """A step line's outcome: "<step>: <outcome>" or "<step>: <outcome> (<detail>)"."""
    found = _OUTCOME.search(line)
    assert found, f"not a step line: {line!r}"
    return found.group(1)


def test_setup_twice_is_idempotent(capsys, opensearch, opensearch_url, index_prefix):
    """First run creates the templates; the second reports every step unchanged (or skipped, for
    a plugin the node lacks) and changes nothing."""
    code, first, _ = setup(capsys, opensearch_url, index_prefix)
    assert 0 == code
    steps = template_lines(first, index_prefix)
    assert 3 == len(steps)
    assert all(outcome(line) == "created" for line in steps), steps
    before = opensearch.indices.get_index_template(name=index_prefix)

    code, second, _ = setup(capsys, opensearch_url, index_prefix)
    assert 0 == code
    steps = step_lines(second, index_prefix)
    assert all(outcome(line) in ("unchanged", "skipped") for line in steps), steps
    assert before == opensearch.indices.get_index_template(name=index_prefix)


def test_dry_run_changes_nothing(capsys, opensearch, opensearch_url, index_prefix):
    """--dry-run says what it would create and leaves the cluster alone."""
    code, lines, _ = setup(capsys, opensearch_url, index_prefix, "--dry-run")
    assert 0 == code
    assert 3 == sum(outcome(line) == "would create" for line in template_lines(lines, index_prefix))
    assert not opensearch.indices.exists_index_template(name=index_prefix)
    assert lines[-1].startswith("dry run, nothing changed")


def test_with_the_plugins_the_policy_and_monitors_are_installed_once(
    capsys, opensearch, opensearch_url, alerting_plugin, ism_plugin, index_prefix
):
    """In the real ISM and Alerting plugins: --dry-run would create the policy and the four
    monitors and creates nothing; the first run creates them, the second changes nothing."""
    _, lines, _ = setup(capsys, opensearch_url, index_prefix, "--dry-run")
    planned = plugin_lines(lines, index_prefix)
    assert 5 == len(planned) and all(outcome(line) == "would create" for line in planned), planned
    policy = opensearch.transport.perform_request("GET", f"/_plugins/_ism/policies/{index_prefix}-retention", params={"ignore": 404})
    assert policy.get("status") == 404, policy
    assert 0 == len(_monitors_named(opensearch, index_prefix))

    _, lines, _ = setup(capsys, opensearch_url, index_prefix)
    created = plugin_lines(lines, index_prefix)
    assert 5 == len(created) and all(outcome(line) == "created" for line in created), created
    assert 4 == len(_monitors_named(opensearch, index_prefix))

    _, lines, _ = setup(capsys, opensearch_url, index_prefix)
    again = plugin_lines(lines, index_prefix)
    assert 5 == len(again) and all(outcome(line) == "unchanged" for line in again), again
    assert 4 == len(_monitors_named(opensearch, index_prefix))


def _monitors_named(client, prefix: str) -> list[dict]:
    from shipper.monitors import find_monitors

    names = ("rejections", "rejections per recipient domain", "rejections per reason", "deferral rate")
    return [hit for name in names for hit in find_monitors(client, f"smtp-shipper [{prefix}]: {name}")]


def test_changed_setting_is_updated(capsys, opensearch, opensearch_url, index_prefix, tmp_path):
    """A different refresh_interval in the config updates only the settings component."""
    setup(capsys, opensearch_url, index_prefix)
    cfg = tmp_path / "config.yml"
    cfg.write_text("opensearch:\n  refresh_interval: 17s\n")
    code, lines, _ = setup(capsys, opensearch_url, index_prefix, "--config", str(cfg))
    assert 0 == code
    steps = step_lines(lines, index_prefix)
    assert [f"component template {index_prefix}-settings (0 replicas, refresh 17s): updated"] == [
        line for line in steps if outcome(line) not in ("unchanged", "skipped")
    ]


def test_two_prefixes_share_a_cluster(capsys, opensearch, opensearch_url, index_prefix, tmp_path):
    """Each prefix's indices get their own template; an overlapping prefix wins for its own
    indices; re-running one install leaves the other unchanged."""
    other = f"{index_prefix}-sub"  # overlapping on purpose: its indices match both patterns
    cfg = tmp_path / "config.yml"
    cfg.write_text("opensearch:\n  refresh_interval: 11s\n")
    try:
        assert 0 == setup(capsys, opensearch_url, index_prefix)[0]
        assert 0 == setup(capsys, opensearch_url, other, "--config", str(cfg))[0]
        opensearch.indices.create(index=f"{index_prefix}-2024.03.21")
        opensearch.indices.create(index=f"{other}-2024.03.21")
        mine = opensearch.indices.get_settings(index=f"{index_prefix}-2024.03.21")
        theirs = opensearch.indices.get_settings(index=f"{other}-2024.03.21")
        assert "5s" == next(iter(mine.values()))["settings"]["index"]["refresh_interval"]
        assert "11s" == next(iter(theirs.values()))["settings"]["index"]["refresh_interval"]
        for index in (f"{index_prefix}-2024.03.21", f"{other}-2024.03.21"):
            mapping = next(iter(opensearch.indices.get_mapping(index=index).values()))["mappings"]
            assert "strict" == mapping["dynamic"]
        _, lines, _ = setup(capsys, opensearch_url, index_prefix)
        assert all(outcome(line) in ("unchanged", "skipped") for line in step_lines(lines, index_prefix))
        assert opensearch.indices.exists_index_template(name=other)
    finally:
        opensearch.indices.delete(index=f"{other}-*", ignore=404)
        opensearch.indices.delete_index_template(name=other, ignore=404)
        for part in ("settings", "mappings"):
            opensearch.cluster.delete_component_template(name=f"{other}-{part}", ignore=404)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_cluster_is_exit_5_without_traceback(capsys):
    port = closed_port()
    code, _, err = setup(capsys, f"http://127.0.0.1:{port}", "whatever")
    assert 5 == code
    assert f"cannot reach OpenSearch at http://127.0.0.1:{port}: connection refused" in err
    assert "Traceback" not in err


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 401

    def do_GET(self) -> None:
        body = b'{"error":{"root_cause":[{"type":"security_exception","reason":"no permissions"}],"type":"security_exception","reason":"no permissions"},"status":%d}' % self.status
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[callable]:
    servers = []

    def start(status: int, context: ssl.SSLContext | None = None) -> str:
        handler = type("H", (_Answer,), {"status": status})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if context is not None:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        scheme = "https" if context else "http"
        return f"{scheme}://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "says"), [(401, "refused the credentials (401 Unauthorized)"), (403, "denied permission (403 Forbidden)")])
def test_credentials_refused_are_said_so(capsys, local_server, status, says):
    url = local_server(status)
    code, _, err = setup(capsys, url, "whatever")
    assert 5 == code
    assert says in err and url in err


def self_signed(tmp_path: Path) -> ssl.SSLContext:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_tls_verification_failure_is_reported_as_such(capsys, local_server, tmp_path):
    """A self-signed certificate on 127.0.0.1: a TLS message with the reason and the hint, exit 5."""
    url = local_server(200, self_signed(tmp_path))
    code, _, err = setup(capsys, url, "whatever")
    assert 5 == code
    assert f"TLS certificate of {url} could not be verified: self-signed certificate" in err
    assert "opensearch.ca_certs" in err
    assert "Traceback" not in err


def test_ca_certs_makes_the_certificate_trusted(capsys, local_server, tmp_path):
    """With opensearch.ca_certs naming the server's certificate the TLS handshake succeeds
    (the server then refuses the credentials: that message, not the TLS one)."""
    url = local_server(401, self_signed(tmp_path))
    cfg = tmp_path / "config.yml"
    cfg.write_text(f"opensearch:\n  ca_certs: {tmp_path / 'cert.pem'}\n")
    code, _, err = setup(capsys, url, "whatever", "--config", str(cfg))
    assert 5 == code
    assert "refused the credentials (401 Unauthorized)" in err
    assert "TLS" not in err
