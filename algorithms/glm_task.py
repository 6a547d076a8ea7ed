"""The federated GLM as a coordinator task (algorithm name ``glm``): the same maths as
`algorithms.glm`, split into a node step and a central step.

Parameters (a task's ``parameters``)::

    {"table": "demo/cohort/patients", "formula": "y ~ x1 + x2",
     "family": "binomial", "variables": ["y", "x1", "x2"],
     "max_iterations": 25, "tolerance": 1e-8}

- Node step (`node_step`, run by the agent through its own gateway in every round):
  load ``table`` as ``D`` (only ``variables`` if given), check the model with
  ``glmDS1`` (the server's disclosure traps), then ``glmDS2`` at the coefficients the
  coordinator sent (``beta``; zeros in round 0). Returns X'WX, the score, the deviance
  and row counts: sums, no row of data.
- Central step (`CENTRAL.step`, run by the coordinator when a round's runs are in):
  sum the nodes' parts, one Fisher scoring update; another round with the new
  coefficients, or, once the deviance is stable (R's criterion) or after
  ``max_iterations`` rounds, the fit as `GLMResult.to_dict()`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from algorithms import _rexpr as rx
from algorithms._rvalues import decode
from algorithms.errors import DataSHIELDError
from algorithms.regression import (
    FAMILIES,
    check_setup,
    check_step,
    closed_form_aic,
    fit_result,
    has_converged,
    irls_update,
    node_contribution,
    setup_expression,
    step_expression,
)

__all__ = ["CENTRAL", "SYMBOL", "node_step", "parameters", "validate"]

#: The symbol the node loads the table into; the formula's names are its columns.
SYMBOL = "D"
MAX_ITERATIONS = 100


def validate(params: Mapping[str, Any]) -> dict[str, list[str]]:
    """Field errors of a task's parameters ({} when valid)."""
    errors: dict[str, list[str]] = {}

    def bad(key: str, why: str) -> None:
        errors.setdefault(key, []).append(why)

    known = {"table", "formula", "family", "variables", "max_iterations", "tolerance", "beta"}
    for key in sorted(set(params) - known):
        bad(key, "Unknown parameter.")
    if not isinstance(params.get("table"), str) or not params.get("table"):
        bad("table", "Required: the table to fit on, e.g. 'project/table'.")
    formula = params.get("formula")
    if not isinstance(formula, str) or "~" not in formula:
        bad("formula", "Required: a model formula such as 'y ~ x1 + x2'.")
    else:
        try:
            rx.formula(formula)
        except (ValueError, DataSHIELDError) as err:
            bad("formula", str(err))
    if params.get("family", "gaussian") not in FAMILIES:
        bad("family", f"One of {', '.join(FAMILIES)}.")
    variables = params.get("variables")
    if variables is not None and (
        not isinstance(variables, list)
        or not variables
        or not all(isinstance(v, str) and v for v in variables)
    ):
        bad("variables", "A non-empty list of column names.")
    maxit = params.get("max_iterations", 25)
    if isinstance(maxit, bool) or not isinstance(maxit, int) or not 1 <= maxit <= MAX_ITERATIONS:
        bad("max_iterations", f"An integer from 1 to {MAX_ITERATIONS}.")
    tol = params.get("tolerance", 1e-8)
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 < tol < 1:
        bad("tolerance", "A number between 0 and 1.")
    return errors


def parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters with their defaults; ValueError naming every bad field."""
    errors = validate(params)
    if errors:
        raise ValueError("; ".join(f"{k}: {' '.join(v)}" for k, v in sorted(errors.items())))
    return {
        "table": params["table"],
        "formula": rx.formula(params["formula"]),
        "family": params.get("family", "gaussian"),
        "variables": params.get("variables"),
        "max_iterations": int(params.get("max_iterations", 25)),
        "tolerance": float(params.get("tolerance", 1e-8)),
    }


def node_step(
    load: Callable[[str, str, list[str] | None], None],
    aggregate: Callable[[str], Any],
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """One round at one node. ``load(symbol, table, variables)`` and ``aggregate(expr)``
    (returning the JSON-decoded value) are the node's gateway session."""
    p = parameters(params)
    load(SYMBOL, p["table"], p["variables"])
    setup = decode(aggregate(setup_expression(p["formula"], p["family"], SYMBOL, None, None)))
    names = check_setup({"this node": setup})
    beta = params.get("beta")
    if beta is None:
        beta = [0.0] * len(names)
    if len(beta) != len(names) or not all(isinstance(b, int | float) for b in beta):
        raise DataSHIELDError(f"beta must be {len(names)} numbers, one per coefficient")
    step = decode(aggregate(step_expression(p["formula"], p["family"], beta, SYMBOL, None, None)))
    check_step({"this node": step})
    return {"names": names, **node_contribution(step)}


class _Central:
    """The coordinator's step (see `gateway.coordinator.aggregation.Iterative`)."""

    def validate(self, params: Mapping[str, Any]) -> dict[str, list[str]]:
        return validate(params)

    def step(self, results: Mapping[int, Any], params: Mapping[str, Any], state, round: int):
        from gateway.coordinator.aggregation import Done, NextRound

        p = parameters(params)
        names = _same_names(results)
        state = state or {}
        beta = np.asarray(state.get("beta") or [0.0] * len(names), dtype=float)
        ordered = {node: results[node] for node in sorted(results)}
        new_beta, vcov, deviance = irls_update(beta, ordered.values())
        iterations = round + 1
        converged = has_converged(deviance, state.get("deviance"), p["tolerance"])
        if not converged and iterations < p["max_iterations"]:
            following = [float(b) for b in new_beta]
            if not all(math.isfinite(b) for b in following):
                raise DataSHIELDError("the fit diverged (non-finite coefficients)")
            return NextRound({"beta": following}, {"beta": following, "deviance": deviance})
        notes: list[str] = []
        nobs = sum(int(c["nobs"]) for c in ordered.values())
        aic = closed_form_aic(p["family"], deviance, nobs, len(names), None, notes)
        if p["family"] == "poisson":
            notes.append("AIC is not computed by the glm task for poisson (use algorithms.glm)")
        fit = fit_result(
            p["formula"],
            p["family"],
            names,
            new_beta,
            vcov,
            deviance,
            iterations,
            converged,
            ordered,
            aic,
            notes,
        )
        return Done(fit.to_dict())


def _same_names(results: Mapping[int, Any]) -> list[str]:
    names = {node: list(r.get("names") or []) for node, r in results.items()}
    first = next(iter(names.values()))
    if not first or any(n != first for n in names.values()):
        raise DataSHIELDError(
            "the nodes' model matrices have different columns (a factor level missing on "
            f"some node?): {names}"
        )
    return first


CENTRAL = _Central()
