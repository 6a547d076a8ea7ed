"""The runner's decisions before any container exists, with a stand-in Docker client:
policy first, the local image checked against the approved digest, pulling by digest
only, input checked; and the agent-facing executor and steward CLI."""

from __future__ import annotations

import json

import jwt
import pytest
from click.testing import CliRunner
from docker.errors import ImageNotFound

from gateway.agent.config import Policy
from gateway.agent.executors import RunOutcome
from gateway.agent.images.cli import images
from gateway.agent.images.contract import RunLimits, RunRequest, RunResult, RunStatus
from gateway.agent.images.executor import ImageExecutor, is_image_item, request_from_item
from gateway.agent.images.policy import ImagePolicy
from gateway.agent.images.runner import ImageRunner, RunnerConfig
from gateway.agent.images.tokens import ItemTokenSource, JwtTokenMinter, TokenUnavailable

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


class FakeImage:
    def __init__(self, id, repo_digests=()):
        self.id = id
        self.attrs = {"RepoDigests": list(repo_digests)}


class FakeImages:
    def __init__(self, local=None, pullable=None):
        self.local = local or {}
        self.pullable = pullable or {}
        self.calls = []

    def get(self, name):
        self.calls.append(("get", name))
        if name in self.local:
            return self.local[name]
        raise ImageNotFound(name)

    def pull(self, repository, tag=None):
        self.calls.append(("pull", f"{repository}@{tag}"))
        return self.pullable[f"{repository}@{tag}"]


class FakeDocker:
    """Only `images`: anything else (networks, containers) would raise AttributeError."""

    def __init__(self, images):
        self.images = images


class NoSandbox(Exception):
    pass


@pytest.fixture
def policy(tmp_path):
    p = ImagePolicy.in_state_dir(tmp_path)
    yield p
    p.close()


def runner(policy, images, tmp_path, pull=True, monkeypatch=None):
    config = RunnerConfig(
        gateway=("127.0.0.1", 1),
        work_dir=tmp_path / "runs",
        proxy_image="proxy",
        pull=pull,
        node="unit",
    )
    return ImageRunner(FakeDocker(images), policy, config)


@pytest.fixture
def stop_at_sandbox(monkeypatch):
    """Stop a run where the sandbox would be made; record that it got that far."""
    from gateway.agent.images import sandbox

    reached = []

    def write_input(self, files):
        reached.append(files)
        raise NoSandbox("stopped here by the test")

    monkeypatch.setattr(sandbox.Sandbox, "write_input", write_input)
    monkeypatch.setattr(sandbox.Sandbox, "remove", lambda self: None)
    return reached


def request(image, **kw):
    return RunRequest(run_id="1", image=image, token="t", **kw)


def test_not_approved_never_touches_docker(policy, tmp_path):
    images = FakeImages({A: FakeImage(A)})
    statuses = []
    result = runner(policy, images, tmp_path).run(
        request(f"ana@{A}"), lambda s, d: statuses.append(s)
    )
    assert result.status is RunStatus.NOT_APPROVED
    assert images.calls == []
    assert statuses == [RunStatus.PENDING, RunStatus.NOT_APPROVED]


def test_local_image_must_have_the_approved_digest(policy, tmp_path, stop_at_sandbox):
    policy.approve(A, by="s", reason="r")
    # Docker answers the name with an image of other content (e.g. a tampered store).
    images = FakeImages({f"ana@{A}": FakeImage(B)})
    result = runner(policy, images, tmp_path).run(request(f"ana@{A}"))
    assert result.status is RunStatus.NOT_APPROVED
    assert f"local image {B} does not have the approved digest {A}" in result.reason
    assert stop_at_sandbox == []


