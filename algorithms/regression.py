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
    fam = rx.string(family)
    data_arg = rx.string(rx.name(data, "data")) if data else rx.NULL
    w_arg = rx.string(rx.name(weights, "weights")) if weights else rx.NULL
    o_arg = rx.string(rx.name(offset, "offset")) if offset else rx.NULL

    setup = _calls.aggregate(session, rx.call("glmDS1", f, fam, w_arg, o_arg, data_arg), nodes)
    names = _check_setup(setup)
    p = len(names)

    beta = np.zeros(p)
    dev_old = math.inf
    converged = False
    iterations = 0
    while iterations < maxit:
        iterations += 1
        expr = rx.call("glmDS2", f, fam, rx.number_list(beta), o_arg, w_arg, data_arg)
        step = _calls.aggregate(session, expr, nodes)
        _check_step(step)
        info = sum(rv.matrix(v["info.matrix"], p, p) for v in step.values())
        score = sum(rv.numbers(v["score.vect"]) for v in step.values())
        deviance = sum(rv.number(v["dev"]) for v in step.values())
        try:
            vcov = np.linalg.inv(info)
        except np.linalg.LinAlgError as error:
            raise DataSHIELDError(
                "the information matrix is singular: the model's columns are collinear "
                "over the pooled data"
            ) from error
        beta = beta + np.linalg.solve(info, score)
        if abs(deviance - dev_old) / (abs(deviance) + 0.1) <= epsilon:
            converged = True
            break
        dev_old = deviance

    per_node = pd.DataFrame.from_dict(
        {
            node: {
                "nobs": rv.integer(v["numsubs"]),
                "n_valid": rv.integer(v["Nvalid"]),
                "n_missing": rv.integer(v["Nmissing"]),
                "n_total": rv.integer(v["Ntotal"]),
            }
            for node, v in step.items()
        },
        orient="index",
    )
    per_node.index.name = "node"
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
    notes: list[str] = []
    aic = _aic(session, family, f, names, nodes, deviance, nobs, data, weights, notes)
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


def _check_setup(setup: dict) -> list[str]:
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


def _check_step(step: dict) -> None:
    risky = {
        node: "; ".join(s for s in rv.strings(v.get("errorMessage2")) if s)
        for node, v in step.items()
        if rv.number(v.get("disclosure.risk", 0)) > 0
    }
    if risky:
        raise NodeError(risky, "glmDS2")


# ------------------------------------------------------------------------------ AIC


def _aic(session, family, f, names, nodes, deviance, nobs, data, weights, notes):
    """AIC as R's glm reports it, from what the nodes release.

    gaussian: from the deviance and n (without weights: R's needs sum(log(w)));
    binomial (0/1 responses; integer weights): the deviance + 2p; poisson: needs the
    saturated log-likelihood sum(w (y log y - y - log y!)), which `_poisson_saturated`
    asks the nodes for."""
    p = len(names)
    if family == "gaussian":
        if weights:
            notes.append("AIC needs sum(log(weights)), which no node releases: not reported")
            return None
        return nobs * (math.log(2 * math.pi * deviance / nobs) + 1) + 2 + 2 * p
    if family == "binomial":
        return deviance + 2 * p
    try:
        saturated = _poisson_saturated(session, f, names, nodes, nobs, data, weights)
    except (DataSHIELDError, ValueError) as error:
        notes.append(f"AIC not available: {error}")
        return None
    return deviance - 2 * saturated + 2 * p


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
        _check_step(step)
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
