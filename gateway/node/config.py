"""The node's configuration: one YAML file, validated before anything starts.

Every key has a default except `data_dir`. Unknown keys are refused, so a typo never
silently falls back to a default. Secrets never live in the file: users carry a scrypt
hash, and an HS256 token secret is read from the environment variable the file names.
See docs/configuration.md for every key.
"""

from __future__ import annotations

import math
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from gateway.node.limits import Limits
from gateway.node.rpackage import default_library

__all__ = [
    "ConfigError",
    "Limits",
    "NodeConfig",
    "OidcConfig",
    "ProfileConfig",
    "ServerConfig",
    "TokenConfig",
    "UserConfig",
]

# Names that end up in file paths (workspaces per user) or URLs: keep them boring.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$"
PROFILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
ADMIN_PASSWORD_ENV = "DSGATEWAY_ADMIN_PASSWORD"  # noqa: S105 (a variable name)


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad key."""


@dataclass(frozen=True)
class UserConfig:
    name: str
    password_hash: str
    projects: frozenset[str] | None  # None: every project


@dataclass(frozen=True)
class TokenConfig:
    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    public_key_file: Path | None = None
    secret_env: str | None = None

    def verification_key(self) -> str | bytes:
        """The key PyJWT verifies signatures with, read when needed (never cached in the file)."""
        if self.public_key_file is not None:
            return self.public_key_file.read_bytes()
        value = os.environ.get(self.secret_env or "")
        if not value:
            raise ConfigError(
                f"tokens.secret_env: environment variable {self.secret_env} is not set"
            )
        return value


@dataclass(frozen=True)
class ProfileConfig:
    name: str
    packages: tuple[str, ...] | None = None  # None: every DataSHIELD package found
    blacklist: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # Each /lastresult call holds a thread until its command ends, so allow many.
    threads: int = 64
    max_body: int = 1_000_000  # bytes; DataSHIELD expressions are small


@dataclass(frozen=True)
class OidcConfig:
    issuer_uri: str
    client_id: str


# ---------------------------------------------------------------- schemas


class _ProjectsField(fields.Field):
    """Either the string "*" (every project) or a list of project names."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value == "*":
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValidationError('Must be "*" or a list of project names.')
        return frozenset(value)


class _StrictSchema(Schema):
    class Meta:
        # marshmallow raises on unknown keys by default; said here so nobody changes it.
        unknown = "raise"


class _UserSchema(_StrictSchema):
    password_hash = fields.String(
        required=True,
        validate=validate.Length(min=1),
        metadata={
            "description": (
                "A scrypt (or pbkdf2) hash made by `dsgateway gateway hash-password`; a "
                "plain password is refused."
            )
        },
    )
    projects = _ProjectsField(
        load_default=None,
        metadata={
            "description": (
                'The projects the user may read: a list of names, or "*" for all. Default: all.'
            )
        },
    )

    @validates_schema
    def _hash_format(self, data, **kwargs):
        value = data.get("password_hash", "")
        if not value.startswith(("scrypt:", "pbkdf2:")):
            raise ValidationError(
                "Must be a hash made by `dsgateway gateway hash-password`, not a password.",
                "password_hash",
            )


class _TokenSchema(_StrictSchema):
    issuer = fields.String(
        required=True,
        metadata={"description": "The `iss` a token must carry (the coordinator's RELAY_ISSUER)."},
    )
    audience = fields.String(
        required=True,
        metadata={
            "description": "The `aud` a token must carry (this node's audience at the coordinator)."
        },
    )
    algorithms = fields.List(
        fields.String(),
        load_default=None,
        metadata={
            "description": (
                "Accepted signature algorithms. Default: [RS256] with public_key_file, "
                "[HS256] with secret_env; a key is only used with its own kind."
            )
        },
    )
    public_key_file = fields.String(
        load_default=None,
        metadata={
            "description": (
                "A PEM public key that verifies tokens (RS*, PS*, ES*). Give this or secret_env."
            )
        },
    )
    secret_env = fields.String(
        load_default=None,
        validate=validate.Regexp(r"^[A-Z_][A-Z0-9_]*$"),
        metadata={
            "description": (
                "The name of an environment variable holding an HS256/384/512 secret "
                "(never the secret itself). Give this or public_key_file."
            )
        },
    )

    @validates_schema
    def _one_key(self, data, **kwargs):
        has_file, has_env = data.get("public_key_file"), data.get("secret_env")
        if bool(has_file) == bool(has_env):
            raise ValidationError("Give exactly one of public_key_file or secret_env.", "_schema")
        allowed = KEY_ALGORITHMS if has_file else HMAC_ALGORITHMS
        for alg in data.get("algorithms") or ():
            if alg not in allowed:
                kind = "a public key" if has_file else "an HMAC secret"
                raise ValidationError(
                    f"Algorithm {alg!r} cannot be used with {kind}; use one of {list(allowed)}.",
                    "algorithms",
                )


