"""The shipper on a real 3-node OpenSearch cluster (tests/cluster_harness.py): one replica and
one shard per daily index, a node killed with SIGKILL in the middle of ingest (a data node, then
the elected cluster manager) while the daemon follows a growing log and a backfill runs, and two
mail servers shipping overlapping session ids into the same indices.

Sized by ``SMTP_SHIPPER_CLUSTER_SCALE`` (default 1: the backfill has 12,000 sessions, about
18,000 documents, so that it is still running when the node dies on two cores)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from dashboard_queries import decoded

from shipper import dashboards
from shipper.config import load
from shipper.setup import index_steps

from .test_daemon_support import (
    REPO,
    BackgroundWriter,
    DaemonProcess,
    TranscriptWriter,
    assert_same_documents,
    expected_documents,
    indexed_documents,
    read_status,
    wait_until,
    xeams_input,
)

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

SCALE = float(os.environ.get("SMTP_SHIPPER_CLUSTER_SCALE", "1"))
BACKFILL_SESSIONS = int(12_000 * SCALE)


# --------------------------------------------------------------------------- helpers
def install(cluster, prefix: str) -> Any:
    """`setup`'s index steps against all three nodes (``replicas: auto``); the settings."""
    settings = load(None, overrides={"opensearch.hosts": cluster.urls, "opensearch.index_prefix": prefix,
                                     "opensearch.refresh_interval": "1s"}, env={}, log_warnings=False)
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=cluster.urls, timeout=60)
    try:
        for step in index_steps(settings, client):
            step.run(dry_run=False)
    finally:
        client.close()
    return settings


def write_config(path: Path, *, hosts: list[str], prefix: str, state_dir: Path, host_name: str,
                 inputs: list[dict[str, Any]]) -> Path:
    """A config naming every node, with short backoffs (a failover is seconds)."""
    cfg = {
        "opensearch": {"hosts": hosts, "index_prefix": prefix, "refresh_interval": "1s",
                       "bulk": {"initial_backoff": 0.2, "max_backoff": 2, "max_retries": 12}},
        "inputs": inputs,
        "state_dir": str(state_dir),
        "host_name": host_name,
        "pipeline": {"status_interval": 5},
        "log_level": "info",
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def shipper_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "shipper", *args]


def count(client, prefix: str, query: dict[str, Any] | None = None) -> int:
    client.indices.refresh(index=f"{prefix}-*", ignore_unavailable=True, allow_no_indices=True)
    body = {"query": query or {"match_all": {}}}
    return int(client.count(index=f"{prefix}-*", body=body, ignore_unavailable=True,
                            allow_no_indices=True)["count"])


def started_after(clock: dt.datetime, host_name: str) -> dict[str, Any]:
    """Documents of ``host_name`` whose session began after ``clock`` (the writer's time)."""
    stamp = clock.strftime("%Y-%m-%dT%H:%M:%S.") + f"{clock.microsecond // 1000:03d}Z"
    return {"bool": {"filter": [{"term": {"host.name": host_name}}, {"range": {"event.start": {"gt": stamp}}}]}}


def seconds_until_new_sessions_are_indexed(client, prefix: str, writer: TranscriptWriter, host_name: str,
                                           timeout: float) -> float:
    """From now until a session the writer begins after now is searchable: the ingest's delay
    as a user sees it (writing, ending the session, reading, shipping, refresh)."""
    with writer.lock:
        clock = writer.clock
    started = time.monotonic()
    wait_until(lambda: count(client, prefix, started_after(clock, host_name)) > 0, timeout,
               "a session written after this moment to be indexed", interval=0.2)
    return time.monotonic() - started


# --------------------------------------------------------------------------- 3. replicas and shards
def test_setup_on_three_nodes_gives_one_shard_and_one_replica(cluster, cluster_client, cluster_prefix):
    """``replicas: auto`` on a cluster of three data nodes is one replica; a daily index has one
    primary shard; its copies sit on two different nodes and the cluster stays green."""
    settings = install(cluster, cluster_prefix)
    assert "auto" == settings.opensearch.replicas
    index = f"{cluster_prefix}-2024.03.21"
    cluster_client.index(index=index, body={"@timestamp": "2024-03-21T11:00:00.000Z",
                                            "host": {"name": "mx"}}, refresh=True)
    found = cluster_client.indices.get_settings(index=index)[index]["settings"]["index"]
    assert ("1", "1") == (found["number_of_shards"], found["number_of_replicas"])
    assert "green" == cluster_client.cluster.health(index=index, wait_for_status="green")["status"]
    shards = cluster_client.cat.shards(index=index, format="json")
    assert [("p", "STARTED"), ("r", "STARTED")] == sorted((s["prirep"], s["state"]) for s in shards)
    assert 2 == len({s["node"] for s in shards})


