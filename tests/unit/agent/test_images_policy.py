"""The node's image approval store: the steward's decisions, their history, and checks
that fail closed."""

from __future__ import annotations

import threading

import pytest

from gateway.agent.images.policy import ImagePolicy, PolicyError
from gateway.agent.images.references import InvalidReference, parse_reference

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


class Audit:
    def __init__(self):
        self.records = []

    def record(self, **fields):
        self.records.append(fields)


@pytest.fixture
def audit():
    return Audit()


@pytest.fixture
def policy(tmp_path, audit):
    p = ImagePolicy.in_state_dir(tmp_path / "state", audit)
    yield p
    p.close()


# ---------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("ref", "repo", "tag", "digest"),
    [
        ("analysis", "analysis", None, None),
        ("analysis:1.2", "analysis", "1.2", None),
        (f"analysis@{A}", "analysis", None, A),
        (f"reg.example.org:5000/team/ana:1.2@{A}", "reg.example.org:5000/team/ana", "1.2", A),
        (A, None, None, A),
    ],
)
def test_references_parse(ref, repo, tag, digest):
    parsed = parse_reference(ref)
    assert (parsed.repository, parsed.tag, parsed.digest) == (repo, tag, digest)
    assert str(parsed) == ref


@pytest.mark.parametrize(
    "ref",
    [
        "",
        " analysis",
        "Analysis",
        "analysis@sha256:abc",
        f"analysis@{A.upper()}",
        "analysis@md5:" + "a" * 32,
        "analysis:bad tag",
        "../etc/passwd",
        "sha256:" + "g" * 64,
    ],
)
def test_bad_references_are_refused(ref):
    with pytest.raises(InvalidReference):
        parse_reference(ref)


# ---------------------------------------------------------------- decisions


def test_unknown_digest_is_refused(policy):
    decision = policy.check(f"analysis@{A}")
    assert not decision and not decision.allowed
    assert "has not been approved" in decision.reason
    assert decision.digest == A


def test_tag_without_digest_is_refused_even_when_some_digest_is_approved(policy):
    policy.approve(A, by="steward", reason="ok", image="analysis:1.2")
    decision = policy.check("analysis:1.2")
    assert not decision
    assert "has no digest" in decision.reason and "analysis:1.2@sha256:" in decision.reason


def test_approved_digest_runs_by_reference_or_by_separate_digest(policy):
    policy.approve(A, by="steward", reason="reviewed the code")
    assert policy.check(f"analysis:1.2@{A}")
    assert policy.check("analysis:1.2", A)  # the tag is a label; the digest decides
    assert policy.check(A)
    decision = policy.check(f"analysis@{A}")
    assert decision.reason.startswith("Approved by steward at ")
    assert decision.reason.endswith(": reviewed the code")


def test_mismatched_digests_are_refused(policy):
    policy.approve(A, by="steward", reason="ok")
    policy.approve(B, by="steward", reason="ok")
    decision = policy.check(f"analysis@{A}", B)
    assert not decision and "must be the same" in decision.reason


def test_malformed_input_is_refused_not_raised(policy):
    assert "not an image" in policy.check("analysis", "sha256:1234").reason
    assert not policy.check("", None)
    assert not policy.check(None, None)  # type: ignore[arg-type]


def test_rejection_and_revocation_give_who_and_why(policy):
    policy.reject(A, by="steward", reason="sends row-level data")
    decision = policy.check(f"x@{A}")
    assert not decision and "rejected by steward" in decision.reason
    assert "sends row-level data" in decision.reason

    policy.approve(B, by="steward", reason="fine")
    assert policy.check(f"x@{B}")
    policy.revoke(B, by="dana", reason="superseded by 1.3")
    decision = policy.check(f"x@{B}")
    assert not decision and "revoked by dana" in decision.reason
    assert "superseded by 1.3" in decision.reason


