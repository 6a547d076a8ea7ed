"""The agent's configuration: one YAML file, strict like the gateway's.

    coordinator: https://coordinator.example.org    # its API is under /api
    api_key_env: DSGATEWAY_NODE_API_KEY              # the env var holding the node's key
    gateway: node.yaml                               # the gateway's own configuration
    poll_wait: 55                                    # seconds a long poll may wait
    heartbeat_interval: 20
    max_concurrent_runs: 2
    backoff_initial: 0.5                             # reconnect delays, doubling
    backoff_max: 30
    policy:                                          # checked for every run, whatever
      collaborations: "*"                            #   the coordinator says
      users: [alice, bob]                            # or "*"
      algorithms: [aggregate]                        # or "*"
      projects: [demo]                               # what runs may read
      profile: default                               # the gateway profile runs use

The key itself never goes in the file. Relative paths are relative to the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, validate

__all__ = ["AgentConfig", "AgentConfigError", "Policy"]


class AgentConfigError(ValueError):
    pass


class _AnyOrList(fields.Field):
    """`"*"` (anything) or a list of items."""

    def __init__(self, item: fields.Field, **kw: Any):
        super().__init__(**kw)
        self.item = fields.List(item)

    def _deserialize(self, value, attr, data, **kw):
        if value == "*":
            return None
        return self.item.deserialize(value, attr, data, **kw)


class _PolicySchema(Schema):
    class Meta:
        unknown = RAISE

    collaborations = _AnyOrList(fields.Int(), load_default=None)
    users = _AnyOrList(fields.Str(), load_default=None)
    algorithms = _AnyOrList(fields.Str(), load_default=lambda: ["aggregate"])
    projects = fields.List(fields.Str(), load_default=list)
    profile = fields.Str(load_default="default")


class _AgentSchema(Schema):
    class Meta:
        unknown = RAISE

    coordinator = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    api_key_env = fields.Str(load_default="DSGATEWAY_NODE_API_KEY")
    gateway = fields.Str(load_default=None, allow_none=True)
    poll_wait = fields.Float(load_default=55, validate=validate.Range(min=0, max=600))
    heartbeat_interval = fields.Float(load_default=20, validate=validate.Range(min=0.1))
    max_concurrent_runs = fields.Int(load_default=2, validate=validate.Range(min=1, max=64))
    backoff_initial = fields.Float(load_default=0.5, validate=validate.Range(min=0.01))
    backoff_max = fields.Float(load_default=30, validate=validate.Range(min=0.01))
    request_timeout = fields.Float(load_default=30, validate=validate.Range(min=1))
    policy = fields.Nested(_PolicySchema, load_default=lambda: _PolicySchema().load({}))
    # Client images (checked by gateway.agent.dispatch.image_settings).
    images = fields.Dict(load_default=None, allow_none=True)


@dataclass(frozen=True)
class Policy:
    """What this node agrees to run. None means any."""

    collaborations: frozenset[int] | None = None
    users: frozenset[str] | None = None
    algorithms: frozenset[str] | None = frozenset({"aggregate"})
    projects: frozenset[str] = frozenset()
    profile: str = "default"


@dataclass(frozen=True)
class AgentConfig:
    coordinator: str
    api_key_env: str = "DSGATEWAY_NODE_API_KEY"
    gateway: Path | None = None
    poll_wait: float = 55  # under the coordinator's LONG_POLL_MAX (60)
    heartbeat_interval: float = 20
    max_concurrent_runs: int = 2
    backoff_initial: float = 0.5
    backoff_max: float = 30
    request_timeout: float = 30
    policy: Policy = field(default_factory=Policy)
    images: dict[str, Any] | None = None  # see gateway/agent/dispatch.py

    @property
    def api_url(self) -> str:
        return self.coordinator.rstrip("/") + "/api"

    def api_key(self) -> str:
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise AgentConfigError(
                f"The node's API key is not set: put it in the environment variable "
                f"{self.api_key_env}."
            )
        return key

    @classmethod
    def from_dict(cls, raw: Any, base_dir: Path | None = None) -> AgentConfig:
        if not isinstance(raw, dict):
            raise AgentConfigError("The agent configuration must be a YAML mapping.")
        try:
            data = _AgentSchema().load(raw)
        except ValidationError as err:
            raise AgentConfigError(f"Invalid agent configuration: {err.messages}") from None
        p = data.pop("policy")

        def frozen(value):
            return None if value is None else frozenset(value)

        policy = Policy(
            collaborations=frozen(p["collaborations"]),
            users=frozen(p["users"]),
            algorithms=frozen(p["algorithms"]),
            projects=frozenset(p["projects"]),
            profile=p["profile"],
        )
        gateway = data.pop("gateway")
        if gateway:
            path = Path(os.path.expanduser(gateway))
            gateway = path if path.is_absolute() else (base_dir or Path.cwd()) / path
        return cls(policy=policy, gateway=gateway, **data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> AgentConfig:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise AgentConfigError(f"Cannot read {path}: {err}") from None
        return cls.from_dict(raw, base_dir=path.resolve().parent)
