"""The R values `gateway.client.rds.unserialize` reads: `RObject` and `REnvironment`.

Kept apart from the reader so that `gateway.client.rjson` (R values to the Python values
the Opal face's JSON gives) uses the same model without importing the reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["REnvironment", "RObject"]


@dataclass(eq=False, repr=False)
class RObject:
    """One R value.

    ``type`` is R's ``typeof()`` (``"logical"``, ``"integer"``, ``"double"``,
    ``"complex"``, ``"character"``, ``"raw"``, ``"list"``, ``"expression"``,
    ``"symbol"``, ``"pairlist"``, ``"language"``, ``"closure"``, ``"builtin"``,
    ``"special"``, ``"bytecode"``, ``"promise"``, ``"externalptr"``, ``"weakref"``,
    ``"S4"``). ``value``: for vectors a list of elements (NA is None; a double NaN is
    ``math.nan``); for a symbol its name; for a pairlist or call a list of
    ``(tag, value)`` pairs; for a closure ``{"formals", "body", "env"}``.
    ``attributes`` maps attribute names to values (RObject or None).
    """

    type: str
    value: Any = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def attr(self, name: str) -> list | None:
        """The elements of an attribute that is a vector (e.g. ``"names"``), or None."""
        value = self.attributes.get(name)
        return value.value if isinstance(value, RObject) else None

    @property
    def r_class(self) -> list[str]:
        """The class attribute (empty when the object has none: implicit classes)."""
        return [c for c in (self.attr("class") or []) if c is not None]

    @property
    def names(self) -> list | None:
        return self.attr("names")

    def __len__(self) -> int:
        return len(self.value) if isinstance(self.value, list) else 1

    def __repr__(self) -> str:
        shown = self.value
        if isinstance(shown, list) and len(shown) > 6:
            shown = [*shown[:6], "..."]
        attrs = f", attributes={sorted(self.attributes)}" if self.attributes else ""
        return f"RObject({self.type!r}, {shown!r}{attrs})"


@dataclass(eq=False, repr=False)
class REnvironment(RObject):
    """An environment: ``kind`` is ``"global"``, ``"base"``, ``"empty"``,
    ``"namespace"`` or ``"package"`` (known by ``name``, not written out), or
    ``"local"`` (its variables in ``value``, a dict, and its enclosing environment)."""

    kind: str = "local"
    name: str | None = None
    enclos: Any = None
    locked: bool = False

    def __repr__(self) -> str:
        return f"REnvironment({self.kind!r}{', ' + repr(self.name) if self.name else ''})"
