"""Central aggregation: algorithm name -> the Python function that combines the node
results of a task into its one result.

A function takes `(results, parameters)` where `results` maps each node id to what that
node returned, and returns something JSON-serialisable. Algorithms without a function
need none: their result is the node results as they are (`{node_id: result}`).

Functions come from three places, later ones winning: the built-ins below, the entry
point group `dsgateway.aggregators` (so the `algorithms` package, or any installed
package, can plug its own in without the coordinator knowing it), and the modules named
in the `AGGREGATOR_MODULES` setting, which call `register` when imported.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

__all__ = ["ENTRY_POINT_GROUP", "Aggregator", "AggregatorRegistry", "register"]

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "dsgateway.aggregators"
Aggregator = Callable[[Mapping[int, Any], Mapping[str, Any]], Any]

# Modules in AGGREGATOR_MODULES register here when imported.
_PENDING: dict[str, Aggregator] = {}


def register(name: str) -> Callable[[Aggregator], Aggregator]:
    """Decorator for a module in AGGREGATOR_MODULES: `@register("glm")`."""

    def deco(fn: Aggregator) -> Aggregator:
        _PENDING[name] = fn
        return fn

    return deco


def _node_results(results: Mapping[int, Any], _params: Mapping[str, Any]) -> Any:
    return {str(node): value for node, value in sorted(results.items())}


def _sum(results: Mapping[int, Any], params: Mapping[str, Any]) -> Any:
    """Adds numbers (or equal-length lists of numbers, element by element)."""
    values = [results[k] for k in sorted(results)]
    if not values:
        return None
    if all(isinstance(v, int | float) for v in values):
        return sum(values)
    if all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1:
        return [sum(col) for col in zip(*values, strict=True)]
    raise ValueError("sum: node results must all be numbers or lists of the same length")


def _count(results: Mapping[int, Any], _params: Mapping[str, Any]) -> Any:
    return len(results)


BUILTINS: dict[str, Aggregator] = {
    "noop": _node_results,
    "echo": _node_results,
    "sum": _sum,
    "count": _count,
}


class AggregatorRegistry:
    def __init__(self, functions: Mapping[str, Aggregator] | None = None):
        self._functions: dict[str, Aggregator] = dict(functions or {})

    @classmethod
    def default(cls) -> AggregatorRegistry:
        registry = cls(BUILTINS)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                registry.add(ep.name, ep.load())
            except Exception:  # a broken plug-in must not stop the coordinator
                log.exception("aggregator entry point %s could not be loaded", ep.name)
        return registry

    def add(self, name: str, fn: Aggregator) -> None:
        if not callable(fn):
            raise TypeError(f"aggregator {name!r} is not callable")
        self._functions[name] = fn

    def load_module(self, module: str) -> None:
        importlib.import_module(module)
        for name, fn in _PENDING.items():
            self.add(name, fn)

    def names(self) -> list[str]:
        return sorted(self._functions)

    def get(self, name: str) -> Aggregator:
        return self._functions.get(name, _node_results)

    def combine(self, name: str, results: Mapping[int, Any], params: Mapping[str, Any]) -> Any:
        return self.get(name)(results, params)
