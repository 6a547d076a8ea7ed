"""The node's approval sync against a real coordinator over HTTP (no Docker needed):
decisions stewards queue at the coordinator are applied by the node only when its
configuration allows it, requests for approval and decisions are mirrored, and a node's
own store stays the authority."""

from __future__ import annotations

import pytest

from gateway.agent.config import AgentConfigError
from gateway.agent.dispatch import DispatchExecutor, image_settings
from gateway.agent.executors import Executor, RunOutcome
from gateway.agent.images.policy import ImagePolicy
from gateway.agent.images.sync import REFUSED_BY_CONFIG, ApprovalSync
from gateway.agent.link import CoordinatorLink
from gateway.node.audit import AuditLog
from tests.unit.coordinator.fixtures import TEST_RELAY_SECRET, served_world

A = "sha256:" + "a1" * 32
B = "sha256:" + "b2" * 32


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("image-sync")
    secret_key = "image-sync-" + "k" * 40
    with served_world(tmp, secret_key, threads=4, RELAY_SECRET=TEST_RELAY_SECRET) as w:
        org = w.org("Hospital A")
        w.study = w.collaboration("study", org)
        w.node_id = w.node("node-a", org, w.study)
        w.user("steward", org, ("data_steward", org, w.study))
        w.user("alice", org, ("researcher", None, w.study))
        w.url = w.server.url + "/api"
        yield w


@pytest.fixture
def node(coordinator, tmp_path):
    audit = AuditLog(tmp_path / "audit.log")
    policy = ImagePolicy.in_state_dir(tmp_path, audit)
    link = CoordinatorLink(coordinator.url, coordinator.keys["node-a"], 10)
    yield policy, link, audit
    link.close()
    policy.close()
    audit.close()


def _decide(w, digest: str, decision: str, reason: str) -> dict:
    r = w.client.post(
        f"/api/nodes/{w.node_id}/images/decisions",
        json={"digest": digest, "decision": decision, "reason": reason},
        headers=w.as_user("steward"),
    )
    assert r.status_code == 202, r.json
    return r.json


def _decisions(w) -> dict[int, dict]:
    r = w.client.get(f"/api/nodes/{w.node_id}/images/decisions", headers=w.as_user("steward"))
    return {d["id"]: d for d in r.json}


def _mirror(w) -> dict[str, dict]:
    r = w.client.get(f"/api/nodes/{w.node_id}/images", headers=w.as_user("alice"))
    return {m["digest"]: m for m in r.json}


def test_a_node_that_refuses_decisions_from_the_coordinator_keeps_its_store(coordinator, node):
    w = coordinator
    policy, link, audit = node
    queued = _decide(w, A, "approve", "looks fine")
    ApprovalSync(link, policy, accept_decisions=False, audit=audit).sync_once()
    assert _decisions(w)[queued["id"]]["status"] == "refused"
    assert _decisions(w)[queued["id"]]["message"] == REFUSED_BY_CONFIG
    assert policy.get(A) is None
    assert not policy.check(f"ana@{A}")
    assert [(e["outcome"], e["digest"]) for e in audit.read(action="image_decision")] == [
        ("refused", A)
    ]


def test_decisions_applied_requests_and_changes_mirrored(coordinator, node):
    w = coordinator
    policy, link, audit = node
    sync = ApprovalSync(link, policy, accept_decisions=True, audit=audit)
    # A run asked for B; the steward at the station approves A meanwhile.
    assert policy.request(B, by="alice", image=f"ana:2@{B}", collaboration=w.study)
    policy.approve(A, by="dana", reason="reviewed at the station")
    sync.sync_once()
    mirror = _mirror(w)
    assert (mirror[A]["state"], mirror[A]["decided_by"]) == ("approved", "dana")
    assert (mirror[B]["state"], mirror[B]["requested_by"]) == ("pending", "alice")

    rejected = _decide(w, B, "reject", "uploads rows")
    sync.sync_once()
    assert _decisions(w)[rejected["id"]]["status"] == "applied"
    decision = policy.check(f"ana:2@{B}")
    assert not decision and "rejected by steward (via coordinator)" in decision.reason
    assert "uploads rows" in decision.reason
    assert _mirror(w)[B]["state"] == "rejected"
    assert _mirror(w)[B]["requested_by"] == "alice"  # who asked stays visible

    # The node's store is the authority: a revocation at the station wins over the mirror.
    policy.revoke(A, by="dana", reason="withdrawn")
    assert not policy.check(f"ana@{A}")
    sync.sync_once()
    assert _mirror(w)[A]["state"] == "revoked"
    assert [e["user"] for e in audit.read(action="image_reject")] == ["steward (via coordinator)"]
    assert not policy.request(B, by="bob")  # decided: no new request


class _Gateway(Executor):
    def run(self, item):
        return RunOutcome("completed", {"ran": item["algorithm"]})


def test_dispatch_routes_by_kind_and_checks_its_settings():
    plain = DispatchExecutor(_Gateway())
    assert plain.run({"run_id": 1, "algorithm": "echo"}).result == {"ran": "echo"}
    refused = plain.run({"run_id": 2, "algorithm": "image", "parameters": {}})
    assert refused.status == "failed" and "does not run client images" in refused.message
    assert image_settings({"proxy_image": "py@" + A}).coordinator_decisions is True
    with pytest.raises(AgentConfigError, match="Unknown field"):
        image_settings({"proxy_image": "py", "coordinator_decision": False})
    with pytest.raises(AgentConfigError, match="memory_mb"):
        image_settings({"proxy_image": "py", "limits": {"memory_mb": 1}})
