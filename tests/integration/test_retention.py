"""Retention in the real Index Management (ISM) plugin: `setup` installs the policy, a new daily
index is managed by it, and an index past its age is deleted by ISM itself.

The deletion test shortens only the policy's age (seconds instead of days) and lowers ISM's job
interval to its minimum (1 minute, no jitter); ISM then needs three runs of the index's job
(initialise, transition, delete). Slow, bounded and polled.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shipper.cli import main
from shipper.config import Settings
from shipper.setup import IsmPolicyStep, Outcome, installed_plugins, names, rendered_bodies

pytestmark = pytest.mark.integration

ISM = "/_plugins/_ism"
MANAGED_DEADLINE_SECONDS = 60
# Three job runs a minute apart, after the first one a minute after the index is created.
DELETED_DEADLINE_SECONDS = 420


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    for name in ("SMTP_SHIPPER_CONFIG", "SMTP_SHIPPER_OPENSEARCH_HOSTS", "SMTP_SHIPPER_INDEX_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SMTP_SHIPPER_STATE_DIR", str(tmp_path / "state"))


def explain(client: Any, index: str) -> dict[str, Any]:
    return dict(client.transport.perform_request("GET", f"{ISM}/explain/{index}")[index])


def wait_until_managed(client: Any, index: str) -> dict[str, Any]:
    """ISM attaches the policy whose ism_template matches a new index right after it is created;
    poll explain until it shows."""
    deadline = time.monotonic() + MANAGED_DEADLINE_SECONDS
    while True:
        state = explain(client, index)
        if state.get("policy_id") or time.monotonic() > deadline:
            return state
        time.sleep(1)


def setup_lines(capsys, url: str, prefix: str, *extra: str) -> list[str]:
    assert main(["setup", "--opensearch", url, "--index-prefix", prefix, *extra]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("ISM policy")]


def test_setup_installs_the_policy_and_a_new_daily_index_is_managed_by_it(
    capsys, opensearch, opensearch_url, ism_plugin, index_prefix, tmp_path
):
    policy_id = names(index_prefix)["ism_policy"]
    assert setup_lines(capsys, opensearch_url, index_prefix, "--dry-run") == [
        f"ISM policy {policy_id} (delete after 90 days): would create"
    ]
    assert setup_lines(capsys, opensearch_url, index_prefix) == [f"ISM policy {policy_id} (delete after 90 days): created"]
    assert setup_lines(capsys, opensearch_url, index_prefix) == [f"ISM policy {policy_id} (delete after 90 days): unchanged"]
    policy = opensearch.transport.perform_request("GET", f"{ISM}/policies/{policy_id}")["policy"]
    assert [s["name"] for s in policy["states"]] == ["hot", "delete"]
    assert policy["states"][0]["transitions"] == [{"state_name": "delete", "conditions": {"min_index_age": "90d"}}]

    index = f"{index_prefix}-2026.12.02"  # a daily index as backfill and the daemon name them
    opensearch.indices.create(index=index)
    state = wait_until_managed(opensearch, index)
    assert state.get("policy_id") == policy_id, state
    assert state.get("index.plugins.index_state_management.policy_id") == policy_id, state

    cfg = tmp_path / "config.yml"
    cfg.write_text("opensearch:\n  retention_days: 30\n")
    assert setup_lines(capsys, opensearch_url, index_prefix, "--config", str(cfg)) == [
        f"ISM policy {policy_id} (delete after 30 days): updated "
        "(indices already managed keep the version they started with)"
    ]
    policy = opensearch.transport.perform_request("GET", f"{ISM}/policies/{policy_id}")["policy"]
    assert policy["states"][0]["transitions"][0]["conditions"] == {"min_index_age": "30d"}


@pytest.fixture
def fast_ism(opensearch) -> Iterator[None]:
    """ISM's job interval at its minimum (1 minute) and no jitter, for indices created from now on."""
    fast = {"plugins.index_state_management.job_interval": 1, "plugins.index_state_management.jitter": 0.0}
    opensearch.cluster.put_settings(body={"persistent": fast})
    try:
        yield
    finally:
        opensearch.cluster.put_settings(body={"persistent": dict.fromkeys(fast)})


@pytest.mark.slow
def test_an_index_past_its_age_is_deleted_by_ism(opensearch, ism_plugin, fast_ism, index_prefix):
    base = Settings()
    settings = dataclasses.replace(base, opensearch=dataclasses.replace(base.opensearch, index_prefix=index_prefix))
    body = copy.deepcopy(rendered_bodies(index_prefix, replicas=0, refresh_interval="5s", retention_days=1)["ism_policy"])
    (transition,) = body["policy"]["states"][0]["transitions"]
    transition["conditions"]["min_index_age"] = "10s"  # the shipped policy, with a test age
    step = IsmPolicyStep(opensearch, names(index_prefix)["ism_policy"], body, installed_plugins(opensearch), 1)
    assert step.run(dry_run=False).outcome is Outcome.CREATED

    index = f"{settings.opensearch.index_prefix}-2026.01.01"
    opensearch.indices.create(index=index)
    assert wait_until_managed(opensearch, index).get("policy_id") == step.policy_id
    deadline = time.monotonic() + DELETED_DEADLINE_SECONDS
    seen: list[str] = []
    while opensearch.indices.exists(index=index):
        if time.monotonic() > deadline:
            pytest.fail(f"{index} still exists {DELETED_DEADLINE_SECONDS}s after it was created; ISM went: {seen}")
        state = explain(opensearch, index)
        step_seen = f"{(state.get('state') or {}).get('name')}/{(state.get('action') or {}).get('name')}"
        if not seen or seen[-1] != step_seen:
            seen.append(step_seen)
        time.sleep(2)
