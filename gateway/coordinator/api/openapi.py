"""The OpenAPI 3 document at /api/openapi.json, built from the routes and the
marshmallow schemas that `endpoint` recorded on every view (apispec does the
schema-to-JSON-Schema part), so the document cannot drift from the code."""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, current_app, jsonify

from gateway.coordinator.api.endpoint import Doc, endpoint
from gateway.coordinator.schemas import ErrorOut

bp = Blueprint("openapi", __name__)
_PATH_VAR = re.compile(r"<(?:(\w+):)?(\w+)>")
_REASONS = {
    400: "Invalid input (field messages in `errors`)",
    401: "Not authenticated",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict with the current state",
}
_CACHE = "dsgateway_coordinator_openapi"


def _path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params = []
    for conv, name in _PATH_VAR.findall(rule):
        kind = "integer" if conv == "int" else "string"
        params.append({"in": "path", "name": name, "required": True, "schema": {"type": kind}})
    return _PATH_VAR.sub(r"{\2}", rule), params


def _operation(doc: Doc, path_params: list[dict[str, Any]], tag: str) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": doc.summary, "tags": [tag]}
    params = list(path_params)
    if doc.query is not None:
        params.append({"in": "query", "schema": doc.query})
    if params:
        op["parameters"] = params
    if doc.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": doc.body}},
        }
    ok: dict[str, Any] = {"description": "OK"}
    if doc.response is not None and doc.status != 204:
        schema: Any = doc.response
        if doc.many:
            schema = {"type": "array", "items": doc.response}
        ok["content"] = {"application/json": {"schema": schema}}
    responses: dict[str, Any] = {str(doc.status): ok}
    for status in doc.errors:
        responses[str(status)] = {
            "description": _REASONS.get(status, "Error"),
            "content": {"application/json": {"schema": ErrorOut}},
        }
    op["responses"] = responses
    if doc.auth == "user":
        op["security"] = [{"bearerAuth": []}]
    elif doc.auth == "node":
        op["security"] = [{"nodeApiKey": []}]
    else:
        op["security"] = []
    return op


def build_spec(app: Flask) -> dict[str, Any]:
    spec = APISpec(
        title="dsgateway coordinator",
        version="1",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={
            "description": "Collaborations, nodes, tasks and results of a DataSHIELD federation."
        },
    )
    spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    spec.components.security_scheme(
        "nodeApiKey", {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
    )
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        doc = getattr(view, "openapi", None)
        if doc is None:
            continue
        path, params = _path(rule.rule)
        tag = rule.endpoint.split(".", 1)[0]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(doc, params, tag)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


@bp.get("/openapi.json")
@endpoint(auth="none", summary="This document")
def openapi_json():
    app = current_app._get_current_object()
    if _CACHE not in app.extensions:
        app.extensions[_CACHE] = build_spec(app)
    return jsonify(app.extensions[_CACHE])


@bp.get("/health")
@endpoint(auth="none", summary="Liveness: the API answers and the database is reachable")
def health():
    from sqlalchemy import text

    from gateway.coordinator import db

    db.session().execute(text("SELECT 1"))
    return {"status": "ok"}
