"""Import the saved objects into a real OpenSearch Dashboards 2.19 (needs a Docker engine).

Dashboards is not published anywhere as a runnable server without Docker (not on npm, not on
Maven Central), so without an engine this test is skipped, saying so. With one, it starts an
OpenSearch and a Dashboards container on a private network (security plugins off), runs the
setup step against Dashboards' real saved-objects API, and asserts: every object imported
(``success``), a second run is "unchanged", and each object reads back without error.

Images: ``SMTP_SHIPPER_TEST_IMAGE`` (OpenSearch, default opensearchproject/opensearch:2.19.3)
and ``SMTP_SHIPPER_TEST_DASHBOARDS_IMAGE`` (default opensearchproject/opensearch-dashboards:2.19.3).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shipper import dashboards
from shipper.config import DashboardsSettings, Settings
from shipper.setup import Outcome

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import opensearch_harness

pytestmark = pytest.mark.integration

OPENSEARCH_IMAGE = os.environ.get("SMTP_SHIPPER_TEST_IMAGE", "opensearchproject/opensearch:2.19.3")
DASHBOARDS_IMAGE = os.environ.get("SMTP_SHIPPER_TEST_DASHBOARDS_IMAGE", "opensearchproject/opensearch-dashboards:2.19.3")
READY_TIMEOUT = 300


def _wait_ready(url: str) -> None:
    """Dashboards answers /api/status with overall state green once it can talk to OpenSearch."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{url}/api/status", timeout=5)
            if answer.ok and answer.json().get("status", {}).get("overall", {}).get("state") == "green":
                return
            last = f"HTTP {answer.status_code}"
        except requests.RequestException as exc:
            last = exc.__class__.__name__
        time.sleep(3)
    pytest.fail(f"OpenSearch Dashboards at {url} not ready after {READY_TIMEOUT}s ({last})", pytrace=False)


@pytest.fixture(scope="module")
def dashboards_url() -> Iterator[str]:
    if not opensearch_harness.docker_engine_available():
        pytest.skip("no Docker engine answers (DOCKER_HOST or /var/run/docker.sock): cannot run OpenSearch Dashboards")
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
            _wait_ready(url)
            yield url


def test_saved_objects_import_into_real_dashboards(dashboards_url):
    base = Settings()
    settings = dataclasses.replace(base, dashboards=DashboardsSettings(url=dashboards_url))
    (step,) = dashboards.setup_steps(settings, None)

    first = step.run(dry_run=False)  # raises RequestRefused listing each object that failed
    assert first.outcome is Outcome.CREATED

    again = step.run(dry_run=False)
    assert again.outcome is Outcome.UNCHANGED, again.detail

    client = dashboards.DashboardsClient(settings.dashboards)
    objects = dashboards.render_saved_objects(settings.opensearch.index_prefix)
    found = client.bulk_get(objects)
    assert [f.get("error") for f in found] == [None] * len(objects)
    assert {f["id"] for f in found} == {o["id"] for o in objects}
