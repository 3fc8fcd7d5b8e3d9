"""A real 3-node OpenSearch cluster for the tests marked ``cluster``: the nodes of
``deploy/opensearch-local/cluster`` on loopback, and the few things a test does to them (kill
one with SIGKILL, start it again, find the elected cluster manager, wait for green).

The cluster's node i listens on HTTP ``SMTP_SHIPPER_TEST_CLUSTER_PORT + i`` (default 9330: a
developer's cluster on 9320 is left alone) and transport that + 100. A cluster already running
there is reused and left running; otherwise the session starts one (data in
``deploy/opensearch-local/data/test-cluster-<port>``, wiped first) and stops it at the end.

With ``OPENSEARCH_URL`` set the tests run against a user's own OpenSearch, whose nodes they
cannot kill: the cluster tests are skipped then (:func:`skip_reason`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field

from opensearch_harness import LOCAL_DIR, START_TIMEOUT_SECONDS, OpenSearchUnavailable, opensearch_info

DEFAULT_CLUSTER_PORT = 9330
NODES = 3
SCRIPT = LOCAL_DIR / "cluster"


def skip_reason() -> str | None:
    """Why the cluster tests cannot run here, or None."""
    if os.environ.get("OPENSEARCH_URL", "").strip():
        return ("OPENSEARCH_URL is set: the tests run against that OpenSearch, whose nodes a test cannot kill "
                "and restart; the cluster tests (a local 3-node cluster, deploy/opensearch-local/cluster) "
                "run without OPENSEARCH_URL")
    return None


@dataclass
class LocalCluster:
    base_port: int
    nodes: int
    started_here: bool = False
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def urls(self) -> list[str]:
        return [self.url(i) for i in range(self.nodes)]

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.base_port + i}"

    def index_of(self, node_name: str) -> int:
        """Node index from a node name (``local-<port>``, as ./start names them)."""
        return int(node_name.removeprefix("local-")) - self.base_port

    def run(self, *args: str) -> str:
        result = subprocess.run(["bash", str(SCRIPT), *args], env=self.env, capture_output=True, text=True,
                                timeout=START_TIMEOUT_SECONDS, check=False)
        if result.returncode != 0:
            raise OpenSearchUnavailable(f"deploy/opensearch-local/cluster {' '.join(args)} failed "
                                        f"(exit {result.returncode}):\n{result.stdout}{result.stderr}")
        return result.stdout

    def kill(self, i: int) -> None:
        """SIGKILL node i: no shutdown, no goodbye to the others (a crash, a power cut)."""
        self.run("kill", str(i))

    def restart(self, i: int) -> None:
        """Start node i again (it rejoins with its data); returns once it sees the cluster."""
        self.run("restart", str(i))

    def get(self, path: str, *, avoid: int | None = None, timeout: float = 10) -> object:
        """GET ``path`` as JSON from the first node (other than ``avoid``) that answers."""
        last: Exception | None = None
        for i in range(self.nodes):
            if i == avoid:
                continue
            try:
                with urllib.request.urlopen(self.url(i) + path, timeout=timeout) as response:
                    return json.loads(response.read())
            except (OSError, ValueError) as exc:
                last = exc
        raise OpenSearchUnavailable(f"no node of the cluster answered GET {path}: {last}")

    def cluster_manager(self) -> int:
        """Index of the elected cluster manager (``GET _cat/cluster_manager``)."""
        (row,) = self.get("/_cat/cluster_manager?format=json")  # type: ignore[misc]
        return self.index_of(row["node"])

    def wait_for(self, status: str, timeout: float, *, nodes: int | None = None) -> dict:
        """Wait until the cluster's health is ``status`` (or better) with ``nodes`` nodes."""
        want = f"/_cluster/health?wait_for_status={status}&timeout={int(timeout)}s"
        if nodes is not None:
            want += f"&wait_for_nodes={nodes}"
        deadline = time.monotonic() + timeout
        health: object = None
        while time.monotonic() < deadline:
            try:
                health = self.get(want, timeout=timeout + 5)
            except OpenSearchUnavailable as exc:
                health = str(exc)
                time.sleep(0.5)
                continue
            if isinstance(health, dict) and not health.get("timed_out"):
                return health
        raise AssertionError(f"the cluster did not reach {status} within {timeout}s: {health}")

    def stop(self) -> None:
        if self.started_here:
            self.started_here = False
            self.run("stop")


def acquire() -> LocalCluster:
    """The test cluster: reused when it already runs on the test ports, else started."""
    base = int(os.environ.get("SMTP_SHIPPER_TEST_CLUSTER_PORT", DEFAULT_CLUSTER_PORT))
    data = LOCAL_DIR / "data" / f"test-cluster-{base}"
    env = dict(os.environ, OPENSEARCH_CLUSTER_PORT=str(base), OPENSEARCH_CLUSTER_DATA=str(data))
    cluster = LocalCluster(base, NODES, env=env)
    if all(opensearch_info(url) is not None for url in cluster.urls):
        cluster.wait_for("green", 120, nodes=NODES)
        return cluster
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise OpenSearchUnavailable("no java: install Java 17 and Maven for the local cluster, or set OPENSEARCH_URL")
    cluster.run("stop")  # a half-started cluster of an earlier session
    shutil.rmtree(data, ignore_errors=True)  # ours alone: fresh per start
    cluster.run("start", "--nodes", str(NODES))
    cluster.started_here = True
    return cluster
