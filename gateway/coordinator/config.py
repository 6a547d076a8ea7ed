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
    return settings
