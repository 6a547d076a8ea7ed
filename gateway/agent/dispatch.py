"""Which executor runs a work item: image runs (`algorithm: "image"`) go to the
`ImageExecutor` (Docker, the steward's approvals), everything else to the
`GatewayExecutor`. `build_executor` makes both from the agent's configuration, with the
thread that mirrors the node's approvals to the coordinator.

The agent configuration's `images` section (absent: this node runs no images):

    images:
      docker_host: unix:///run/docker.sock   # default: DOCKER_HOST, else Docker's default
      proxy_image: python:3.11-slim@sha256:...   # any image with python3; pin it
      work_dir: /var/lib/dsgateway/image-runs     # default: <gateway state_dir>/image-runs
      node_name: station-a        # labels what runs make (default: from the state dir)
      pull: true                  # pull an approved image that is missing, by digest
      tokens_from: node           # node: sign run tokens (HS256 gateway secret);
                                  # coordinator: take them from the work item
      relay: http://coordinator.internal:5001  # the coordinator's relay listener: runs
                                  # of tasks that ask for the relay reach it (only it);
                                  # unset: such runs fail
      disclosure: {min_count: 5, max_rows: 100, allow_png: true, identifiers: [...]}
      coordinator_decisions: true # apply decisions stewards make at the coordinator
      sync_interval: 10           # seconds between looks at the store and the queue
      limits: {memory_mb: 512, cpus: 1, pids: 256, wall_time: 600, output_bytes: ...}

The agent's `policy.algorithms` must include `image` for image runs to be accepted.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from gateway.agent.config import AgentConfig, AgentConfigError
from gateway.agent.executors import Executor, GatewayExecutor, RunOutcome
from gateway.agent.images.contract import RunLimits, RunStatus
from gateway.agent.images.disclosure import DisclosureRules

__all__ = ["DispatchExecutor", "ImageSettings", "build_executor", "image_settings"]

log = logging.getLogger(__name__)

# Final statuses of an image run the coordinator keeps as they are (else completed/failed).
_KEPT = {s.value for s in (RunStatus.NOT_APPROVED, RunStatus.KILLED, RunStatus.TIMED_OUT)}
_PHASES = {RunStatus.PULLING, RunStatus.STARTING, RunStatus.RUNNING}


class _LimitsSchema(Schema):
    class Meta:
        unknown = RAISE

    memory_mb = fields.Int(validate=validate.Range(min=16))
    cpus = fields.Float(validate=validate.Range(min=0.01, max=256))
    pids = fields.Int(validate=validate.Range(min=1))
    wall_time = fields.Float(validate=validate.Range(min=1))
    tmp_mb = fields.Int(validate=validate.Range(min=1))
    output_bytes = fields.Int(validate=validate.Range(min=1))
    output_files = fields.Int(validate=validate.Range(min=1))
    log_bytes = fields.Int(validate=validate.Range(min=256))
    input_bytes = fields.Int(validate=validate.Range(min=1))


class _ImagesSchema(Schema):
    class Meta:
        unknown = RAISE

    docker_host = fields.Str(load_default=None, allow_none=True)
    proxy_image = fields.Str(required=True, validate=validate.Length(min=1, max=512))
    work_dir = fields.Str(load_default=None, allow_none=True)
    node_name = fields.Str(
        load_default=None, allow_none=True, validate=validate.Regexp(r"^[a-zA-Z0-9_.-]{1,64}$")
    )
    pull = fields.Bool(load_default=True)
    tokens_from = fields.Str(load_default="node", validate=validate.OneOf(["node", "coordinator"]))
    coordinator_decisions = fields.Bool(load_default=True)
    relay = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=512))
    disclosure = fields.Dict(load_default=None, allow_none=True)
    sync_interval = fields.Float(load_default=10, validate=validate.Range(min=0.05, max=3600))
    limits = fields.Nested(_LimitsSchema, load_default=dict)


@dataclass(frozen=True)
class ImageSettings:
    proxy_image: str
    docker_host: str | None = None
    work_dir: Path | None = None
    node_name: str | None = None
    pull: bool = True
    tokens_from: str = "node"
    coordinator_decisions: bool = True
    relay: tuple[str, int] | None = None
    disclosure: DisclosureRules = field(default_factory=DisclosureRules)
    sync_interval: float = 10
    limits: RunLimits = field(default_factory=RunLimits)


def relay_address(url: str) -> tuple[str, int]:
    """(host, port) of `images.relay`: a plain http:// address. The forwarder carries
    bytes and does not speak TLS, so an https:// relay is refused rather than reached
    some other way."""
    parsed = urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname or parsed.path not in ("", "/"):
        raise AgentConfigError(
            f"Invalid `images.relay` {url!r}: give the relay listener as http://host:port "
            "(the run's forwarder does not speak TLS: use the relay's address on a network "
            "you trust)."
        )
    return parsed.hostname, parsed.port or 80


def image_settings(raw: Any, base_dir: Path | None = None) -> ImageSettings:
    try:
        data = _ImagesSchema().load(raw if isinstance(raw, dict) else {"": raw})
        limits = RunLimits(**data.pop("limits"))
    except ValidationError as err:
        raise AgentConfigError(f"Invalid `images` configuration: {err.messages}") from None
    except ValueError as err:
        raise AgentConfigError(f"Invalid `images.limits`: {err}") from None
    try:
        data["disclosure"] = DisclosureRules.from_dict(data["disclosure"])
    except (ValueError, TypeError) as err:
        raise AgentConfigError(f"Invalid `images.disclosure`: {err}") from None
    if data["relay"]:
        data["relay"] = relay_address(data["relay"])
    if data["work_dir"]:
        path = Path(os.path.expanduser(data["work_dir"]))
        data["work_dir"] = path if path.is_absolute() else (base_dir or Path.cwd()) / path
    known = {f.name for f in dc_fields(ImageSettings)}
    return ImageSettings(limits=limits, **{k: v for k, v in data.items() if k in known})


class DispatchExecutor(Executor):
    """Routes each work item to the executor of its kind."""

    def __init__(self, gateway: Executor, images=None, sync=None, closers=()):
        self.gateway = gateway
        self.images = images  # an ImageExecutor, or None: this node runs no images
        self.sync = sync  # the ApprovalSync thread, if any
        self._closers = list(closers)

    def run(self, item: dict) -> RunOutcome:
        from gateway.agent.images.executor import is_image_item

        if not is_image_item(item):
            return self.gateway.run(item)
        if self.images is None:
            return RunOutcome(
                "failed",
                {"status": "failed"},
                message="This node does not run client images (its agent configuration "
                "has no `images` section).",
            )
        outcome = self.images.run(item)
        detail = outcome.result.get("status") if isinstance(outcome.result, dict) else None
        if detail in _KEPT:
            outcome.status = detail
        if detail == RunStatus.NOT_APPROVED.value and self.sync is not None:
            self.sync.nudge()  # a request for approval may have been recorded
        return outcome

    def cancel(self, run_id) -> bool:
        return self.images.cancel(run_id) if self.images is not None else False

    def close(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except Exception:  # closing is best effort
                log.exception("closing %r failed", close)


def _phase_reporter(link):
    """Tell the coordinator where an image run is; never fails the run."""
    from gateway.agent.link import LinkError

    def report(run_id: str, status: RunStatus, detail: str) -> None:
        if status not in _PHASES:
            return
        try:
            link._call(
                "POST",
                f"/node/runs/{run_id}/phase",
                json={
                    "phase": "pulling" if status is RunStatus.PULLING else status.value,
                    "detail": detail[:2000],
                },
            )
        except LinkError as err:
            log.info("run %s: phase %s not reported (%s)", run_id, status.value, err)

    return report


def build_executor(
    cfg: AgentConfig,
    link,
    sessions=None,
    node_cfg=None,
    gateway_address: tuple[str, int] | None = None,
    audit=None,
) -> DispatchExecutor:
    """The agent's executor. With an `images` section: the Docker runner on the node's
    gateway (`gateway_address`, as the agent reaches it), the steward's store in the
    gateway's state dir, and the approval sync thread (started here; `close()` ends
    everything)."""
    gateway = GatewayExecutor(sessions, cfg.policy)
    raw = getattr(cfg, "images", None)
    if raw is None:
        return DispatchExecutor(gateway)
    settings = image_settings(raw)
    if node_cfg is None or gateway_address is None:
        raise AgentConfigError(
            "`images` needs the node's gateway (`gateway: node.yaml`): image runs reach "
            "the data only through it."
        )
    import docker
    from gateway.agent.images.executor import ImageExecutor
    from gateway.agent.images.policy import ImagePolicy
    from gateway.agent.images.runner import ImageRunner, RunnerConfig
    from gateway.agent.images.sync import ApprovalSync
    from gateway.agent.images.tokens import ItemTokenSource, JwtTokenMinter

    state_dir = Path(node_cfg.state_dir)
    if audit is None:
        from gateway.node.audit import AuditLog

        audit = AuditLog(node_cfg.audit_path)
    closers = []
    client = (
        docker.DockerClient(base_url=settings.docker_host, timeout=120)
        if settings.docker_host
        else docker.from_env(timeout=120)
    )
    closers.append(client.close)
    policy = ImagePolicy.in_state_dir(state_dir, audit)
    closers.append(policy.close)
    node_name = settings.node_name or (
        "node-" + hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]
    )
    runner = ImageRunner(
        client,
        policy,
        RunnerConfig(
            gateway=gateway_address,
            work_dir=settings.work_dir or state_dir / "image-runs",
            proxy_image=settings.proxy_image,
            limits=settings.limits,
            node=node_name,
            pull=settings.pull,
            relay=settings.relay,
            disclosure=settings.disclosure,
        ),
        audit,
    )
    removed = runner.remove_leftovers()
    if removed:
        log.warning("removed %d things earlier image runs left behind", removed)
    tokens = (
        JwtTokenMinter.for_gateway(node_cfg.tokens)
        if settings.tokens_from == "node"
        else ItemTokenSource()
    )
    sync = ApprovalSync(
        link,
        policy,
        accept_decisions=settings.coordinator_decisions,
        interval=settings.sync_interval,
        audit=audit,
    ).start()
    closers.append(sync.stop)  # stopped first (closers run in reverse)
    images = ImageExecutor(runner, cfg.policy, tokens, on_status=_phase_reporter(link))
    return DispatchExecutor(gateway, images, sync, closers)


def executor_for_station(cfg: AgentConfig, link, app=None, node_cfg=None, server=None):
    """`build_executor` for `dsgateway node run`: the gateway app and its server."""
    from gateway.agent.images.tokens import TokenUnavailable

    sessions = audit = address = None
    if app is not None:
        services = app.extensions["dsgateway"]
        sessions, audit = services.sessions, services.audit
    if server is not None:
        host = node_cfg.server.host
        # A gateway listening on every address is reached on the loopback.
        address = ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host, int(server.port))  # noqa: S104
    try:
        return build_executor(cfg, link, sessions, node_cfg, address, audit)
    except TokenUnavailable as err:
        raise AgentConfigError(f"images.tokens_from: {err}") from None
