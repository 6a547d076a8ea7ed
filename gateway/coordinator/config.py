"""The coordinator's settings, in layers: defaults, then a YAML file named by
`DSGATEWAY_COORDINATOR_CONFIG`, then the test dict, then `DSGATEWAY_COORD_<KEY>`
environment variables (the last word wins, so an operator can override a file).

Keys are Flask config keys (upper case); the file may write them in lower case.
Environment values are parsed as JSON when they parse (numbers, booleans, lists),
otherwise taken as text. Secrets (the token signing key, database passwords) belong in
the environment or in files the settings name, never in the repository.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CONFIG_FILE_ENV", "DEFAULTS", "ENV_PREFIX", "load_settings"]

CONFIG_FILE_ENV = "DSGATEWAY_COORDINATOR_CONFIG"
ENV_PREFIX = "DSGATEWAY_COORD_"

DEFAULTS: dict[str, Any] = {
    # SQLAlchemy URL; None: SQLite in the instance folder.
    "DATABASE_URL": None,
    # HS256 key for access and refresh tokens; None: a random key kept in the instance
    # folder (fine for one process; give every API process the same key in production).
    "SECRET_KEY": None,
    "ACCESS_TOKEN_TTL": 900,
    "REFRESH_TOKEN_TTL": 7 * 24 * 3600,
    "TOKEN_ISSUER": "dsgateway-coordinator",
    # werkzeug method string: scrypt with its default cost. Tests lower the cost.
    "PASSWORD_HASH_METHOD": "scrypt",
    # Relay tokens (see docs/coordinator.md): signed with a private key file (RS256/ES256)
    # or, for one machine, an HS256 secret shared with the nodes.
    "RELAY_ISSUER": "https://coordinator.invalid",
    "RELAY_PRIVATE_KEY_FILE": None,
    "RELAY_SECRET": None,
    "RELAY_ALGORITHM": None,  # default: RS256 for a key file, HS256 for a secret
    "RELAY_TOKEN_TTL": 3600,
    # Celery: "memory://" is the embedded, in-process transport (no Redis).
    "CELERY_BROKER_URL": "memory://localhost/",
    "CELERY_RESULT_BACKEND": "cache+memory://",
    # The queue the tasks go to (several coordinators may share one Redis).
    "CELERY_QUEUE": "dsgateway",
    # Run expiry and recovery sweep, seconds between beats.
    "SWEEP_INTERVAL": 15,
    # A task still pending this many seconds after creation lost its dispatch message.
    "REDISPATCH_AFTER": 10,
    # Nodes: offline after this many seconds without a request.
    "NODE_OFFLINE_AFTER": 90,
    # A started run goes back to pending if its agent says nothing for this long.
    "RUN_LEASE": 300,
    "RUN_MAX_ATTEMPTS": 3,
    "TASK_DEFAULT_TIMEOUT": 3600,
    "LONG_POLL_MAX": 60,
    "WORK_BATCH": 10,
    # Where the agents' long polls learn of new work: "local" (this process only),
    # "redis" (across API processes and workers; REDIS_URL, else the broker's URL), or
    # "auto": local with the embedded broker, redis with a Redis broker.
    "WORK_NOTIFIER": "auto",
    "REDIS_URL": None,
    "LOG_EXCERPT_CHARS": 10000,
    # A node result larger than this (as JSON) fails its run: a second disclosure check.
    "MAX_RESULT_BYTES": 1024 * 1024,
    # Disclosure checks on image runs' output (gateway/agent/images/disclosure.py): keys
    # min_count, max_rows, allow_png, identifiers; missing keys keep their defaults.
    "IMAGE_DISCLOSURE": {},
    "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
    # Extra modules that register central aggregation functions when imported.
    "AGGREGATOR_MODULES": [],
    "HOST": "127.0.0.1",
    "PORT": 5000,
    "THREADS": 64,
    # Open connections waitress accepts (its own default, 100, is less than what a few
    # dozen agents hold: a long poll, result posts, heartbeats each).
    "CONNECTION_LIMIT": 1000,
}


def _from_file(path: str | os.PathLike) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the coordinator configuration must be a mapping")
    return {str(k).upper(): v for k, v in data.items()}


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or len(key) == len(ENV_PREFIX):
            continue
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[key[len(ENV_PREFIX) :]] = value
    return out


def load_settings(
    test_config: dict[str, Any] | None = None, environ: dict[str, str] | None = None
) -> dict[str, Any]:
    environ = dict(os.environ if environ is None else environ)
    settings = dict(DEFAULTS)
    if environ.get(CONFIG_FILE_ENV):
        settings.update(_from_file(environ[CONFIG_FILE_ENV]))
    if test_config:
        settings.update(test_config)
    settings.update(_from_env(environ))
    _check_image_disclosure(settings)
    return settings


def _check_image_disclosure(settings: dict[str, Any]) -> None:
    """Refuse to start with disclosure rules that do not parse (fail closed)."""
    from gateway.agent.images.disclosure import DisclosureRules

    try:
        DisclosureRules.from_dict(settings.get("IMAGE_DISCLOSURE") or {})
    except (ValueError, TypeError) as err:
        raise ValueError(f"IMAGE_DISCLOSURE: {err}") from None


# ---------------------------------------------------------------- what each setting means
# Read by gateway/docs_reference.py for docs/reference/configuration.md (`make docs`); a
# test fails when a setting has no description here.

# Settings other modules read with a fallback of their own: that fallback, as text.
OTHER_SETTINGS: dict[str, str] = {
    "INSTANCE_PATH": "Flask's `instance/` folder",
    "RELAY_PORT": "5001",
    "RELAY_HUB": "auto",
    "RELAY_TIMEOUT": "600",
    "RELAY_POLL_GRACE": "10",
    "RELAY_AUTH_CACHE": "5",
    "CELERY_TASK_ALWAYS_EAGER": "false",
}

DESCRIPTIONS: dict[str, str] = {
    "DATABASE_URL": "SQLAlchemy URL of the database (PostgreSQL in production, e.g. "
    "`postgresql+psycopg://coord@db/coordinator`). Default: SQLite in the instance folder.",
    "SECRET_KEY": "HS256 key of access and refresh tokens. Default: a random key made and "
    "kept in the instance folder; give every API process the same one in production.",
    "ACCESS_TOKEN_TTL": "Seconds an access token is valid.",
    "REFRESH_TOKEN_TTL": "Seconds a refresh token is valid.",
    "TOKEN_ISSUER": "`iss` of access and refresh tokens (their audience is `<issuer>/api`).",
    "PASSWORD_HASH_METHOD": "werkzeug password hash method, with its cost (`scrypt` or "
    "`scrypt:N:r:p`).",
    "RELAY_ISSUER": "`iss` of relay tokens: the nodes' `tokens.issuer`.",
    "RELAY_PRIVATE_KEY_FILE": "PEM private key that signs relay tokens (made by "
    "`dsgateway coordinator relay-key`); nodes verify with its public key.",
    "RELAY_SECRET": "HS256 secret that signs relay tokens instead (one machine; shared with "
    "the nodes). Set this or RELAY_PRIVATE_KEY_FILE, not both.",
    "RELAY_ALGORITHM": "Signature algorithm of relay tokens. Default: RS256 for a key file, "
    "HS256 for a secret.",
    "RELAY_TOKEN_TTL": "Seconds a relay token is valid.",
    "RELAY_PORT": "Port of the relay listener (`dsgateway coordinator relay`).",
    "RELAY_HUB": "Where relayed calls in flight are kept: `local` (one process), `redis` "
    "(listener and API in different processes), `auto` (redis with a Redis broker).",
    "RELAY_TIMEOUT": "Seconds a relayed call waits for the node's answer.",
    "RELAY_POLL_GRACE": "Seconds after a node's last relay poll during which it still counts "
    "as connected.",
    "RELAY_AUTH_CACHE": "Seconds a verified relay token is remembered by the listener (a "
    "role taken away takes effect within this time).",
    "CELERY_BROKER_URL": "Celery broker: `memory://` is the embedded in-process transport "
    "(no Redis, worker inside `serve`); `redis://...` for separate workers.",
    "CELERY_RESULT_BACKEND": "Celery result backend.",
    "CELERY_QUEUE": "The queue the coordinator's tasks go to (several coordinators may share "
    "one Redis).",
    "CELERY_TASK_ALWAYS_EAGER": "Run Celery tasks in the calling process (tests only).",
    "SWEEP_INTERVAL": "Seconds between sweeps (run expiry, lost dispatches, retries).",
    "REDISPATCH_AFTER": "Seconds after which a task still pending is dispatched again (its "
    "message was lost).",
    "NODE_OFFLINE_AFTER": "Seconds without a request after which a node is shown offline.",
    "RUN_LEASE": "Seconds a started run may go without word from its agent before it goes "
    "back to pending.",
    "RUN_MAX_ATTEMPTS": "Attempts of a run before it fails.",
    "TASK_DEFAULT_TIMEOUT": "Seconds until unfinished runs expire, when a task names none.",
    "LONG_POLL_MAX": "The longest an agent's poll for work may wait, in seconds.",
    "WORK_BATCH": "Work items handed out per poll, at most.",
    "WORK_NOTIFIER": "How waiting long polls learn of new work: `local` (this process), "
    "`redis` (across processes), `auto` (redis with a Redis broker).",
    "REDIS_URL": "Redis for the notifier and the relay hub. Default: the broker's URL.",
    "LOG_EXCERPT_CHARS": "Characters of a run's log kept (its end).",
    "MAX_RESULT_BYTES": "The largest node result accepted, in bytes of JSON.",
    "IMAGE_DISCLOSURE": "Disclosure checks on image runs' output, sent to every node with "
    "each run and applied again when the result arrives: `min_count` (a count is 0 or at "
    "least this; default 5), `max_rows` (rows of any table or list; default 100), "
    "`allow_png` (default true), `identifiers` (regular expressions of column names "
    "refused). Missing keys keep their defaults (docs/client-images.md).",
    "MAX_CONTENT_LENGTH": "The largest request body, in bytes.",
    "AGGREGATOR_MODULES": "Python modules imported at start that register central "
    "aggregation functions.",
    "HOST": "Address `serve` listens on.",
    "PORT": "Port `serve` listens on.",
    "THREADS": "Request threads; each waiting long poll holds one.",
    "CONNECTION_LIMIT": "Open connections accepted (a few per connected agent).",
    "INSTANCE_PATH": "Folder of the SQLite database, the generated SECRET_KEY and the Celery "
    "beat schedule.",
}
