"""The gateway's one exception tree. Each error knows the HTTP status it maps to, and
its message is written for the person who will read it in their R or Python console."""


class GatewayError(Exception):
    status = 500

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(GatewayError):
    status = 400


class ExpressionRefused(BadRequest):
    """The expression is outside the DataSHIELD grammar or calls a non-whitelisted function."""


class Unauthorized(GatewayError):
    status = 401


class Forbidden(GatewayError):
    status = 403


class NotFound(GatewayError):
    status = 404


class Conflict(GatewayError):
    status = 409


class CapacityExceeded(GatewayError):
    # The Armadillo R client raises only for 400/401/403/404/500, so capacity problems
    # must be a 500 to reach the user as an error rather than be silently ignored.
    status = 500


class RSessionFailed(GatewayError):
    """The session's R process died or was stopped (time or memory limit, crash)."""

    status = 500
