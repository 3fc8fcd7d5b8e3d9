"""Import the saved objects into a real OpenSearch Dashboards 2.x.

Dashboards is not published anywhere as a runnable server without Docker (not on npm, not on
Maven Central). So these tests run against ``OPENSEARCH_DASHBOARDS_URL`` when it is set (any
reachable Dashboards 2.x; credentials in the URL, ``https://user:pw@host:5601``), else against
a Dashboards container when a Docker engine answers (an OpenSearch and a Dashboards on a
private network, security plugins off), else they are skipped, saying so.

On a Dashboards they assert: every object is imported (``success``) and reads back as we
wrote it, so a second setup is "unchanged" (Dashboards neither migrated nor rewrote them);
every reference resolves; the default index pattern is ours when there was none (and is
restored after); and an object of a newer Dashboards makes the import refuse the whole file,
nothing written, as docs/dashboards.md says. The objects use a prefix of their own and are
deleted afterwards, so a shared Dashboards keeps only what it had.

Images: ``SMTP_SHIPPER_TEST_IMAGE`` (OpenSearch, default opensearchproject/opensearch:2.19.3)
and ``SMTP_SHIPPER_TEST_DASHBOARDS_IMAGE`` (default opensearchproject/opensearch-dashboards:2.19.3).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest
import requests

from shipper import dashboards
from shipper.config import DashboardsSettings, Settings
from shipper.errors import RequestRefused
from shipper.setup import Outcome

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import opensearch_harness

pytestmark = pytest.mark.integration

OPENSEARCH_IMAGE = os.environ.get("SMTP_SHIPPER_TEST_IMAGE", "opensearchproject/opensearch:2.19.3")
DASHBOARDS_IMAGE = os.environ.get("SMTP_SHIPPER_TEST_DASHBOARDS_IMAGE", "opensearchproject/opensearch-dashboards:2.19.3")
READY_TIMEOUT = 300


def _wait_ready(url: str, auth: tuple[str, str] | None) -> None:
    """Dashboards answers /api/status with overall state green once it can talk to OpenSearch."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{url}/api/status", timeout=5, auth=auth)
            if answer.ok and answer.json().get("status", {}).get("overall", {}).get("state") == "green":
                return
            last = f"HTTP {answer.status_code}"
        except requests.RequestException as exc:
            last = exc.__class__.__name__
        time.sleep(3)
    pytest.fail(f"OpenSearch Dashboards at {url} not ready after {READY_TIMEOUT}s ({last})", pytrace=False)


def _section(url: str) -> DashboardsSettings:
    """dashboards settings for a URL that may carry user:password."""
    parts = urlsplit(url)
    bare = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))
    if not parts.username:
        return DashboardsSettings(url=bare, verify_certs=False)
    return DashboardsSettings(url=bare, username=unquote(parts.username), password_env="DASHBOARDS_TEST_PASSWORD",
                              environ={"DASHBOARDS_TEST_PASSWORD": unquote(parts.password or "")}, verify_certs=False)


@pytest.fixture(scope="module")
def dashboards_section() -> Iterator[DashboardsSettings]:
    given = os.environ.get("OPENSEARCH_DASHBOARDS_URL")
    if given:
        section = _section(given)
        _wait_ready(str(section.url), (section.username, section.password() or "") if section.username else None)
        yield section
        return
    if not opensearch_harness.docker_engine_available():
        pytest.skip("OPENSEARCH_DASHBOARDS_URL is not set and no Docker engine answers: no OpenSearch Dashboards to import into")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

    with Network() as network:
        node = (
            DockerContainer(OPENSEARCH_IMAGE)
            .with_network(network)
            .with_network_aliases("opensearch")
            .with_env("discovery.type", "single-node")
            .with_env("DISABLE_SECURITY_PLUGIN", "true")
            .with_env("DISABLE_INSTALL_DEMO_CONFIG", "true")
            .with_env("OPENSEARCH_JAVA_OPTS", "-Xms512m -Xmx512m")
        )
        board = (
            DockerContainer(DASHBOARDS_IMAGE)
            .with_network(network)
            .with_env("OPENSEARCH_HOSTS", '["http://opensearch:9200"]')
            .with_env("DISABLE_SECURITY_DASHBOARDS_PLUGIN", "true")
            .with_exposed_ports(5601)
        )
        with node, board:
            url = f"http://{board.get_container_host_ip()}:{board.get_exposed_port(5601)}"
            _wait_ready(url, None)
            yield DashboardsSettings(url=url)


@pytest.fixture
def settings(dashboards_section) -> Iterator[Settings]:
    """Settings with a prefix of this test's own; its objects are deleted and the default
    index pattern restored afterwards."""
    base = Settings()
    prefix = f"smtp-shipper-test-{secrets.token_hex(4)}"
    settings = dataclasses.replace(
        base, opensearch=dataclasses.replace(base.opensearch, index_prefix=prefix), dashboards=dashboards_section
    )
    client = dashboards.DashboardsClient(dashboards_section)
    default_before = client.user_settings().get("defaultIndex", {}).get("userValue")
    try:
        yield settings
    finally:
        for obj in dashboards.render_saved_objects(prefix):
            client.session.delete(f"{client.base}/api/saved_objects/{obj['type']}/{obj['id']}", timeout=30)
        if client.user_settings().get("defaultIndex", {}).get("userValue") != default_before:
            client.set_settings({"defaultIndex": default_before})


def test_saved_objects_import_into_real_dashboards(settings):
    client = dashboards.DashboardsClient(settings.dashboards)
    had_default = client.user_settings().get("defaultIndex", {}).get("userValue")
    steps = dashboards.setup_steps(settings, None)

    imported, default = [step.run(dry_run=False) for step in steps]  # raises listing each failed object
    assert imported.outcome is Outcome.CREATED
    again = [step.run(dry_run=False) for step in steps]
    assert [r.outcome for r in again] == [Outcome.UNCHANGED, Outcome.UNCHANGED], [r.line() for r in again]

    objects = dashboards.render_saved_objects(settings.opensearch.index_prefix)
    found = client.bulk_get(objects)
    assert [f.get("error") for f in found] == [None] * len(objects)
    assert [f["migrationVersion"] for f in found] == [o["migrationVersion"] for o in objects]
    referenced = [{"type": r["type"], "id": r["id"]} for f in found for r in f["references"]]
    assert [f.get("error") for f in client.bulk_get(referenced)] == [None] * len(referenced)

    pattern_id = dashboards.index_pattern_id(settings.opensearch.index_prefix)
    now_default = client.user_settings().get("defaultIndex", {}).get("userValue")
    if had_default is None:
        assert (default.outcome, now_default) == (Outcome.CREATED, pattern_id)
    else:
        assert now_default == had_default


def test_an_object_of_a_newer_dashboards_refuses_the_whole_file(settings):
    """What docs/dashboards.md says of a Kibana 7.11+ export, on a real Dashboards."""
    client = dashboards.DashboardsClient(settings.dashboards)
    objects = dashboards.render_saved_objects(settings.opensearch.index_prefix)
    newer: list[dict[str, Any]] = json.loads(json.dumps(objects))
    (vis,) = [o for o in newer if o["id"].endswith("-vis-reasons")]
    vis["migrationVersion"] = {"visualization": "7.12.0"}
    with pytest.raises(RequestRefused, match=r"refused the whole import, nothing was imported \(HTTP 422\)"):
        client.import_ndjson(dashboards.to_ndjson(newer))
    assert all("error" in f for f in client.bulk_get(objects))  # not one object written
