"""The coordinator's errors: each carries its HTTP status; the app answers every one of
them as JSON `{"message": ...}` (plus `errors` with field messages for bad input)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadRequest",
    "Conflict",
    "CoordinatorError",
    "Forbidden",
    "NotFound",
    "Unauthorized",
]


class CoordinatorError(Exception):
    status = 500

    def __init__(self, message: str, errors: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body


class BadRequest(CoordinatorError):
    status = 400


class Unauthorized(CoordinatorError):
    status = 401


class Forbidden(CoordinatorError):
    status = 403


class NotFound(CoordinatorError):
    status = 404


class Conflict(CoordinatorError):
    status = 409
