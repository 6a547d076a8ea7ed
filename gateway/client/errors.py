"""The exceptions of `gateway.client`: one tree, rooted at `ArmadilloError`.

`ArmadilloError` is a `datashield.interface.DSError`, so code written for any DataSHIELD
driver catches it, and `get_error()` gives the same keys as the other drivers
(``message``, ``code``, ``details``)::

    ArmadilloError
     +-- ConnectionFailed        the server could not be reached (network, TLS, timeout)
     +-- HTTPStatusError         the server answered with an error status
     |    +-- BadRequest           400: e.g. an expression the node refused to run
     |    +-- AuthenticationError  401: wrong credentials, expired token or session
     |    +-- AccessDenied         403
     |    +-- NotFound             404: unknown table, profile, symbol or workspace
     |    +-- ServerError          500 and any other error status
     +-- CommandFailed           the node ran the command and R stopped with an error
     +-- ProtocolError           an answer this client does not understand
     |    +-- RDSError             bytes that are not a readable serialize() stream
     +-- UnsupportedOperation    not part of the Armadillo API (e.g. table variables)
     +-- CoordinatorError        the coordinator's REST API (`CoordinatorClient`) failed:
                                 ``.status`` (None: unreachable) and ``.message``
"""

from __future__ import annotations

from datashield.interface import DSError

__all__ = [
    "AccessDenied",
    "ArmadilloError",
    "AuthenticationError",
    "BadRequest",
    "CommandFailed",
    "ConnectionFailed",
    "CoordinatorError",
    "HTTPStatusError",
    "NotFound",
    "ProtocolError",
    "RDSError",
    "ServerError",
    "UnsupportedOperation",
]


class ArmadilloError(DSError):
    """Anything that went wrong talking to an Armadillo-API server."""

    #: HTTP status of the answer that caused the error, when there was one.
    status: int | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        details=None,
        server_message: str | None = None,
    ):
        super().__init__(message)
        if status is not None:
            self.status = status
        self.details = details
        #: the server's own words (``str(error)`` adds what kind of failure it was)
        self.server_message = server_message

    def get_error(self) -> dict:
        """``message`` (the server's own message when it gave one), ``code`` (the HTTP
        status) and ``details``."""
        return {
            "message": self.server_message or self.message,
            "code": self.status,
            "details": self.details,
        }

    def is_client_error(self) -> bool:
        return self.status is not None and 400 <= self.status < 500

    def is_server_error(self) -> bool:
        return self.status is not None and self.status >= 500


class ConnectionFailed(ArmadilloError):
    """The server could not be reached, or did not answer in time."""


class HTTPStatusError(ArmadilloError):
    """The server answered with an error status (``.status``)."""


class BadRequest(HTTPStatusError):
    status = 400


class AuthenticationError(HTTPStatusError):
    status = 401


class AccessDenied(HTTPStatusError):
    status = 403


class NotFound(HTTPStatusError):
    status = 404


class ServerError(HTTPStatusError):
    status = 500


class CommandFailed(ArmadilloError):
    """The node evaluated the command and R stopped with an error.

    ``.message`` is the node's message (e.g. ``Error in meanDS(D$x) : FAILED: ...``),
    ``.expression`` what was sent, ``.node`` the connection's name."""

    def __init__(self, message: str, *, expression: str | None = None, node: str | None = None):
        super().__init__(message, details={"expression": expression, "node": node})
        self.expression = expression
        self.node = node


class ProtocolError(ArmadilloError):
    """An answer that does not follow the Armadillo API."""


class RDSError(ProtocolError):
    """Bytes that are not a serialize() stream this reader understands."""


class UnsupportedOperation(ArmadilloError):
    """The DataSHIELD interface asks for something the Armadillo API does not offer."""


class CoordinatorError(ArmadilloError):
    """A request to the coordinator failed: ``.status`` is the HTTP status (None when
    the coordinator could not be reached), ``.message`` the server's ``message``."""
