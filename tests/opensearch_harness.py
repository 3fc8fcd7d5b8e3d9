"""Find or start the real OpenSearch that integration tests talk to.

Order of preference (first that applies wins):

1. ``OPENSEARCH_URL`` is set: use it as is (never started or stopped here).
2. A Docker engine answers a ``/_ping``: a testcontainers ``OpenSearchContainer``
   (``SMTP_SHIPPER_TEST_IMAGE``, default ``opensearchproject/opensearch:2.19.3``, security off).
3. The local node of ``deploy/opensearch-local`` on ``SMTP_SHIPPER_TEST_PORT`` (default 9250,
   so a developer's node on 9200 is left alone). An OpenSearch already listening there is reused;
   otherwise it is started (data in ``deploy/opensearch-local/data/test-<port>``, wiped first).
   Parallel sessions share it; the last session that leaves stops a node a session started.

``SMTP_SHIPPER_TEST_OPENSEARCH=local|docker|auto`` (default ``auto``) forces step 2 or 3.
Any failure raises :class:`OpenSearchUnavailable` with a message that says what to do.

The local node has the Alerting and Index Management (ISM) plugins when their sources were found
at build time (:func:`plugin_sources`); :func:`missing_plugin` tells a test that needs one of
them whether to run, to skip (no sources: a user's clone) or to fail (sources, but no plugin).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_DIR = REPO_ROOT / "deploy" / "opensearch-local"
DEFAULT_TEST_PORT = 9250
DEFAULT_IMAGE = "opensearchproject/opensearch:2.19.3"
# Covers a cold build of the node (downloads, and Alerting and ISM compiled from source: 4-11
# minutes on 2 cores) plus start-up.
START_TIMEOUT_SECONDS = 2400

# What deploy/opensearch-local/start builds the plugins from, and where it looks (same order).
PLUGIN_SOURCES = ("opensearch-alerting-2.19.4.0-src.tar.gz", "opensearch-index-management-2.19.4.0-src.tar.gz")
HOW_TO_GET_PLUGIN_SOURCES = (
    "the local node builds the Alerting and Index Management plugins from their upstream sources, "
    f"{' and '.join(PLUGIN_SOURCES)}, which were not found (looked in $SMTP_SHIPPER_VENDOR_DIR, "
    "<repo>/../shared/vendor, /work/shared/vendor). Get them as deploy/opensearch-local/README.md says "
    "('Alerting and ISM from source': a git archive of the 2.19.4.0 tag of each upstream repository), put them "
    "in one folder, set SMTP_SHIPPER_VENDOR_DIR to it and stop the test node "
    "(OPENSEARCH_PORT=<port> deploy/opensearch-local/stop) so that the next run rebuilds it; or point "
    "OPENSEARCH_URL at an OpenSearch that has the plugins"
)

# name in _nodes/plugins and _cat/plugins, and the plugin class (what an embedded node lists)
PLUGINS = {
    "alerting": ("opensearch-alerting", "org.opensearch.alerting.AlertingPlugin"),
    "ism": ("opensearch-index-management", "org.opensearch.indexmanagement.IndexManagementPlugin"),
    "job-scheduler": ("opensearch-job-scheduler", "org.opensearch.jobscheduler.JobSchedulerPlugin"),
}


class OpenSearchUnavailable(RuntimeError):
    """No OpenSearch could be found or started; the message says why."""


@dataclass
class Backend:
    """An OpenSearch for the test session: its URL and how to give it back."""

    url: str
    description: str
    _stop: Callable[[], None] | None = field(default=None, repr=False)
    local: bool = False  # the node of deploy/opensearch-local (built here), not someone else's

    @property
    def started_here(self) -> bool:
        return self._stop is not None

    def stop(self) -> None:
        """Stop the node if this session started it; otherwise leave it alone."""
        if self._stop is not None:
            stop, self._stop = self._stop, None
            stop()


def acquire() -> Backend:
    """Return a reachable OpenSearch, starting one when needed (see module docstring)."""
    url = os.environ.get("OPENSEARCH_URL", "").strip()
    if url:
        info = opensearch_info(url)
        if info is None:
            raise OpenSearchUnavailable(f"OPENSEARCH_URL={url} does not answer as OpenSearch (GET / failed)")
        return Backend(url.rstrip("/"), f"OPENSEARCH_URL ({_version(info)})")

    mode = os.environ.get("SMTP_SHIPPER_TEST_OPENSEARCH", "auto").strip().lower()
    if mode not in ("auto", "docker", "local"):
        raise OpenSearchUnavailable(f"SMTP_SHIPPER_TEST_OPENSEARCH must be auto, docker or local, not {mode!r}")
    if mode == "docker" or (mode == "auto" and docker_engine_available()):
        return start_container()
    return start_local(int(os.environ.get("SMTP_SHIPPER_TEST_PORT", DEFAULT_TEST_PORT)))


# --------------------------------------------------------------------------------------------- probes


def opensearch_info(url: str, timeout: float = 5.0) -> dict | None:
    """``GET /`` of an OpenSearch, or None when nothing (or something else) answers there."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/", timeout=timeout) as response:
            info = json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("version", {}).get("distribution") != "opensearch":
        return None
    return info


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def docker_engine_available(timeout: float = 1.0) -> bool:
    """Cheap check: does a Docker engine answer ``GET /_ping`` on DOCKER_HOST or the default socket?"""
    docker_host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parsed = urlparse(docker_host)
    try:
        if parsed.scheme == "unix":
            if not os.path.exists(parsed.path):
                return False
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            target: object = parsed.path
        elif parsed.scheme in ("tcp", "http"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            target = (parsed.hostname or "127.0.0.1", parsed.port or 2375)
        else:
            return False
        with sock:
            sock.connect(target)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(256)
    except OSError:
        return False
    return reply.startswith(b"HTTP/") and b" 200 " in reply.split(b"\r\n", 1)[0]


def _version(info: dict) -> str:
    return f"OpenSearch {info.get('version', {}).get('number', '?')}"


# --------------------------------------------------------------------------------------------- backends


def start_container() -> Backend:
    """An OpenSearch container through testcontainers (needs a Docker engine)."""
    image = os.environ.get("SMTP_SHIPPER_TEST_IMAGE", DEFAULT_IMAGE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                from testcontainers.community.opensearch import OpenSearchContainer
            except ImportError:
                from testcontainers.opensearch import OpenSearchContainer
    except ImportError as exc:
        raise OpenSearchUnavailable(f"testcontainers[opensearch] is not installed: {exc}") from exc
    container = OpenSearchContainer(image, security_enabled=False)
    container.with_env("OPENSEARCH_JAVA_OPTS", "-Xms1g -Xmx1g")
    container.with_env("cluster.routing.allocation.disk.threshold_enabled", "false")
    try:
        container.start()
        config = container.get_config()
    except Exception as exc:  # docker errors come in many types; all mean "no container"
        with contextlib.suppress(Exception):  # best-effort cleanup of a half-started container
            container.stop()
        raise OpenSearchUnavailable(f"could not start container {image}: {exc}") from exc
    url = f"http://{config['host']}:{config['port']}"
    return Backend(url, f"testcontainers {image}", container.stop)


def start_local(port: int) -> Backend:
    """The embedded node of deploy/opensearch-local on 127.0.0.1:<port>.

    Several test sessions (developers working in parallel) share one node: each holds a lease
    (``run/test-<port>.leases/<pid>``) and the last one out stops the node, but only a node that a
    test session started (marker ``run/test-<port>.managed``). A node started by hand is reused
    and never stopped here.
    """
    url = f"http://127.0.0.1:{port}"
    run = LOCAL_DIR / "run"
    run.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OPENSEARCH_PORT=str(port), OPENSEARCH_DATA=str(LOCAL_DIR / "data" / f"test-{port}"))
    managed = run / f"test-{port}.managed"
    leases = run / f"test-{port}.leases"
    with _locked(run / f"test-{port}.lock"):
        if port_open("127.0.0.1", port):
            info = opensearch_info(url)
            if info is None:
                raise OpenSearchUnavailable(
                    f"port {port} is taken by something that is not OpenSearch; "
                    "free it or set SMTP_SHIPPER_TEST_PORT / OPENSEARCH_URL"
                )
            if not managed.exists():
                return Backend(url, f"already running at {url} ({_version(info)}), left running", local=True)
            description = f"local node {url} ({_version(info)}), shared with other test sessions"
        else:
            if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
                raise OpenSearchUnavailable(
                    "no Docker engine and no java: install Java 17 and Maven, or set OPENSEARCH_URL"
                )
            shutil.rmtree(env["OPENSEARCH_DATA"], ignore_errors=True)  # ours alone: fresh per start
            shutil.rmtree(leases, ignore_errors=True)
            result = _run_script("start", env)
            if result.returncode != 0:
                raise OpenSearchUnavailable(
                    f"deploy/opensearch-local/start failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
                )
            info = opensearch_info(url)
            if info is None:
                _run_script("stop", env)
                raise OpenSearchUnavailable(f"local node started but {url} does not answer as OpenSearch")
            managed.write_text(str(os.getpid()))
            description = f"local node {url} ({_version(info)}), started for this session"
        leases.mkdir(exist_ok=True)
        lease = leases / str(os.getpid())
        lease.touch()

    def release() -> None:
        with _locked(run / f"test-{port}.lock"):
            lease.unlink(missing_ok=True)
            for other in leases.iterdir() if leases.exists() else ():
                if not _pid_alive(int(other.name)):
                    other.unlink(missing_ok=True)
            if leases.exists() and any(leases.iterdir()):
                return  # another session still uses the node
            stopped = _run_script("stop", env)
            managed.unlink(missing_ok=True)
            if stopped.returncode != 0:
                raise OpenSearchUnavailable(f"deploy/opensearch-local/stop failed: {stopped.stdout}{stopped.stderr}")

    return Backend(url, description, release, local=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["bash", str(LOCAL_DIR / name)],
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OpenSearchUnavailable(f"deploy/opensearch-local/{name} took over {START_TIMEOUT_SECONDS}s") from exc


# --------------------------------------------------------------------------------------------- plugins


def plugin_sources() -> Path | None:
    """The folder deploy/opensearch-local/start builds Alerting and ISM from, or None: the first of
    ``$SMTP_SHIPPER_VENDOR_DIR`` (``none``: none), ``<repo>/../shared/vendor`` and
    ``/work/shared/vendor`` that holds both source tarballs."""
    named = os.environ.get("SMTP_SHIPPER_VENDOR_DIR", "").strip()
    if named == "none":
        return None
    candidates = [Path(named)] if named else [REPO_ROOT.parent / "shared" / "vendor", Path("/work/shared/vendor")]
    for folder in candidates:
        if all((folder / name).is_file() for name in PLUGIN_SOURCES):
            return folder
    return None


def loaded_plugins(client) -> set[str]:
    """Names and class names of the plugins (not modules) on every node."""
    found: set[str] = set()
    for node in client.nodes.info(metric="plugins")["nodes"].values():
        for plugin in node.get("plugins", []):
            found.update(str(plugin.get(key, "")) for key in ("name", "classname"))
    return found


def missing_plugin(client, backend: Backend, plugin: str) -> tuple[str, str] | None:
    """None when ``plugin`` (a key of PLUGINS) is loaded; else ``("skip", why)`` when that is
    expected - our local node built without the sources, or a node that is not ours - and
    ``("fail", why)`` when our local node should have it (the sources are there)."""
    name, classname = PLUGINS[plugin]
    loaded = loaded_plugins(client)
    if name in loaded or classname in loaded:
        return None
    if not backend.local:
        return "skip", f"the OpenSearch at {backend.url} ({backend.description}) has no {name} plugin"
    sources = plugin_sources()
    if sources is None and os.environ.get("SMTP_SHIPPER_VENDOR_DIR", "").strip() == "none":
        return "skip", f"no {name} plugin on the local test node: SMTP_SHIPPER_VENDOR_DIR=none built it without"
    if sources is None:
        return "skip", f"no {name} plugin on the local test node: {HOW_TO_GET_PLUGIN_SOURCES}"
    return "fail", (
        f"the local test node at {backend.url} has no {name} plugin although its sources are in {sources}: "
        "was the node started before they were there? Stop it (OPENSEARCH_PORT=<port> "
        "deploy/opensearch-local/stop) and run again; deploy/opensearch-local/start rebuilds it"
    )


# --------------------------------------------------------------------------------------------- cleanup


def cleanup_prefix(client, prefix: str) -> None:
    """Delete what a test made under ``prefix``: data streams, indices, index/component/legacy
    templates, ingest pipelines and, when their plugins are loaded, alerting monitors (named
    ``smtp-shipper [<prefix>...``) and ISM policies."""
    if not prefix or "*" in prefix or "," in prefix:
        raise ValueError(f"refusing to clean up with prefix {prefix!r}")
    from opensearchpy.exceptions import NotFoundError, RequestError, TransportError

    pattern = f"{prefix}*"
    client.indices.delete_data_stream(name=pattern, ignore=[404])
    client.indices.delete(index=pattern, expand_wildcards="all", ignore_unavailable=True, ignore=[404])
    found = client.indices.get_index_template(name=pattern, ignore=[404])
    for template in found.get("index_templates", []):
        client.indices.delete_index_template(name=template["name"], ignore=[404])
    found = client.cluster.get_component_template(name=pattern, ignore=[404])
    for template in found.get("component_templates", []):
        client.cluster.delete_component_template(name=template["name"], ignore=[404])
    for name in client.indices.get_template(name=pattern, ignore=[404]):
        if name.startswith(prefix):
            client.indices.delete_template(name=name, ignore=[404])
    for name in client.ingest.get_pipeline(id=pattern, ignore=[404]):
        if name.startswith(prefix):
            client.ingest.delete_pipeline(id=name, ignore=[404])
    _delete_monitors(client, f"smtp-shipper [{prefix}")
    try:
        policies = client.transport.perform_request("GET", "/_plugins/_ism/policies", params={"size": 1000})
    except (NotFoundError, RequestError):
        return  # no ISM plugin on this node
    except TransportError as exc:
        if exc.status_code in (400, 404, 405):
            return
        raise
    for policy in policies.get("policies", []):
        policy_id = policy.get("_id", "")
        if policy_id.startswith(prefix):
            client.transport.perform_request("DELETE", f"/_plugins/_ism/policies/{policy_id}")


def _delete_monitors(client, name_prefix: str) -> None:
    from opensearchpy.exceptions import NotFoundError, RequestError

    query = {"size": 1000, "query": {"prefix": {"monitor.name.keyword": name_prefix}}}
    try:
        found = client.transport.perform_request("POST", "/_plugins/_alerting/monitors/_search", body=query)
    except (NotFoundError, RequestError):
        return  # no Alerting plugin, or no monitor was ever made (no config index)
    for hit in found.get("hits", {}).get("hits", []):
        client.transport.perform_request("DELETE", f"/_plugins/_alerting/monitors/{hit['_id']}", params={"ignore": 404})
