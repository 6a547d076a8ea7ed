"""The coordinator's Flask app factory.

`create_app(test_config=None)` loads the settings in layers (see config.py), opens the
database, makes the token service, the work notifier and the aggregation registry,
wires Celery, registers one blueprint per resource under `/api`, and answers every
error as JSON `{"message": ...}`. Nothing happens at import time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from gateway.coordinator import db, relay, web
from gateway.coordinator.aggregation import AggregatorRegistry
from gateway.coordinator.api import register_blueprints
from gateway.coordinator.celery_app import celery_init_app
from gateway.coordinator.config import load_settings
from gateway.coordinator.errors import CoordinatorError
from gateway.coordinator.notify import WorkNotifier, make_notifier
from gateway.coordinator.tokens import TokenService, ensure_secret_key

__all__ = ["CoordinatorServices", "create_app", "services"]

log = logging.getLogger(__name__)
EXTENSION = "dsgateway_coordinator"


@dataclass
class CoordinatorServices:
    tokens: TokenService
    notifier: WorkNotifier
    aggregators: AggregatorRegistry


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=False)
    settings = load_settings(test_config)
    if settings.get("INSTANCE_PATH"):
        app.instance_path = str(settings["INSTANCE_PATH"])
    app.config.update(settings)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    if not app.config.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = f"sqlite:///{Path(app.instance_path) / 'coordinator.db'}"
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = ensure_secret_key(app.instance_path)
    app.json.sort_keys = False

    db.init_app(app)
    aggregators = AggregatorRegistry.default()
    for module in app.config.get("AGGREGATOR_MODULES") or []:
        aggregators.load_module(module)
    app.extensions[EXTENSION] = CoordinatorServices(
        tokens=TokenService(app.config),
        notifier=make_notifier(app.config),
        aggregators=aggregators,
    )
    celery_init_app(app)
    register_blueprints(app)
    relay.init_app(app)  # the relay's node link and hub (gateway/coordinator/relay/)
    web.init_app(app)  # the web console at /console (gateway/coordinator/web/)

    app.register_error_handler(CoordinatorError, _coordinator_error)
    app.register_error_handler(IntegrityError, _integrity_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def services(app: Flask | None = None) -> CoordinatorServices:
    from flask import current_app

    return (app or current_app).extensions[EXTENSION]


def _json_error(status: int, body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def _coordinator_error(err: CoordinatorError) -> Response:
    response = _json_error(err.status, err.body())
    if err.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="dsgateway"'
    return response


def _integrity_error(_err: IntegrityError) -> Response:
    # A unique or foreign-key clash found on flush, before the view's commit.
    db.session().rollback()
    return _json_error(409, {"message": "That conflicts with existing data."})


def _http_error(err: HTTPException) -> Response:
    status = err.code or 500
    if status == 404:
        message = f"No such endpoint: {request.method} {request.path}"
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.path}"
    elif status == 413:
        message = "Request body too large."
    else:
        message = err.description or err.name
    response = _json_error(status, {"message": message})
    if status == 405 and getattr(err, "valid_methods", None):
        response.headers["Allow"] = ", ".join(err.valid_methods)
    return response


def _unexpected_error(err: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.path)
    return _json_error(500, {"message": f"Internal error ({type(err).__name__})."})
