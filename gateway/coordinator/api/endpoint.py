"""The one decorator every API view wears: authentication, request schema, response
schema, and the facts the OpenAPI document is built from.

    @bp.post("/tasks")
    @endpoint(body=TaskCreate, response=TaskOut, status=201, summary="Create a task")
    def create_task(body): ...

Order of checks: who is calling (401) before what they sent (400), so an anonymous
caller learns nothing about the expected input. Query strings and bodies are loaded by
marshmallow; unknown fields are errors, not silently dropped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Response, jsonify, request
from marshmallow import Schema, ValidationError

from gateway.coordinator import authz
from gateway.coordinator.errors import BadRequest

__all__ = ["Doc", "endpoint"]


@dataclass(frozen=True)
class Doc:
    summary: str
    auth: str  # "user" | "node" | "none"
    body: type[Schema] | None
    query: type[Schema] | None
    response: type[Schema] | None
    many: bool
    status: int
    errors: tuple[int, ...]


def _load(schema: Schema, data: Any, where: str) -> Any:
    try:
        return schema.load(data)
    except ValidationError as err:
        raise BadRequest(f"Invalid {where}.", errors=err.normalized_messages()) from None


def _json_body() -> Any:
    data = request.get_json(silent=True)
    if data is None:
        if request.data:
            raise BadRequest("The request body is not valid JSON.")
        data = {}
    return data


def endpoint(
    *,
    summary: str,
    auth: str = "user",
    body: type[Schema] | None = None,
    query: type[Schema] | None = None,
    response: type[Schema] | None = None,
    many: bool = False,
    status: int = 200,
    errors: tuple[int, ...] = (),
) -> Callable:
    # Schema instances are made once and reused (loading and dumping keep no state in
    # them); making them per request cost more than the rest of an idle agent's poll.
    query_schema = query() if query is not None else None
    body_schema = body() if body is not None else None
    response_schema = response(many=many) if response is not None else None

    def deco(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if auth == "user":
                authz.authenticate_user()
            elif auth == "node":
                authz.authenticate_node()
            if query_schema is not None:
                kwargs["query"] = _load(query_schema, request.args.to_dict(), "query parameters")
            if body_schema is not None:
                kwargs["body"] = _load(body_schema, _json_body(), "request body")
            out = view(*args, **kwargs)
            if isinstance(out, Response):
                return out
            if status == 204:
                return Response(status=204)
            data = response_schema.dump(out) if response_schema is not None else out
            return jsonify(data), status

        std = {"user": (401,), "node": (401,), "none": ()}[auth]
        if body is not None or query is not None:
            std = (*std, 400)
        wrapper.openapi = Doc(  # type: ignore[attr-defined]
            summary=summary,
            auth=auth,
            body=body,
            query=query,
            response=response,
            many=many,
            status=status,
            errors=tuple(sorted(set(std) | set(errors))),
        )
        return wrapper

    return deco
