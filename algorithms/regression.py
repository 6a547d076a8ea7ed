"""Generalised linear models fitted over all nodes, as dsBaseClient's ``ds.glm`` fits them.

``glmDS1`` checks the model on every node (disclosure traps: too many parameters for
the rows, binary variables with a category below ``nfilter.tab``); then each
iteration sends the current coefficients to every node, whose ``glmDS2`` returns its
information matrix X'WX, score vector X'W(z - eta) and deviance at those coefficients.
Their sums are exactly what the pooled data would give, so Fisher scoring (IRLS) over
the sums reaches the pooled maximum-likelihood estimate:
``beta <- beta + (sum X'WX)^-1 sum score``, until the deviance changes by less than
``epsilon`` relative (R's ``glm`` criterion).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from algorithms import _calls
from algorithms import _rexpr as rx
from algorithms import _rvalues as rv
from algorithms._distributions import normal_quantile, normal_two_sided_p, t_two_sided_p
from algorithms.errors import DataSHIELDError, NodeError

__all__ = ["FAMILIES", "GLMResult", "glm"]

#: The families fitted here and their (canonical) links.
FAMILIES = {"gaussian": "identity", "binomial": "logit", "poisson": "log"}

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_AIC_SYMBOL = "dsgwGlmSatTerm"


@dataclass(frozen=True)
class GLMResult:
    """A fitted model.

    ``coefficients`` is the tidy table of R's ``summary(glm)``: index = coefficient
    names, columns ``Estimate``, ``Std. Error``, ``z value`` and ``Pr(>|z|)`` (``t value``
    and ``Pr(>|t|)`` for gaussian, whose dispersion is estimated). ``cov_params`` is the
    (scaled) covariance matrix of the estimates. ``per_node`` holds each node's rows used
    and its valid / missing / total counts.
    """

    formula: str
    family: str
    link: str
    coefficients: pd.DataFrame
    cov_params: pd.DataFrame
    deviance: float
    df_residual: int
    dispersion: float
    aic: float | None
    iterations: int
    converged: bool
    nobs: int
    n_valid: int
    n_missing: int
    n_total: int
    per_node: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def params(self) -> pd.Series:
        return self.coefficients["Estimate"]

    @property
    def bse(self) -> pd.Series:
        return self.coefficients["Std. Error"]

    def conf_int(self, level: float = 0.95) -> pd.DataFrame:
        """Wald confidence intervals (normal quantiles, as ``ds.glm`` and R's
        ``confint.default``): columns ``lower``, ``upper``."""
        q = normal_quantile(1 - (1 - level) / 2)
        lower, upper = self.params - q * self.bse, self.params + q * self.bse
        return pd.DataFrame({"lower": lower, "upper": upper})

    def summary(self) -> str:
        """The fit as R prints ``summary(glm(...))``."""
        lines = [
            f"Call: glm(formula = {self.formula}, family = {self.family})",
            f"      fitted over {len(self.per_node)} nodes",
            "",
            "Coefficients:",
            self.coefficients.to_string(
                float_format=lambda v: f"{v:.6g}", formatters={self.coefficients.columns[3]: _p}
            ),
            "",
            f"(Dispersion parameter for {self.family} family taken to be {self.dispersion:.6g})",
            "",
            f"Residual deviance: {self.deviance:.6g}  on {self.df_residual}  degrees of freedom",
        ]
        if self.n_total > self.nobs:
            lines.append(f"  ({self.n_total - self.nobs} observations deleted due to missingness)")
        lines.append(f"AIC: {self.aic:.6g}" if self.aic is not None else "AIC: not available")
        lines += ["", f"Number of Fisher Scoring iterations: {self.iterations}"]
        if not self.converged:
            lines.append("WARNING: the fit did not converge")
        lines += self.notes
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        """As JSON: tables as {row: {column: value}} in row order (the result of a
        `glm` coordinator task has this shape; `from_dict` reads it back)."""
        out = {k: getattr(self, k) for k in _SCALARS}
        for key in ("coefficients", "cov_params", "per_node"):
            out[key] = getattr(self, key).to_dict(orient="index")
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, value: dict) -> GLMResult:
        tables = {
            key: pd.DataFrame.from_dict(value[key], orient="index")
            for key in ("coefficients", "cov_params", "per_node")
        }
        tables["per_node"].index.name = "node"
        return cls(**{k: value[k] for k in _SCALARS}, **tables, notes=list(value["notes"]))


_SCALARS = (
    "formula",
    "family",
    "link",
    "deviance",
    "df_residual",
    "dispersion",
    "aic",
    "iterations",
    "converged",
    "nobs",
    "n_valid",
    "n_missing",
    "n_total",
)


def _p(value: float) -> str:
    return "< 2e-16" if value < 2e-16 else f"{value:.3g}"


def glm(
    session,
    formula: str,
    family: str = "gaussian",
    *,
    data: str | None = None,
    weights: str | None = None,
    offset: str | None = None,
    maxit: int = 20,
    epsilon: float = 1e-8,
    nodes: Sequence[str] | None = None,
) -> GLMResult:
    """Fit a gaussian, binomial (logistic) or poisson (log-linear) model over all nodes.

    ``formula``: ``"D$y ~ D$x1 + D$x2"``, or ``"y ~ x1 * x2"`` with ``data="D"``.
    ``weights``, ``offset``: names of server-side variables (``"D$w"``). A node's
    refusal (model invalid for its data) raises `NodeError` naming the node and why.

    >>> fit = glm(session, "D$outcome ~ D$age + D$bmi", "binomial")   # doctest: +SKIP
    >>> fit.coefficients                                              # doctest: +SKIP
                 Estimate  Std. Error    z value      Pr(>|z|)
    (Intercept) -6.128950    0.527470 -11.619430  3.290000e-31
    D$age        0.051126    0.004128  12.385019  3.160000e-35
    D$bmi        0.078345    0.015930   4.918073  8.740000e-07
    >>> print(fit)                                                    # doctest: +SKIP
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    f = rx.formula(formula)

    setup = _calls.aggregate(session, setup_expression(f, family, data, weights, offset), nodes)
    names = check_setup(setup)
    p = len(names)

    beta = np.zeros(p)
    dev_old = math.inf
    converged = False
    iterations = 0
    while iterations < maxit:
        iterations += 1
        expr = step_expression(f, family, beta, data, weights, offset)
        step = {
            n: node_contribution(v)
            for n, v in check_step(_calls.aggregate(session, expr, nodes)).items()
        }
        beta, vcov, deviance = irls_update(beta, step.values())
        if has_converged(deviance, dev_old, epsilon):
            converged = True
            break
        dev_old = deviance

    notes: list[str] = []
    nobs = sum(v["nobs"] for v in step.values())
    aic = closed_form_aic(family, deviance, nobs, p, weights, notes)
    if family == "poisson":
        try:
            saturated = _poisson_saturated(session, f, names, nodes, nobs, data, weights)
            aic = deviance - 2 * saturated + 2 * p
        except (DataSHIELDError, ValueError) as error:
            notes.append(f"AIC not available: {error}")
    return fit_result(
        f, family, names, beta, vcov, deviance, iterations, converged, step, aic, notes
    )


