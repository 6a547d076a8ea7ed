"""Central aggregation: algorithm name -> the Python function that combines the node
results of a task into its one result.

A function takes `(results, parameters)` where `results` maps each node id to what that
node returned, and returns something JSON-serialisable. Algorithms without a function
need none: their result is the node results as they are (`{node_id: result}`).

Iterative (multi-round) algorithms have a central step instead: an object with
`step(results, parameters, state, round)` (see `Iterative`) that gets the node results of
one round and answers `NextRound(node_parameters, state)` (the nodes run again with the
task's parameters updated by `node_parameters`) or `Done(result)`. The built-in `glm`
is one (`algorithms.glm_task`); entry points and registered modules may add others:
an object with a `step` method is taken as iterative.

Functions come from three places, later ones winning: the built-ins below, the entry
point group `dsgateway.aggregators` (so the `algorithms` package, or any installed
package, can plug its own in without the coordinator knowing it), and the modules named
in the `AGGREGATOR_MODULES` setting, which call `register` when imported.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol

__all__ = [
    "ENTRY_POINT_GROUP",
    "Aggregator",
    "AggregatorRegistry",
    "Done",
    "Iterative",
    "NextRound",
    "register",
]

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "dsgateway.aggregators"
Aggregator = Callable[[Mapping[int, Any], Mapping[str, Any]], Any]


@dataclass(frozen=True)
class NextRound:
    """Run the nodes again: with the task's parameters updated by `parameters`."""

    parameters: dict[str, Any]
    state: Any = None


@dataclass(frozen=True)
class Done:
    """The task's result."""

    result: Any = field(default=None)


class Iterative(Protocol):
    def step(
        self, results: Mapping[int, Any], parameters: Mapping[str, Any], state: Any, round: int
    ) -> NextRound | Done: ...


# Modules in AGGREGATOR_MODULES register here when imported.
_PENDING: dict[str, Aggregator | Iterative] = {}


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


class _Lazy:
    """An iterative algorithm imported on first use: the coordinator starts without
    numpy/pandas loaded, and a missing `algorithms` package only fails its own tasks."""

    def __init__(self, target: str):
        self.target = target

    def _target(self):
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def step(self, results, parameters, state, round):
        return self._target().step(results, parameters, state, round)

    def validate(self, parameters):
        return self._target().validate(parameters)


BUILTINS: dict[str, Aggregator | Iterative] = {
    "noop": _node_results,
    "echo": _node_results,
    "sum": _sum,
    "count": _count,
    "glm": _Lazy("algorithms.glm_task:CENTRAL"),
}


class AggregatorRegistry:
    def __init__(self, functions: Mapping[str, Aggregator | Iterative] | None = None):
        self._functions: dict[str, Aggregator | Iterative] = dict(functions or {})

    @classmethod
    def default(cls) -> AggregatorRegistry:
        registry = cls(BUILTINS)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                registry.add(ep.name, ep.load())
            except Exception:  # a broken plug-in must not stop the coordinator
                log.exception("aggregator entry point %s could not be loaded", ep.name)
        return registry

    def add(self, name: str, fn: Aggregator | Iterative) -> None:
        if not callable(fn) and not callable(getattr(fn, "step", None)):
            raise TypeError(f"aggregator {name!r} is neither callable nor has a step method")
        self._functions[name] = fn

    def load_module(self, module: str) -> None:
        importlib.import_module(module)
        for name, fn in _PENDING.items():
            self.add(name, fn)

    def names(self) -> list[str]:
        return sorted(self._functions)

    def get(self, name: str) -> Aggregator | Iterative:
        return self._functions.get(name, _node_results)

    def validate(self, name: str, params: Mapping[str, Any]) -> dict[str, list[str]]:
        """Field errors of a task's parameters, if the algorithm checks them ({}: fine)."""
        check = getattr(self.get(name), "validate", None)
        return check(params) if callable(check) else {}

    def is_iterative(self, name: str) -> bool:
        return callable(getattr(self.get(name), "step", None))

    def combine(self, name: str, results: Mapping[int, Any], params: Mapping[str, Any]) -> Any:
        return self.get(name)(results, params)

    def step(
        self,
        name: str,
        results: Mapping[int, Any],
        params: Mapping[str, Any],
        state: Any,
        round: int,
    ) -> NextRound | Done:
        """One round's central step; a single-round aggregator is done at once."""
        fn = self.get(name)
        if not callable(getattr(fn, "step", None)):
            return Done(fn(results, params))
        outcome = fn.step(results, params, state, round)
        if not isinstance(outcome, NextRound | Done):
            raise TypeError(f"{name}: step must return NextRound or Done, not {outcome!r}")
        return outcome