class _ProfileSchema(_StrictSchema):
    packages = fields.List(
        fields.String(validate=validate.Length(min=1)),
        load_default=None,
        metadata={
            "description": (
                "The R packages whose AggregateMethods/AssignMethods count. Default: "
                "every installed DataSHIELD package."
            )
        },
    )
    blacklist = fields.List(
        fields.String(),
        load_default=list,
        metadata={
            "description": (
                "Method names (`meanDS`) or functions (`dsBase::meanDS`) taken out of the profile."
            )
        },
    )
    options = fields.Dict(
        keys=fields.String(validate=validate.Regexp(r"^[A-Za-z][A-Za-z0-9._]*$")),
        values=fields.Raw(),
        load_default=dict,
        metadata={
            "description": (
                "R options set when a session starts, over the packages' defaults (e.g. "
                "`nfilter.tab: 5`). Values are R literals; other text is taken as a "
                "string."
            )
        },
    )


class _LimitsSchema(_StrictSchema):
    max_sessions = fields.Integer(
        load_default=Limits.max_sessions,
        validate=validate.Range(1),
        metadata={
            "description": (
                "R sessions open at once on this node; logins beyond it are refused "
                "with a clear message."
            )
        },
    )
    idle_timeout = fields.Float(
        load_default=Limits.idle_timeout,
        validate=validate.Range(1),
        metadata={
            "description": (
                "Seconds without a request after which a session and its R process are closed."
            )
        },
    )
    memory_per_session = fields.Integer(
        load_default=Limits.memory_per_session,
        validate=validate.Range(64),
        metadata={"description": "MB of memory one R session may use."},
    )
    command_timeout = fields.Float(
        load_default=Limits.command_timeout,
        validate=validate.Range(1),
        metadata={
            "description": (
                "Seconds one command may run before its R process is stopped and the command fails."
            )
        },
    )
    warm_workers = fields.Integer(
        load_default=Limits.warm_workers,
        validate=validate.Range(0),
        metadata={"description": "R processes kept started, so that a login does not wait for R."},
    )
    interrupt_grace = fields.Float(
        load_default=Limits.interrupt_grace,
        validate=validate.Range(0.1, 600),
        metadata={
            "description": (
                "Seconds an over-time command gets to stop after an interrupt before "
                "its R process is killed."
            )
        },
    )


class _ServerSchema(_StrictSchema):
    host = fields.String(
        load_default=ServerConfig.host,
        metadata={"description": "The address to listen on (`--host` wins)."},
    )
    port = fields.Integer(
        load_default=ServerConfig.port,
        validate=validate.Range(0, 65535),
        metadata={"description": "The port to listen on (`--port` wins)."},
    )
    threads = fields.Integer(
        load_default=ServerConfig.threads,
        validate=validate.Range(4, 1024),
        metadata={
            "description": (
                "Request threads; a client waiting for /lastresult holds one, so keep "
                "it well above the number of sessions."
            )
        },
    )
    max_body = fields.Integer(
        load_default=ServerConfig.max_body,
        validate=validate.Range(1024),
        metadata={
            "description": "The largest request body in bytes; larger ones are refused with 400."
        },
    )


class _OidcSchema(_StrictSchema):
    issuer_uri = fields.String(
        required=True,
        metadata={
            "description": (
                "The OpenID Connect issuer advertised at GET /actuator/info "
                "(DSMolgenisArmadillo's device-flow login)."
            )
        },
    )
    client_id = fields.String(
        required=True, metadata={"description": "The OpenID Connect client id advertised with it."}
    )