# ------------------------------------------------------------------------------ shared steps
# One implementation for both ways of fitting: `glm` above, over a DataSHIELD session,
# and the coordinator task (`algorithms.glm_task`), whose node step runs the same
# expressions on the node's own gateway and whose central step does the same update.


def setup_expression(
    f: str, family: str, data: str | None, weights: str | None, offset: str | None
) -> str:
    """The ``glmDS1`` call: checks the model against the node's data (disclosure traps)."""
    return rx.call(
        "glmDS1",
        f,
        rx.string(family),
        rx.string(rx.name(weights, "weights")) if weights else rx.NULL,
        rx.string(rx.name(offset, "offset")) if offset else rx.NULL,
        rx.string(rx.name(data, "data")) if data else rx.NULL,
    )


def step_expression(
    f: str,
    family: str,
    beta: Sequence[float] | np.ndarray,
    data: str | None,
    weights: str | None,
    offset: str | None,
) -> str:
    """The ``glmDS2`` call: a node's X'WX, score and deviance at coefficients ``beta``."""
    return rx.call(
        "glmDS2",
        f,
        rx.string(family),
        rx.number_list(list(beta)),
        rx.string(rx.name(offset, "offset")) if offset else rx.NULL,
        rx.string(rx.name(weights, "weights")) if weights else rx.NULL,
        rx.string(rx.name(data, "data")) if data else rx.NULL,
    )


def node_contribution(v: dict) -> dict:
    """One node's ``glmDS2`` answer as plain JSON numbers (what a task run returns)."""
    score = [float(x) for x in rv.numbers(v["score.vect"])]
    p = len(score)
    return {
        "info": rv.matrix(v["info.matrix"], p, p).tolist(),
        "score": score,
        "deviance": rv.number(v["dev"]),
        "nobs": rv.integer(v["numsubs"]),
        "n_valid": rv.integer(v["Nvalid"]),
        "n_missing": rv.integer(v["Nmissing"]),
        "n_total": rv.integer(v["Ntotal"]),
    }