def test_image_found_by_repository_digest_or_image_id(policy, tmp_path, stop_at_sandbox):
    policy.approve(A, by="s", reason="r")
    by_repo = FakeImages({f"reg.org/ana@{A}": FakeImage(B, [f"reg.org/ana@{A}"])})
    result = runner(policy, by_repo, tmp_path).run(request(f"reg.org/ana:1@{A}"))
    assert result.image_id == B and result.reason == "Node error: NoSandbox"  # got that far
    by_id = FakeImages({A: FakeImage(A)})
    result = runner(policy, by_id, tmp_path).run(request("ana:1", digest=A))
    assert result.image_id == A
    assert by_id.calls == [("get", f"ana@{A}"), ("get", A)]  # never by tag


def test_missing_image_is_pulled_by_digest_only(policy, tmp_path, stop_at_sandbox):
    policy.approve(A, by="s", reason="r")
    images = FakeImages(pullable={f"reg.org/ana@{A}": FakeImage(B, [f"reg.org/ana@{A}"])})
    statuses = []
    result = runner(policy, images, tmp_path).run(
        request(f"reg.org/ana:1@{A}"), lambda s, d: statuses.append((s, d))
    )
    assert ("pull", f"reg.org/ana@{A}") in images.calls
    assert (RunStatus.PULLING, f"reg.org/ana@{A}") in statuses
    assert result.image_id == B

    no_pull = runner(policy, FakeImages(), tmp_path, pull=False).run(request(f"ana@{A}"))
    assert no_pull.status is RunStatus.FAILED
    assert "not on this node and this node does not pull images" in no_pull.reason


@pytest.mark.parametrize(
    ("files", "parameters", "message"),
    [
        ({"../x.py": "1"}, None, "not an allowed file name"),
        ({"parameters.json": "{}"}, None, "made from the run's parameters"),
        ({}, {"x": float("nan")}, "not JSON"),
        ({"big.py": "x" * (5 * 1024 * 1024)}, None, "over the node's limit"),
    ],
)
def test_input_is_checked(policy, tmp_path, stop_at_sandbox, files, parameters, message):
    policy.approve(A, by="s", reason="r")
    images = FakeImages({A: FakeImage(A)})
    result = runner(policy, images, tmp_path).run(request(A, files=files, parameters=parameters))
    assert result.status is RunStatus.FAILED and message in result.reason
    assert stop_at_sandbox == []


def test_runs_as_root_are_impossible():
    from gateway.agent.images.sandbox import container_user

    with pytest.raises(ValueError):
        container_user("0:0")
    with pytest.raises(ValueError):
        container_user("1000:0")
    assert container_user("1000:1001") == (1000, 1001)
    assert container_user(None)[0] != 0


# ---------------------------------------------------------------- the agent's executor


class StubRunner:
    def __init__(self, result):
        self.result = result
        self.config = RunnerConfig(
            ("127.0.0.1", 1), work_dir=None, proxy_image="p", limits=RunLimits(wall_time=30)
        )
        self.requests = []
        self.cancelled = []

    def run(self, req, on_status=None):
        self.requests.append(req)
        on_status(RunStatus.RUNNING, "")
        return self.result

    def cancel(self, run_id, reason):
        self.cancelled.append((run_id, reason))
        return True


class Fallback:
    def run(self, item):
        return RunOutcome("completed", "fallback")


ITEM = {
    "kind": "task_run",
    "run_id": 17,
    "collaboration_id": 3,
    "algorithm": "image",
    "user": "alice",
    "parameters": {
        "image": f"ana@{A}",
        "files": {"analysis.R": "1"},
        "input": {"script": "analysis.R"},
        "timeout": 20,
    },
}
POLICY = Policy(algorithms=frozenset({"image", "aggregate"}), projects=frozenset({"demo"}))
MINTER = JwtTokenMinter("s" * 32, issuer="iss", audience="aud")