class _SqlTableSchema(_StrictSchema):
    # Checked again, and the URL opened, by datasources.TableCatalogue at start-up.
    table = fields.String(
        required=True, metadata={"description": "The table's name here, `project/folder/table`."}
    )
    url = fields.String(
        metadata={"description": "A SQLAlchemy database URL. Give this or url_env."}
    )
    url_env = fields.String(
        validate=validate.Regexp(r"^[A-Z_][A-Z0-9_]*$"),
        metadata={
            "description": (
                "The name of an environment variable holding the URL (keeps a password "
                "out of this file)."
            )
        },
    )
    query = fields.String(
        metadata={"description": "A SELECT giving the table. Give this or sql_table."}
    )
    sql_table = fields.String(
        metadata={"description": "The database table to read. Give this or query."}
    )
    schema = fields.String(metadata={"description": "The database schema of sql_table."})

    @validates_schema
    def _one_of(self, data, **kwargs):
        if ("url" in data) == ("url_env" in data):
            raise ValidationError("Give exactly one of url and url_env.", "_schema")
        if ("query" in data) == ("sql_table" in data):
            raise ValidationError("Give exactly one of query and sql_table.", "_schema")


class _NodeSchema(_StrictSchema):
    data_dir = fields.String(
        required=True,
        metadata={
            "description": (
                "The directory of the node's tables: "
                "`data_dir/<project>/<folder>/<table>.parquet` (or .csv) is the table "
                "`project/folder/table`."
            )
        },
    )
    state_dir = fields.String(
        load_default=None,
        metadata={
            "description": (
                "Where the gateway writes its audit log (`audit.log`) and saved "
                "workspaces. Default: `var` next to this file."
            )
        },
    )
    r_lib = fields.String(
        load_default=None,
        metadata={
            "description": (
                "An R library searched before the system one. Default: $DSGATEWAY_R_LIB, else none."
            )
        },
    )
    sql_tables = fields.List(
        fields.Nested(_SqlTableSchema),
        load_default=list,
        metadata={
            "description": "Tables read from databases through SQLAlchemy (see docs/data.md)."
        },
    )
    users = fields.Dict(
        keys=fields.String(validate=validate.Regexp(NAME_PATTERN)),
        values=fields.Nested(_UserSchema),
        load_default=dict,
        metadata={
            "description": (
                "Users who log in with a password: name -> {password_hash, projects}. "
                "Names: letters, digits, `_`, `.`, `@`, `-`."
            )
        },
    )
    tokens = fields.Nested(
        _TokenSchema,
        load_default=None,
        metadata={
            "description": (
                "Verification of the coordinator's relay tokens (JWT). Without it, "
                "tokens are refused."
            )
        },
    )
    profiles = fields.Dict(
        keys=fields.String(validate=validate.Regexp(PROFILE_PATTERN)),
        values=fields.Nested(_ProfileSchema, allow_none=True),
        load_default=None,
        metadata={
            "description": (
                "DataSHIELD profiles: name -> {packages, blacklist, options}. Default: "
                "one profile `default` with every DataSHIELD package."
            )
        },
    )
    limits = fields.Nested(
        _LimitsSchema,
        load_default=None,
        metadata={"description": "Limits on R sessions and commands."},
    )
    server = fields.Nested(
        _ServerSchema, load_default=None, metadata={"description": "The HTTP server."}
    )
    oidc = fields.Nested(
        _OidcSchema,
        load_default=None,
        metadata={
            "description": (
                "If set, advertised at GET /actuator/info for DSMolgenisArmadillo's "
                "device-flow login."
            )
        },
    )


def _flatten(messages: Any, prefix: str = "") -> list[str]:
    """marshmallow's nested error dict as `a.b.c: message` lines, the key path first."""
    if isinstance(messages, dict):
        lines = []
        for key, value in messages.items():
            if key == "_schema":
                lines += _flatten(value, prefix)
            elif key in ("key", "value") and prefix and isinstance(value, dict | list):
                # Dict fields nest errors under "key"/"value": hide that level.
                lines += _flatten(value, prefix if key == "value" else prefix + " (name)")
            else:
                lines += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return lines
    if isinstance(messages, list):
        if all(isinstance(m, str) for m in messages):
            return [f"{prefix or '(top level)'}: {m}" for m in messages]
        return [line for m in messages for line in _flatten(m, prefix)]
    return [f"{prefix or '(top level)'}: {messages}"]