# --------------------------------------------------------------------------- 4. a node killed mid-ingest
@pytest.mark.parametrize("victim", ["data-node", "cluster-manager"])
def test_a_node_killed_mid_ingest_loses_and_duplicates_nothing(tmp_path, cluster, cluster_client, cluster_prefix,
                                                               victim):
    """The daemon follows a growing log and a backfill runs, both given the three nodes; one node
    is killed with SIGKILL in the middle (a data node that is not the cluster manager, or the
    elected cluster manager) and started again later. Every document of both is in the index
    exactly once, equal to a `parse` of the same files; nothing was dead-lettered; ingest resumes
    within seconds (printed); the cluster is green again.

    The node dies once the day's index is green: its replica a full copy. A node lost while the
    replica of a just-created index is still being copied takes the only in-sync copy with it,
    and that index takes writes again only when the node is back (docs/opensearch.md)."""
    install(cluster, cluster_prefix)
    manager = cluster.cluster_manager()
    target = manager if victim == "cluster-manager" else (manager + 1) % cluster.nodes

    # A backfill big enough to be running when the node dies.
    old = tmp_path / "old" / "SMTPOutboundConversation.log"
    old.parent.mkdir()
    filler = TranscriptWriter(old, tmp_path / "old-journal.log", concurrency=6, first_id=500_000, seed=21)
    while filler.sessions_written < BACKFILL_SESSIONS:
        filler.step(2000)
    filler.finish_all()
    filler.close()

    log = tmp_path / "SMTPOutboundConversation.log"
    writer = TranscriptWriter(log, tmp_path / "journal.log", concurrency=6, first_id=100_000, seed=23)
    daemon_cfg = write_config(tmp_path / "daemon.yml", hosts=cluster.urls, prefix=cluster_prefix,
                              state_dir=tmp_path / "state", host_name="mx-daemon", inputs=[xeams_input(str(log))])
    backfill_cfg = write_config(tmp_path / "backfill.yml", hosts=cluster.urls, prefix=cluster_prefix,
                                state_dir=tmp_path / "backfill-state", host_name="mx-backfill", inputs=[])
    d = DaemonProcess(daemon_cfg, tmp_path / "daemon.log")
    bg = BackgroundWriter(writer, interval=0.01, lines=4)
    backfill_log = (tmp_path / "backfill.log").open("wb")
    backfill = None
    restart: threading.Thread | None = None
    killed = False
    try:
        bg.start()
        baseline = seconds_until_new_sessions_are_indexed(cluster_client, cluster_prefix, writer, "mx-daemon", 60)
        backfill = subprocess.Popen(
            shipper_command("backfill", "--config", str(backfill_cfg), "--timezone", "UTC", "--direction",
                            "outbound", "--no-progress", str(old)),
            stdout=backfill_log, stderr=subprocess.STDOUT, cwd=str(REPO))
        backfill_term = {"term": {"host.name": "mx-backfill"}}
        wait_until(lambda: count(cluster_client, cluster_prefix, backfill_term) > 0, 60, "the backfill's first documents")
        health = cluster_client.cluster.health(index=f"{cluster_prefix}-*", wait_for_status="green")
        assert "green" == health["status"], health

        cluster.kill(target)
        killed = True
        killed_at = time.monotonic()
        assert backfill.poll() is None, "the backfill ended before the node was killed: raise SMTP_SHIPPER_CLUSTER_SCALE"
        resumed = seconds_until_new_sessions_are_indexed(cluster_client, cluster_prefix, writer, "mx-daemon", 90)
        if victim == "cluster-manager":
            assert target != cluster.cluster_manager()  # another node was elected
        # The node stays down while both go on (at least 5 s), then comes back as ingest continues.
        time.sleep(max(0.0, 5 - (time.monotonic() - killed_at)))
        restart = threading.Thread(target=cluster.restart, args=(target,))
        restart.start()
        assert 0 == backfill.wait(600), (tmp_path / "backfill.log").read_text()[-3000:]
        restart.join(300)
        assert not restart.is_alive()
        time.sleep(2)  # ingest goes on with the node back
    finally:
        bg.stop_event.set()
        rc = d.stop(60)
        if backfill is not None and backfill.poll() is None:
            backfill.kill()  # its parser worker dies with it (test_backfill.py)
            backfill.wait()
        backfill_log.close()
        if restart is not None:
            restart.join(300)
        elif killed:  # the test failed with the node down: bring it back for the tests after it
            cluster.restart(target)
    bg.join()
    assert 0 == rc, d.log_text()[-3000:]
    # What was written while the daemon stopped is shipped by a second run to the end (--once).
    writer.finish_all()
    writer.close()
    assert 0 == DaemonProcess(daemon_cfg, tmp_path / "daemon.log", "--once").wait(180), d.log_text()[-3000:]

    retried = (read_status(tmp_path / "state") or {}).get("counters", {}).get("documents_retried", 0)
    print(f"\n{victim} killed: new sessions searchable again {resumed:.1f} s after the kill "
          f"(before it: {baseline:.1f} s); the daemon re-sent {retried} documents")
    health = cluster.wait_for("green", 180, nodes=cluster.nodes)
    assert "green" == health["status"]
    expected = expected_documents([log], "mx-daemon") | expected_documents([old], "mx-backfill")
    got, twice = indexed_documents(cluster_client, cluster_prefix)
    assert_same_documents(expected, got, twice)
    assert len(expected) > BACKFILL_SESSIONS
    assert 0 == (read_status(tmp_path / "state") or {}).get("counters", {}).get("dead_lettered", 0)
    assert not (tmp_path / "state" / "dead-letter.ndjson").exists()
    assert not (tmp_path / "backfill-state" / "dead-letter.ndjson").exists()
    assert resumed < 30, f"ingest resumed only {resumed:.1f} s after the node was killed"