def irls_update(beta: np.ndarray, contributions) -> tuple[np.ndarray, np.ndarray, float]:
    """Fisher scoring over the nodes' sums: (new beta, (X'WX)^-1 at ``beta``, deviance)."""
    contributions = list(contributions)
    info = sum(np.asarray(c["info"], dtype=float) for c in contributions)
    score = sum(np.asarray(c["score"], dtype=float) for c in contributions)
    deviance = float(sum(c["deviance"] for c in contributions))
    try:
        vcov = np.linalg.inv(info)
    except np.linalg.LinAlgError as error:
        raise DataSHIELDError(
            "the information matrix is singular: the model's columns are collinear "
            "over the pooled data"
        ) from error
    return np.asarray(beta, dtype=float) + np.linalg.solve(info, score), vcov, deviance


def has_converged(deviance: float, dev_old: float | None, epsilon: float) -> bool:
    """R's glm criterion: the deviance changed by less than ``epsilon`` relative."""
    if dev_old is None or math.isinf(dev_old):
        return False
    return abs(deviance - dev_old) / (abs(deviance) + 0.1) <= epsilon


def closed_form_aic(family, deviance, nobs, p, weights, notes) -> float | None:
    """AIC from the deviance and n alone: gaussian (without weights) and binomial.
    Poisson needs the nodes' saturated log-likelihood (`_poisson_saturated`)."""
    if family == "gaussian":
        if weights:
            notes.append("AIC needs sum(log(weights)), which no node releases: not reported")
            return None
        return nobs * (math.log(2 * math.pi * deviance / nobs) + 1) + 2 + 2 * p
    if family == "binomial":
        return deviance + 2 * p
    return None


def fit_result(
    f: str,
    family: str,
    names: list[str],
    beta: np.ndarray,
    vcov: np.ndarray,
    deviance: float,
    iterations: int,
    converged: bool,
    per_node_sums: dict,
    aic: float | None,
    notes: list[str],
) -> GLMResult:
    """The summary table from the final coefficients, as R's ``summary(glm)``."""
    per_node = pd.DataFrame.from_dict(
        {
            str(node): {k: c[k] for k in ("nobs", "n_valid", "n_missing", "n_total")}
            for node, c in per_node_sums.items()
        },
        orient="index",
    )
    per_node.index.name = "node"
    p = len(names)
    nobs = int(per_node["nobs"].sum())
    df_residual = nobs - p
    dispersion = deviance / df_residual if family == "gaussian" and df_residual > 0 else 1.0
    se = np.sqrt(np.diag(vcov) * dispersion)
    stat = beta / se
    if family == "gaussian":
        pvalues = [t_two_sided_p(t, df_residual) for t in stat]
        stat_name, p_name = "t value", "Pr(>|t|)"
    else:
        pvalues = [normal_two_sided_p(z) for z in stat]
        stat_name, p_name = "z value", "Pr(>|z|)"
    coefficients = pd.DataFrame(
        {"Estimate": beta, "Std. Error": se, stat_name: stat, p_name: pvalues}, index=names
    )
    return GLMResult(
        formula=f,
        family=family,
        link=FAMILIES[family],
        coefficients=coefficients,
        cov_params=pd.DataFrame(vcov * dispersion, index=names, columns=names),
        deviance=deviance,
        df_residual=df_residual,
        dispersion=dispersion,
        aic=aic,
        iterations=iterations,
        converged=converged,
        nobs=nobs,
        n_valid=int(per_node["n_valid"].sum()),
        n_missing=int(per_node["n_missing"].sum()),
        n_total=int(per_node["n_total"].sum()),
        per_node=per_node,
        notes=notes,
    )


def check_setup(setup: dict) -> list[str]:
    """The coefficient names, or `NodeError` naming each node that refused and why."""
    problems = {}
    for node, v in setup.items():
        message = rv.text(v.get("errorMessage"))
        if message != "No errors":
            problems[node] = _setup_problem(v, message)
    if problems:
        raise NodeError(problems, "glmDS1")
    names = {node: rv.strings(v["coef.names"]) for node, v in setup.items()}
    first = next(iter(names.values()))
    differ = {n: c for n, c in names.items() if c != first}
    if differ:
        raise DataSHIELDError(
            "the nodes' model matrices have different columns (a factor level missing on "
            f"some node?): {names}"
        )
    return first