# ---------------------------------------------------------------- the config


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path
    state_dir: Path
    r_lib: str | None = None
    sql_tables: tuple[dict, ...] = ()
    users: dict[str, UserConfig] = field(default_factory=dict)
    tokens: TokenConfig | None = None
    profiles: dict[str, ProfileConfig] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    server: ServerConfig = field(default_factory=ServerConfig)
    oidc: OidcConfig | None = None
    # Only set by quick(): the plain admin password, so the CLI can print it once.
    quick_password: str | None = field(default=None, repr=False, compare=False)

    @property
    def audit_path(self) -> Path:
        return self.state_dir / "audit.log"

    @property
    def workspace_dir(self) -> Path:
        return self.state_dir / "workspaces"

    # -------------------------------------------------------- constructors

    @classmethod
    def from_dict(cls, raw: Any, base_dir: Path | None = None) -> NodeConfig:
        """Validate a parsed YAML document. Relative paths are relative to `base_dir`."""
        if not isinstance(raw, dict):
            raise ConfigError("The configuration must be a YAML mapping (key: value lines).")
        try:
            data = _NodeSchema().load(raw)
        except ValidationError as err:
            lines = _flatten(err.messages)
            raise ConfigError("Invalid configuration:\n  " + "\n  ".join(lines)) from None
        base = base_dir or Path.cwd()

        def path(value: str) -> Path:
            p = Path(os.path.expanduser(value))
            return p if p.is_absolute() else (base / p).resolve()

        data_dir = path(data["data_dir"])
        state_dir = path(data["state_dir"] or "var")
        tokens = None
        if data["tokens"]:
            t = data["tokens"]
            key_file = path(t["public_key_file"]) if t["public_key_file"] else None
            default_algs = ["RS256"] if key_file else ["HS256"]
            tokens = TokenConfig(
                issuer=t["issuer"],
                audience=t["audience"],
                algorithms=tuple(t["algorithms"] or default_algs),
                public_key_file=key_file,
                secret_env=t["secret_env"],
            )
        profiles_raw = data["profiles"] if data["profiles"] is not None else {"default": {}}
        profiles = {
            name: ProfileConfig(
                name=name,
                packages=tuple(p["packages"]) if p and p["packages"] is not None else None,
                blacklist=tuple(p["blacklist"]) if p else (),
                options={k: _r_literal(v) for k, v in (p["options"] if p else {}).items()},
            )
            for name, p in profiles_raw.items()
        }
        if not profiles:
            raise ConfigError("Invalid configuration:\n  profiles: Define at least one profile.")
        return cls(
            data_dir=data_dir,
            state_dir=state_dir,
            r_lib=data["r_lib"] or default_library(),
            sql_tables=tuple(data["sql_tables"]),
            users={
                name: UserConfig(name, u["password_hash"], u["projects"])
                for name, u in data["users"].items()
            },
            tokens=tokens,
            profiles=profiles,
            limits=Limits(**data["limits"]) if data["limits"] else Limits(),
            server=ServerConfig(**data["server"]) if data["server"] else ServerConfig(),
            oidc=OidcConfig(**data["oidc"]) if data["oidc"] else None,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> NodeConfig:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"Cannot read configuration file {path}: {err.strerror}") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
        try:
            return cls.from_dict(raw, base_dir=path.resolve().parent)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    @classmethod
    def quick(
        cls,
        data_dir: str | os.PathLike,
        state_dir: str | os.PathLike | None = None,
        password: str | None = None,
        **overrides: Any,
    ) -> NodeConfig:
        """A one-command start: user `admin` reading every project, profile `default`.

        The password comes from `password`, else $DSGATEWAY_ADMIN_PASSWORD, else is
        generated; it is kept in `quick_password` so the CLI can print it once.
        """
        from werkzeug.security import generate_password_hash

        plain = password or os.environ.get(ADMIN_PASSWORD_ENV) or secrets.token_urlsafe(12)
        base = cls.from_dict(
            {
                "data_dir": str(Path(data_dir).resolve()),
                "state_dir": str(Path(state_dir or "var").resolve()),
            }
        )
        admin = UserConfig("admin", generate_password_hash(plain, method="scrypt"), None)
        values = {"users": {"admin": admin}, "quick_password": plain, **overrides}
        return cls(**{**base.__dict__, **values})


_R_LITERAL = re.compile(
    r"^(TRUE|FALSE|NULL|NA|-?\d+(\.\d+)?([eE][+-]?\d+)?L?|\"[^\"\\\\]*\"|'[^'\\\\]*')$"
)


def _r_literal(value: Any) -> str:
    """Option values are R literals; YAML scalars are turned into their R spelling."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float) and math.isfinite(value):
        return repr(value)
    if value is None:
        return "NULL"
    if isinstance(value, str):
        if _R_LITERAL.fullmatch(value):
            return value
        # Anything else is a string: quoted, so a value can never be R code.
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise ConfigError(f"Invalid configuration:\n  profiles options: {value!r} is not a scalar")
