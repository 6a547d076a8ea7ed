"""The gateway's Flask app factory: both DataSHIELD faces over one session manager.

`create_app(config)` builds the services (authenticator, audit log, table catalogue,
R pool, method registry, session manager), registers the Armadillo face at `/` and the
Opal face at `/ws`, maps `GatewayError`s to JSON error bodies, and writes one audit
record per request. Nothing happens at import time.
"""

from __future__ import annotations

import atexit
import logging
import os
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from gateway.node import armadillo, opal
from gateway.node.audit import AuditLog
from gateway.node.audit_outcomes import OUTCOME_HEADER
from gateway.node.auth import Authenticator
from gateway.node.config import NodeConfig
from gateway.node.errors import BadRequest, ExpressionRefused, GatewayError
from gateway.node.web import NodeServices, node

__all__ = ["build_services", "create_app"]

log = logging.getLogger(__name__)


def build_services(config: NodeConfig) -> NodeServices:
    """Start what a node needs: the R pool (a zygote with the packages loaded) first,
    since the method registry is made from the packages it finds."""
    from gateway.node.datasources import TableCatalogue
    from gateway.node.methods import MethodRegistry, Profile
    from gateway.node.rpool import RPool
    from gateway.node.sessions import SessionManager

    config.state_dir.mkdir(parents=True, exist_ok=True)
    audit = AuditLog(config.audit_path)
    catalogue = TableCatalogue(config.data_dir, list(config.sql_tables))
    pool = RPool(r_lib=config.r_lib, limits=config.limits)
    pool.start()
    try:
        profiles = {
            name: Profile(
                name=name,
                packages=list(p.packages) if p.packages is not None else None,
                blacklist=list(p.blacklist),
                options=dict(p.options),
            )
            for name, p in config.profiles.items()
        }
        registry = MethodRegistry(pool.packages(), profiles)
        if not pool.packages():
            log.warning(
                "No DataSHIELD package found in the R libraries (r_lib: %s): every call "
                "will be refused. Install the built-in one with `dsgateway gateway "
                "install-r-package` or set r_lib in the node config.",
                config.r_lib,
            )
        sessions = SessionManager(
            pool, registry, catalogue, audit, config.limits, state_dir=config.state_dir
        )
    except BaseException:
        pool.stop()
        raise
    return NodeServices(
        config=config,
        authenticator=Authenticator(config),
        audit=audit,
        catalogue=catalogue,
        registry=registry,
        sessions=sessions,
        pool=pool,
    )


def _load_config(config: NodeConfig | str | os.PathLike | None) -> NodeConfig:
    if isinstance(config, NodeConfig):
        return config
    if config is not None:
        return NodeConfig.from_file(config)
    if os.environ.get("DSGATEWAY_CONFIG"):
        return NodeConfig.from_file(os.environ["DSGATEWAY_CONFIG"])
    if os.environ.get("DSGATEWAY_DATA"):
        return NodeConfig.quick(os.environ["DSGATEWAY_DATA"])
    raise ValueError("No configuration: pass one, or set DSGATEWAY_CONFIG or DSGATEWAY_DATA.")


def create_app(
    config: NodeConfig | str | os.PathLike | None = None,
    test_config: dict[str, Any] | None = None,
) -> Flask:
    """The gateway app. `test_config` holds Flask settings for tests; under the key
    `DSGATEWAY_SERVICES` it may bring ready-made services (sharing an R pool)."""
    test_config = dict(test_config or {})
    services: NodeServices | None = test_config.pop("DSGATEWAY_SERVICES", None)
    if services is None:
        services = build_services(_load_config(config))
        atexit.register(close_services, services)
    cfg = services.config

    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=cfg.server.max_body,
        JSON_SORT_KEYS=False,
    )
    app.config.update(test_config)
    app.json.sort_keys = False
    app.extensions["dsgateway"] = services

    app.register_blueprint(armadillo.bp)
    app.register_blueprint(opal.bp)
    app.register_error_handler(GatewayError, _gateway_error)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.after_request(_audit)
    return app


def close_services(services: NodeServices) -> None:
    """Stop every R process; called at exit (and by tests and the CLI)."""
    try:
        services.sessions.close_all()
    except Exception:  # best effort at shutdown
        log.exception("closing sessions failed")
    if services.pool is not None:
        try:
            services.pool.stop()
        except Exception:  # best effort at shutdown
            log.exception("stopping the R pool failed")
    services.audit.close()


# ---------------------------------------------------------------- errors


def _is_opal() -> bool:
    return request.blueprint == "opal" or request.path.startswith("/ws/")


def _error_response(err: GatewayError, status: int) -> Response:
    g.setdefault("audit", {}).setdefault("message", err.message)
    if _is_opal():
        body = opal.error_body(err, status)
    else:
        body = armadillo.error_body(err, status)
    response = jsonify(body)
    response.status_code = status
    return response


def _gateway_error(err: GatewayError) -> Response:
    if isinstance(err, ExpressionRefused):
        g.setdefault("audit", {}).setdefault("outcome", "refused")
    return _error_response(err, err.status)


def _too_large(err: RequestEntityTooLarge) -> Response:
    # 413 is not an error for the R client (it would go on and read an old result).
    limit = request.max_content_length
    return _error_response(BadRequest(f"Request body too large: the limit is {limit} bytes."), 400)


def _http_error(err: HTTPException) -> Response:
    status = err.code or 500
    if status == 404:
        message = f"No such endpoint: {request.method} {request.path}"
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.path}"
    else:
        message = err.description or err.name
    response = _error_response(GatewayError(message), status)
    if status == 405 and err.valid_methods:
        response.headers["Allow"] = ", ".join(err.valid_methods)
    return response


def _unexpected_error(err: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.path)
    return _error_response(GatewayError(f"Internal error ({type(err).__name__})."), 500)


# ---------------------------------------------------------------- audit


def _audit(response: Response) -> Response:
    fields = dict(g.get("audit", {}))
    status = response.status_code
    outcome = fields.pop("outcome", None)
    if outcome is None:
        outcome = "ok" if status < 400 else ("failed" if status >= 500 else "refused")
    elif status >= 400 and outcome == "returned":
        outcome = "failed"
    fields.setdefault("face", "opal" if request.path.startswith("/ws/") else "armadillo")
    action = fields.pop("action", None) or f"{request.method} {request.path}"[:200]
    size = response.content_length if not response.is_streamed else None
    try:
        node().audit.record(
            action=action,
            outcome=outcome,
            status=status,
            bytes=size or 0,
            method=request.method,
            path=request.path[:300],
            remote=request.remote_addr,
            **fields,
        )
    except Exception:  # a broken audit log blocks the answer
        log.exception("could not write the audit record")
        return _audit_failure()
    # The coordinator's relay files the call under the same outcome (blocked, refused...).
    response.headers[OUTCOME_HEADER] = outcome
    return response


def _audit_failure() -> Response:
    # Nothing leaves the node unrecorded: if the record cannot be written, neither is the
    # response sent.
    response = jsonify(status=500, message="The audit log cannot be written.")
    response.status_code = 500
    return response