def _setup_problem(v: dict, message: str | None) -> str:
    reasons = []
    if rv.number(v.get("y.invalid", 0)) > 0:
        reasons.append("the response is binary with a category below nfilter.tab")
    flags = rv.numbers(v.get("Xpar.invalid", []))
    bad = [n for n, flag in zip(rv.strings(v.get("coef.names")), flags, strict=False) if flag > 0]
    if bad:
        reasons.append(f"binary covariate(s) with a category below nfilter.tab: {', '.join(bad)}")
    if rv.number(v.get("w.invalid", 0)) > 0:
        reasons.append("the weights are binary with a category below nfilter.tab")
    if rv.number(v.get("o.invalid", 0)) > 0:
        reasons.append("the offset is binary with a category below nfilter.tab")
    if rv.number(v.get("glm.saturation.invalid", 0)) > 0:
        reasons.append("too many parameters for the number of rows (nfilter.glm)")
    text = message or "model invalid"
    return f"{text} ({'; '.join(reasons)})" if reasons else text


def check_step(step: dict) -> dict:
    """``step`` itself, or `NodeError` for nodes that saw a disclosure risk."""
    risky = {
        node: "; ".join(s for s in rv.strings(v.get("errorMessage2")) if s)
        for node, v in step.items()
        if rv.number(v.get("disclosure.risk", 0)) > 0
    }
    if risky:
        raise NodeError(risky, "glmDS2")
    return step


# ------------------------------------------------------------------------------ AIC


def _op(a: str, op: str, b: str) -> str:
    # DataSHIELD's grammar groups operators right and has no precedence: bracket everything
    return f"({a} {op} {b})"


def _sum(terms: list[str], op: str = "+") -> str:
    out = terms[0]
    for term in terms[1:]:
        out = _op(out, op, term)
    return out


def saturated_term_expression(y: str) -> str:
    """R code for ``y log y - y - lgamma(y + 1)`` per row, with the operators DataSHIELD
    allows: lgamma(y + 1) = lgamma(y + 9) - log((y + 1) ... (y + 8)), and lgamma(w) for
    w >= 9 by Stirling's series to the w^-7 term (absolute error below 3e-12)."""
    w = _op(y, "+", "9")
    stirling = _sum(
        [
            _op(_op(w, "-", "0.5"), "*", f"log({w})"),
            f"(-1 * {w})",
            rx.number(_HALF_LOG_2PI),
            _op("1", "/", _op("12", "*", w)),
            _op("-1", "/", _op("360", "*", _op(w, "^", "3"))),
            _op("1", "/", _op("1260", "*", _op(w, "^", "5"))),
            _op("-1", "/", _op("1680", "*", _op(w, "^", "7"))),
        ]
    )
    shift = f"log({_sum([_op(y, '+', str(i)) for i in range(1, 9)], '*')})"
    lgamma_y1 = _op(stirling, "-", shift)
    # y log y, with 0 log 0 = 0: log(y + 1e-300) is log(y) for y >= 1 and finite at 0
    y_log_y = _op(y, "*", f"log({_op(y, '+', '1e-300')})")
    return _sum([y_log_y, f"(-1 * {y})", f"(-1 * {lgamma_y1})"])


def _poisson_saturated(session, f, names, nodes, nobs, data, weights) -> float:
    """sum(w (y log y - y - log y!)) over the model's rows: each node computes the term
    per row (an assign), then a gaussian glmDS2 at beta = 0 with that term as the
    response returns its weighted sum as the intercept's score."""
    if "(Intercept)" not in names:
        raise ValueError("the model has no intercept")
    lhs, rhs = (part.strip() for part in f.split("~", 1))
    y = f"{data}${lhs}" if data else lhs
    _calls.assign(session, _AIC_SYMBOL, saturated_term_expression(y), nodes)
    try:
        aux = f"{_AIC_SYMBOL} ~ {rhs}"
        w_arg = rx.string(weights) if weights else rx.NULL
        data_arg = rx.string(data) if data else rx.NULL
        # same right-hand side, so the same columns as the model: no glmDS1 needed
        zeros = rx.number_list([0.0] * len(names))
        expr = rx.call("glmDS2", aux, rx.string("gaussian"), zeros, rx.NULL, w_arg, data_arg)
        step = _calls.aggregate(session, expr, nodes)
        check_step(step)
        used = sum(rv.integer(v["numsubs"]) for v in step.values())
        if used != nobs:
            raise ValueError("the offset has missing values where the model's variables do not")
        k = names.index("(Intercept)")
        return float(sum(rv.numbers(v["score.vect"])[k] for v in step.values()))
    finally:
        try:
            _calls.remove(session, _AIC_SYMBOL, nodes)
        except DataSHIELDError:
            pass
