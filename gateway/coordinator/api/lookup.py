"""Loading objects by id for views, with the not-found answer every view gives."""

from __future__ import annotations

from typing import TypeVar

from gateway.coordinator import db
from gateway.coordinator.errors import NotFound

__all__ = ["get_or_404"]

T = TypeVar("T")


def get_or_404(model: type[T], object_id: int, what: str | None = None) -> T:
    obj = db.session().get(model, object_id)
    if obj is None:
        raise NotFound(f"No such {what or model.__name__.lower()}.")
    return obj