def test_executor_runs_image_items_and_reports_the_detail():
    done = RunResult("17", RunStatus.TIMED_OUT, reason="Timed out", log="looping")
    stub = StubRunner(done)
    executor = ImageExecutor(stub, POLICY, MINTER, fallback=Fallback())
    outcome = executor.run(ITEM)
    assert outcome.status == "failed" and outcome.message == "Timed out"
    assert outcome.result["status"] == "timed out" and "log" not in outcome.result
    assert outcome.log == "looping"
    req = stub.requests[0]
    assert (req.run_id, req.image, req.collaboration, req.user, req.timeout) == (
        "17",
        f"ana@{A}",
        3,
        "alice",
        20,
    )
    assert req.files == {"analysis.R": "1"} and req.parameters == {"script": "analysis.R"}
    claims = jwt.decode(req.token, "s" * 32, algorithms=["HS256"], audience="aud")
    assert claims["sub"] == "alice" and claims["projects"] == ["demo"]
    assert claims["exp"] - claims["iat"] <= 30 + 60
    assert executor.status_of(17) is None  # only while running
    assert executor.cancel(17) and stub.cancelled == [("17", "cancelled by the coordinator")]
    assert executor.run({**ITEM, "algorithm": "aggregate"}).result == "fallback"
    assert is_image_item({"kind": "image"}) and not is_image_item({"algorithm": "echo"})


def test_executor_refuses_what_the_agent_policy_refuses():
    executor = ImageExecutor(StubRunner(None), Policy(), MINTER)  # algorithms: aggregate only
    outcome = executor.run(ITEM)
    assert outcome.status == "failed" and "algorithm 'image'" in outcome.message
    outcome = ImageExecutor(StubRunner(None), POLICY, MINTER).run({**ITEM, "user": None})
    assert outcome.status == "failed" and "names no researcher" in outcome.message


def test_executor_tokens_from_the_work_item():
    stub = StubRunner(RunResult("17", RunStatus.COMPLETED))
    executor = ImageExecutor(stub, POLICY, ItemTokenSource())
    assert executor.run({**ITEM, "gateway_token": "relay-token"}).status == "completed"
    assert stub.requests[0].token == "relay-token"
    outcome = executor.run(ITEM)
    assert outcome.status == "failed" and "carries no gateway token" in outcome.message


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "parameters.image"),
        ({"image": "x", "files": {"a": 1}}, "maps file names to text"),
        ({"image": "x", "timeout": "long"}, "number of seconds"),
        ({"image": "x", "digest": 5}, "is a string"),
    ],
)
def test_bad_image_parameters(params, message):
    from gateway.agent.executors import RunFailed

    with pytest.raises(RunFailed, match=message):
        request_from_item({**ITEM, "parameters": params}, "t", "default")


def test_token_minter_needs_a_secret_the_gateway_shares():
    from gateway.node.config import TokenConfig

    with pytest.raises(TokenUnavailable, match="public key"):
        JwtTokenMinter.for_gateway(TokenConfig("iss", "aud", ("RS256",), public_key_file="/k.pem"))
    with pytest.raises(TokenUnavailable, match="not set"):
        JwtTokenMinter.for_gateway(TokenConfig("iss", "aud", (), secret_env="NO_SUCH_ENV_XYZ"))


# ---------------------------------------------------------------- the steward's CLI


def test_steward_cli(tmp_path):
    cli = CliRunner()

    def run(*args, code=0):
        result = cli.invoke(images, ["--state-dir", str(tmp_path), *args])
        assert result.exit_code == code, result.output
        return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]

    [approved] = run("approve", A, "--reason", "reviewed", "--by", "dana", "--collaboration", "3")
    assert approved["state"] == "approved" and approved["collaborations"] == [3]
    assert run("check", f"ana@{A}", "--collaboration", "3")[0]["allowed"] is True
    assert run("check", f"ana@{A}", "--collaboration", "4", code=1)[0]["allowed"] is False
    run("restrict", A, "--any", "--reason", "all studies", "--by", "dana")
    assert run("check", f"ana@{A}", "--collaboration", "4")[0]["allowed"] is True
    run("revoke", A, "--reason", "bug", "--by", "dana")
    run("reject", B, "--reason", "no", "--by", "dana", "--image", "bad:1")
    assert [a["state"] for a in run("list")] == ["revoked", "rejected"]
    assert [e["action"] for e in run("history", A)] == ["approve", "restrict", "revoke"]
    assert (
        "nothing to revoke"
        in cli.invoke(
            images, ["--state-dir", str(tmp_path), "revoke", B, "--reason", "x", "--by", "d"]
        ).output
    )
    audit = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [r["action"] for r in audit] == [
        "image_approve",
        "image_restrict",
        "image_revoke",
        "image_reject",
    ]
    assert cli.invoke(images, ["list"]).exit_code == 2  # neither --config nor --state-dir


