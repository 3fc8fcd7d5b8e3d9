"""Shared fixtures: a real OpenSearch for integration tests (see tests/opensearch_harness.py).

OpenSearch is found or started lazily, the first time a test asks for ``opensearch_url`` /
``opensearch`` / ``index_prefix``: a unit-only run (``pytest -m "not integration"``) never starts
Java. When no OpenSearch can be had, every test that needs one errors with the reason: none is
skipped for a missing OpenSearch.

Tests are skipped, each saying why and how to run it, only where what they need cannot be had
on this machine: the Alerting or ISM plugin on a node built without their sources (the
``alerting_plugin`` / ``ism_plugin`` fixtures; on our own node built from the sources they run),
an OpenSearch Dashboards to import into (``OPENSEARCH_DASHBOARDS_URL`` or Docker),
``systemd-analyze`` for the unit-file check, and ``orjson`` for the serialisation comparison.
``pytest -ra`` (the default here) lists every skip with its reason at the end of a run.
"""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster_harness
import opensearch_harness

_BACKEND_KEY = pytest.StashKey[opensearch_harness.Backend]()


@pytest.fixture(scope="session")
def opensearch_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Base URL (``http://host:port``) of a real OpenSearch 2.19 for this test session."""
    try:
        backend = opensearch_harness.acquire()
    except opensearch_harness.OpenSearchUnavailable as exc:
        pytest.fail(f"no OpenSearch for integration tests: {exc}", pytrace=False)
    request.config.stash[_BACKEND_KEY] = backend
    try:
        yield backend.url
    finally:
        backend.stop()


@pytest.fixture(scope="session")
def opensearch(opensearch_url: str):
    """A ready ``opensearchpy.OpenSearch`` client for the session's node."""
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[opensearch_url], timeout=60, max_retries=2, retry_on_timeout=True)
    health = client.cluster.health(wait_for_status="yellow")
    if health.get("status") not in ("green", "yellow"):
        pytest.fail(f"OpenSearch at {opensearch_url} is not healthy: {health}", pytrace=False)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def index_prefix(request: pytest.FixtureRequest, opensearch) -> Iterator[str]:
    """A prefix unique to this test (``t-<test-name>-<random>``), valid for index and template
    names. After the test, indices, data streams, templates, pipelines and ISM policies whose
    names start with it are deleted."""
    prefix = _unique_prefix("t", request)
    yield prefix
    opensearch_harness.cleanup_prefix(opensearch, prefix)


def _unique_prefix(kind: str, request: pytest.FixtureRequest) -> str:
    """``<kind>-<test-name>-<random>``: lower case, valid for index and template names."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_")).strip("-")
    return f"{kind}-{name[:24].strip('-') or 'x'}-{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def opensearch_cluster() -> Iterator[cluster_harness.LocalCluster]:
    """A real 3-node OpenSearch cluster on loopback (tests/cluster_harness.py), green; started for
    the session unless it runs already, and then stopped at its end. Skipped with
    ``OPENSEARCH_URL`` (a user's own OpenSearch: its nodes are not ours to kill)."""
    reason = cluster_harness.skip_reason()
    if reason is not None:
        pytest.skip(reason)
    try:
        cluster = cluster_harness.acquire()
    except opensearch_harness.OpenSearchUnavailable as exc:
        pytest.fail(f"no OpenSearch cluster for the cluster tests: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(opensearch_cluster: cluster_harness.LocalCluster) -> cluster_harness.LocalCluster:
    """The session's cluster, whole and green before each test (a test may kill nodes)."""
    opensearch_cluster.wait_for("green", 180, nodes=opensearch_cluster.nodes)
    return opensearch_cluster


@pytest.fixture
def cluster_client(opensearch_cluster: cluster_harness.LocalCluster):
    """An opensearch-py client for the tests' own reads, over every node of the cluster."""
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=opensearch_cluster.urls, timeout=60, max_retries=3, retry_on_timeout=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def cluster_prefix(request: pytest.FixtureRequest, cluster, cluster_client) -> Iterator[str]:
    """As ``index_prefix``, on the cluster (its indices and templates are deleted after)."""
    prefix = _unique_prefix("c", request)
    yield prefix
    cluster.wait_for("yellow", 180)
    opensearch_harness.cleanup_prefix(cluster_client, prefix)


def _require_plugin(request: pytest.FixtureRequest, client, plugin: str) -> None:
    verdict = opensearch_harness.missing_plugin(client, request.config.stash[_BACKEND_KEY], plugin)
    if verdict is not None:
        action, why = verdict
        if action == "skip":
            pytest.skip(why)
        pytest.fail(why, pytrace=False)


@pytest.fixture(scope="session")
def alerting_plugin(request: pytest.FixtureRequest, opensearch) -> None:
    """The node has the Alerting plugin (else skip or fail, see the module docstring)."""
    _require_plugin(request, opensearch, "alerting")


@pytest.fixture(scope="session")
def ism_plugin(request: pytest.FixtureRequest, opensearch) -> None:
    """The node has the Index Management (ISM) plugin (else skip or fail)."""
    _require_plugin(request, opensearch, "ism")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    backend = config.stash.get(_BACKEND_KEY, None)
    if backend:
        terminalreporter.write_line(f"OpenSearch for integration tests: {backend.description}")
