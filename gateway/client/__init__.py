"""dsgateway's own DataSHIELD connection for Python: a `datashield` driver for the
Armadillo API (dsgateway's root face, or MOLGENIS Armadillo itself).

    from datashield import DSLoginBuilder, DSSession

    logins = (DSLoginBuilder()
              .add("node1", "https://node1.example.org", user="alice", password="...",
                   driver="gateway.client.ArmadilloDriver")
              .build())
    session = DSSession(logins)
    session.open()
    session.assign_table("D", "demo/cohort/patients")

`rds` reads R's serialize() bytes (`rds.unserialize`, `rds.to_python`, `rds.loads`);
every error is an `ArmadilloError` (see `gateway.client.errors`). `CoordinatorClient` is
a small REST client for the coordinator (its errors: `CoordinatorError`). Needs `requests` and
`datashield` (the ``algorithms`` extra installs both).
"""

from gateway.client import errors, rds
from gateway.client.armadillo import (
    ArmadilloConnection,
    ArmadilloDriver,
    ArmadilloResult,
    ArmadilloRSession,
)
from gateway.client.coordinator import CoordinatorClient
from gateway.client.errors import (
    AccessDenied,
    ArmadilloError,
    AuthenticationError,
    BadRequest,
    CommandFailed,
    ConnectionFailed,
    CoordinatorError,
    HTTPStatusError,
    NotFound,
    ProtocolError,
    RDSError,
    ServerError,
    UnsupportedOperation,
)

__all__ = [
    "AccessDenied",
    "ArmadilloConnection",
    "ArmadilloDriver",
    "ArmadilloError",
    "ArmadilloRSession",
    "ArmadilloResult",
    "AuthenticationError",
    "BadRequest",
    "CommandFailed",
    "ConnectionFailed",
    "CoordinatorClient",
    "CoordinatorError",
    "HTTPStatusError",
    "NotFound",
    "ProtocolError",
    "RDSError",
    "ServerError",
    "UnsupportedOperation",
    "errors",
    "rds",
]