# ---------------------------------------------------------------- relay stations, rules


def test_relay_stations_come_from_the_item_or_the_run_fails_saying_why():
    from gateway.agent.executors import RunFailed

    relay = {**ITEM, "parameters": {**ITEM["parameters"], "relay": True}}
    stations = [
        {"name": "node-a", "node_id": 1, "token": "ta"},
        {"name": "b", "node_id": 2, "token": "tb"},
    ]
    req = request_from_item({**relay, "relay_stations": stations}, "t", "default")
    assert [(s.name, s.node_id, s.token) for s in req.stations] == [
        ("node-a", 1, "ta"),
        ("b", 2, "tb"),
    ]
    assert req.stations[1].to_env("http://relay:8081") == {
        "name": "b",
        "node_id": 2,
        "url": "http://relay:8081",
        "opal_url": "http://relay:8081/nodes/2",
        "token": "tb",
    }
    # Stations the task did not ask for are not used.
    assert request_from_item({**ITEM, "relay_stations": stations}, "t", "default").stations == ()
    with pytest.raises(RunFailed, match="asked for the relay, but the coordinator cannot sign"):
        request_from_item({**relay, "relay_error": "the coordinator cannot sign"}, "t", "d")
    with pytest.raises(RunFailed, match="carries no relay tokens"):
        request_from_item(relay, "t", "default")
    # The coordinator's disclosure rules: read, or the run fails (closed).
    req = request_from_item({**ITEM, "disclosure": {"min_count": 10}}, "t", "default")
    assert req.disclosure.min_count == 10
    with pytest.raises(RunFailed, match="disclosure rules are unusable"):
        request_from_item({**ITEM, "disclosure": {"min_count": "few"}}, "t", "default")


def test_a_node_without_a_relay_never_opens_a_wider_network(policy, tmp_path, stop_at_sandbox):
    from gateway.agent.images.contract import Station

    policy.approve(A, by="s", reason="r")
    images = FakeImages({A: FakeImage(A)})
    req = request(f"ana@{A}", stations=(Station("node-b", 2, "tb"),))
    result = runner(policy, images, tmp_path).run(req)
    assert result.status is RunStatus.FAILED
    assert "this node does not allow it" in result.reason and "images.relay" in result.reason
    assert images.calls == [] and stop_at_sandbox == []  # before Docker


def test_images_settings_relay_and_disclosure():
    from gateway.agent.config import AgentConfigError
    from gateway.agent.dispatch import image_settings

    s = image_settings(
        {"proxy_image": "p", "relay": "http://coord.internal:5001", "disclosure": {"max_rows": 20}}
    )
    assert s.relay == ("coord.internal", 5001) and s.disclosure.max_rows == 20
    assert image_settings({"proxy_image": "p"}).relay is None
    for bad in ("https://coord:5001", "coord:5001", "http://coord:5001/api"):
        with pytest.raises(AgentConfigError, match=r"images\.relay"):
            image_settings({"proxy_image": "p", "relay": bad})
    with pytest.raises(AgentConfigError, match=r"images\.disclosure"):
        image_settings({"proxy_image": "p", "disclosure": {"min_count": 0}})
