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

    collaborations = _AnyOrList(
        fields.Int(),
        load_default=None,
        metadata={"description": 'Collaboration ids whose work this node accepts, or "*" for any.'},
    )
    users = _AnyOrList(
        fields.Str(),
        load_default=None,
        metadata={
            "description": (
                "Researchers (user names) whose tasks and relayed calls this node "
                'accepts, or "*" for any.'
            )
        },
    )
    algorithms = _AnyOrList(
        fields.Str(),
        load_default=lambda: ["aggregate"],
        metadata={"description": 'Algorithms task runs may use, or "*" for any.'},
    )
    projects = fields.List(
        fields.Str(),
        load_default=list,
        metadata={"description": "The projects task runs may read."},
    )
    profile = fields.Str(
        load_default="default", metadata={"description": "The gateway profile task runs use."}
    )


class _AgentSchema(Schema):
    class Meta:
        unknown = RAISE

    coordinator = fields.Url(
        required=True,
        require_tld=False,
        schemes={"http", "https"},
        metadata={"description": "The coordinator's base URL (its API is under /api)."},
    )
    api_key_env = fields.Str(
        load_default="DSGATEWAY_NODE_API_KEY",
        metadata={
            "description": (
                "The environment variable holding the node's API key (`dsgateway "
                "coordinator nodes register` prints it); the key never goes in this "
                "file."
            )
        },
    )
    gateway = fields.Str(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "The gateway's configuration file (node.yaml), relative to this file."
        },
    )
    poll_wait = fields.Float(
        load_default=55,
        validate=validate.Range(min=0, max=600),
        metadata={
            "description": (
                "Seconds a long poll for work may wait (the coordinator caps it at LONG_POLL_MAX)."
            )
        },
    )
    heartbeat_interval = fields.Float(
        load_default=20,
        validate=validate.Range(min=0.1),
        metadata={"description": "Seconds between heartbeats."},
    )
    max_concurrent_runs = fields.Int(
        load_default=2,
        validate=validate.Range(min=1, max=64),
        metadata={"description": "Task runs executed at once."},
    )
    backoff_initial = fields.Float(
        load_default=0.5,
        validate=validate.Range(min=0.01),
        metadata={
            "description": (
                "The first reconnect delay in seconds after a network fault; it doubles "
                "up to backoff_max."
            )
        },
    )
    backoff_max = fields.Float(
        load_default=30,
        validate=validate.Range(min=0.01),
        metadata={"description": "The longest reconnect delay in seconds."},
    )
    request_timeout = fields.Float(
        load_default=30,
        validate=validate.Range(min=1),
        metadata={"description": "Seconds an ordinary request to the coordinator may take."},
    )
    policy = fields.Nested(
        _PolicySchema,
        load_default=lambda: _PolicySchema().load({}),
        metadata={
            "description": (
                "What this node agrees to run, checked for every run whatever the coordinator says."
            )
        },
    )
    # Client images (checked by gateway.agent.dispatch.image_settings).
    images = fields.Dict(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "Client images this node runs under Docker (the `images` keys "
            "below; see docs/client-images.md). Default: none."
        },
    )


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
