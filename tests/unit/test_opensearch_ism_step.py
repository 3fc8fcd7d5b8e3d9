"""The ISM policy step's decisions, offline: the plugin's REST answers are played by a fake
transport shaped like ISM 2.19's GET output (it adds last_updated_time, schema_version and each
action's default retry). The step runs in the real plugin in tests/integration/test_retention.py."""

from __future__ import annotations

import copy
from types import SimpleNamespace

from shipper.setup import ISM_MISSING, IsmPolicyStep, Outcome, rendered_bodies

ISM = frozenset({"opensearch-index-management"})


class FakeTransport:
    def __init__(self, installed: dict | None):
        self.installed = installed
        self.calls: list[tuple[str, str, dict]] = []

    def perform_request(self, method, path, params=None, body=None):
        self.calls.append((method, path, dict(params or {})))
        if method == "GET":
            return self.installed if self.installed else {"error": "not found", "status": 404}
        self.installed = {"_id": path.rsplit("/", 1)[1], "_seq_no": 5, "_primary_term": 1, "policy": body["policy"]}
        return {"_id": self.installed["_id"]}


def as_opensearch_returns(policy: dict) -> dict:
    policy = copy.deepcopy(policy)
    policy.update(policy_id="p-retention", last_updated_time=1, schema_version=21, error_notification=None)
    for state in policy["states"]:
        for action in state["actions"]:
            action["retry"] = {"count": 3, "backoff": "exponential", "delay": "1m"}
    for template in policy["ism_template"]:
        template["last_updated_time"] = 1
    return {"_id": "p-retention", "_seq_no": 3, "_primary_term": 1, "policy": policy}


def step(installed, plugins=ISM, days=90):
    body = rendered_bodies("p", replicas=0, refresh_interval="5s", retention_days=days)["ism_policy"]
    transport = FakeTransport(installed)
    return IsmPolicyStep(SimpleNamespace(transport=transport), "p-retention", body, plugins, days), transport, body


def test_without_the_plugin_the_step_is_skipped_with_the_reason():
    s, transport, _ = step(None, plugins=frozenset())
    report = s.run(dry_run=False)
    assert (Outcome.SKIPPED, ISM_MISSING) == (report.outcome, report.detail)
    assert [] == transport.calls


def test_created_then_unchanged():
    s, transport, body = step(None)
    assert Outcome.CREATED == s.run(dry_run=False).outcome
    assert "PUT" == transport.calls[-1][0]
    transport.installed = as_opensearch_returns(body["policy"])
    assert Outcome.UNCHANGED == s.run(dry_run=False).outcome
    assert "GET" == transport.calls[-1][0]


def test_changed_retention_updates_with_concurrency_control():
    _, _, old = step(None, days=90)
    s, transport, _ = step(as_opensearch_returns(old["policy"]), days=30)
    report = s.run(dry_run=False)
    assert Outcome.UPDATED == report.outcome
    method, _, params = transport.calls[-1]
    assert ("PUT", {"if_seq_no": 3, "if_primary_term": 1}) == (method, params)


def test_dry_run_does_not_write():
    s, transport, _ = step(None)
    report = s.run(dry_run=True)
    assert "p-retention" in report.line() and "would create" in report.line()
    assert ["GET"] == [c[0] for c in transport.calls]
