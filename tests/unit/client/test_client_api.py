"""The public API of gateway.client is what `__all__` says, nothing more and nothing
less: a change to it must be deliberate (update this test and docs/python-algorithms.md)."""

from __future__ import annotations

import inspect

from datashield.interface import DSConnection, DSDriver, DSError, DSResult, RSession

import gateway.client as client
from gateway.client import errors, rds

PUBLIC = {
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
}


def test_public_names_are_fixed():
    assert set(client.__all__) == PUBLIC
    assert len(client.__all__) == len(PUBLIC)
    for name in client.__all__:
        assert hasattr(client, name), name
    assert set(rds.__all__) == {"REnvironment", "RObject", "loads", "to_python", "unserialize"}
    assert set(errors.__all__) == {n for n in PUBLIC if n not in ("rds", "errors")} - {
        "ArmadilloConnection",
        "ArmadilloDriver",
        "ArmadilloRSession",
        "ArmadilloResult",
        "CoordinatorClient",
    }


def test_the_driver_implements_the_datashield_interfaces():
    assert issubclass(client.ArmadilloDriver, DSDriver)
    assert issubclass(client.ArmadilloConnection, DSConnection)
    assert issubclass(client.ArmadilloResult, DSResult)
    assert issubclass(client.ArmadilloRSession, RSession)
    for base, cls in (
        (DSConnection, client.ArmadilloConnection),
        (DSResult, client.ArmadilloResult),
        (RSession, client.ArmadilloRSession),
    ):
        abstract = {n for n, f in vars(base).items() if inspect.isfunction(f)}
        missing = {n for n in abstract if getattr(cls, n) is getattr(base, n)}
        assert not missing, f"{cls.__name__} lacks {sorted(missing)}"
    assert DSDriver.load_class("gateway.client.ArmadilloDriver") is client.ArmadilloDriver


def test_one_exception_tree():
    classes = [getattr(errors, n) for n in errors.__all__]
    for cls in classes:
        assert issubclass(cls, client.ArmadilloError), cls
        assert issubclass(cls, DSError)
    assert issubclass(client.RDSError, client.ProtocolError)
    for status in (client.BadRequest, client.AuthenticationError, client.AccessDenied):
        assert issubclass(status, client.HTTPStatusError)
    assert [c.status for c in (client.BadRequest, client.AuthenticationError)] == [400, 401]
    assert [c.status for c in (client.AccessDenied, client.NotFound, client.ServerError)] == [
        403,
        404,
        500,
    ]