# --------------------------------------------------------------------------- 5. two mail servers
def test_two_mail_servers_with_the_same_session_ids_share_the_indices(tmp_path, cluster, cluster_client,
                                                                      cluster_prefix):
    """Two daemons, `mx1` and `mx2`, ship logs with the same session ids (the same sessions, even)
    into the same daily indices: no document overwrites another (the id hashes host.name), each
    is found by `trace` under its own host, and the dashboards' Mail server control splits them."""
    install(cluster, cluster_prefix)
    daemons, expected = [], {}
    for host in ("mx1", "mx2"):
        log = tmp_path / host / "SMTPOutboundConversation.log"
        log.parent.mkdir()
        writer = TranscriptWriter(log, tmp_path / f"{host}-journal.log", concurrency=4, first_id=1000, seed=5)
        while writer.sessions_written < 300:
            writer.step(100)
        writer.finish_all()
        writer.close()
        cfg = write_config(tmp_path / f"{host}.yml", hosts=cluster.urls, prefix=cluster_prefix,
                           state_dir=tmp_path / host / "state", host_name=host, inputs=[xeams_input(str(log))])
        daemons.append((cfg, DaemonProcess(cfg, tmp_path / f"{host}.log", "--once")))
        expected[host] = expected_documents([log], host)
    for _cfg, d in daemons:
        assert 0 == d.wait(120), d.log_text()[-2000:]

    sessions = {host: {doc["smtp"]["session_id"] for doc in docs.values()} for host, docs in expected.items()}
    assert sessions["mx1"] == sessions["mx2"]  # the same session ids on both servers
    assert not set(expected["mx1"]) & set(expected["mx2"])  # and yet different document ids
    got, twice = indexed_documents(cluster_client, cluster_prefix)
    assert_same_documents(expected["mx1"] | expected["mx2"], got, twice)

    # trace: one recipient, one delivery on each server.
    recipient = next(iter(expected["mx1"].values()))["email"]["to"]["address"]
    traced = subprocess.run(shipper_command("trace", "--config", str(daemons[0][0]), "--json", recipient),
                            capture_output=True, text=True, cwd=str(REPO), timeout=60, check=False)
    assert 0 == traced.returncode, traced.stderr
    hosts = sorted(json.loads(line)["host"]["name"] for line in traced.stdout.splitlines())
    assert ["mx1", "mx2"] == hosts

    # The dashboards' Mail server control: its options are both servers; picking one keeps its own.
    (controls,) = [o for o in dashboards.render_saved_objects(cluster_prefix)
                   if o["type"] == "visualization" and o["attributes"]["title"].startswith("SMTP outbound controls")]
    (control,) = [c for c in decoded(controls, "visState")["params"]["controls"] if c["label"] == "Mail server"]
    options = cluster_client.search(index=f"{cluster_prefix}-*", body={
        "size": 0, "aggs": {"hosts": {"terms": {"field": control["fieldName"], "size": control["options"]["size"]}}}})
    assert ["mx1", "mx2"] == sorted(b["key"] for b in options["aggregations"]["hosts"]["buckets"])
    for host in ("mx1", "mx2"):
        pill = {"meta": {"key": control["fieldName"], "params": {"query": host}, "type": "phrase"},
                "query": {"match_phrase": {control["fieldName"]: host}}}
        assert len(expected[host]) == count(cluster_client, cluster_prefix, dashboards.filter_query(pill))