def test_collaboration_rules(policy):
    policy.approve(A, by="steward", reason="for study 3 only", collaborations=[3])
    assert policy.check(f"x@{A}", collaboration=3)
    refused = policy.check(f"x@{A}", collaboration=4)
    assert not refused and "[3] only" in refused.reason
    assert not policy.check(f"x@{A}")  # a run naming no collaboration

    policy.restrict(A, [3, 4], by="steward", reason="study 4 joined")
    assert policy.check(f"x@{A}", collaboration=4)
    policy.restrict(A, None, by="steward", reason="any study")
    assert policy.check(f"x@{A}", collaboration=99)


def test_steward_input_is_checked(policy):
    with pytest.raises(PolicyError, match="reason"):
        policy.approve(A, by="steward", reason="  ")
    with pytest.raises(PolicyError, match="Who"):
        policy.approve(A, by="", reason="ok")
    with pytest.raises(PolicyError, match="not an image digest"):
        policy.approve("analysis:1.2", by="steward", reason="ok")
    with pytest.raises(PolicyError, match="nothing to revoke"):
        policy.revoke(A, by="steward", reason="no")
    with pytest.raises(PolicyError, match="integers"):
        policy.approve(A, by="steward", reason="ok", collaborations=["three"])  # type: ignore[list-item]
    with pytest.raises(PolicyError, match="not approved"):
        policy.restrict(B, [1], by="steward", reason="x")
    assert policy.approvals() == []  # nothing was written by the refused requests


def test_history_is_kept_and_audited(policy, audit):
    policy.approve(A, by="steward", reason="v1 reviewed", image="analysis:1", collaborations=[1])
    policy.revoke(A, by="steward", reason="bug found")
    policy.approve(A, by="dana", reason="bug was harmless")
    events = policy.history(A)
    assert [e.action for e in events] == ["approve", "revoke", "approve"]
    assert [e.actor for e in events] == ["steward", "steward", "dana"]
    assert events[0].collaborations == frozenset({1}) and events[0].image == "analysis:1"
    current = policy.get(A)
    assert current.state == "approved" and current.decided_by == "dana"
    assert current.image == "analysis:1"  # kept from the first decision
    assert current.collaborations is None
    assert [r["action"] for r in audit.records] == [
        "image_approve",
        "image_revoke",
        "image_approve",
    ]
    assert audit.records[1] == {
        "action": "image_revoke",
        "outcome": "ok",
        "user": "steward",
        "digest": A,
        "image": "analysis:1",
        "message": "bug found",
        "collaborations": None,
    }
    as_json = current.to_dict()
    assert as_json["decided_at"].endswith("Z") and as_json["state"] == "approved"


def test_another_process_sees_a_revocation_at_once(tmp_path):
    """The steward's CLI and the agent hold separate stores on one file."""
    agent = ImagePolicy.in_state_dir(tmp_path)
    steward = ImagePolicy.in_state_dir(tmp_path)
    steward.approve(A, by="steward", reason="ok")
    assert agent.check(f"x@{A}")
    steward.revoke(A, by="steward", reason="stop")
    assert not agent.check(f"x@{A}")
    agent.close()
    steward.close()


def test_a_broken_store_refuses(tmp_path):
    policy = ImagePolicy.in_state_dir(tmp_path)
    policy.approve(A, by="steward", reason="ok")
    policy.engine.dispose()
    for name in ("images.db", "images.db-wal", "images.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / "images.db").write_bytes(b"garbage" * 1000)
    decision = policy.check(f"x@{A}")
    assert not decision and "approval store failed" in decision.reason


def test_concurrent_decisions_are_all_recorded(policy):
    digests = [f"sha256:{i:064x}" for i in range(20)]
    threads = [
        threading.Thread(target=policy.approve, args=(d,), kwargs={"by": "s", "reason": "r"})
        for d in digests
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {a.digest for a in policy.approvals("approved")} == set(digests)
    assert len(policy.history()) == 20
