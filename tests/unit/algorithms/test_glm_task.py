"""The central step of the `glm` task (`algorithms.glm_task.CENTRAL`) without R: node
parts computed here with numpy from three slices of one logistic data set. The fit it
reaches must be the pooled maximum-likelihood estimate (the pooled score is zero there)
with the standard errors of the pooled information matrix; the result survives JSON
and `GLMResult.from_dict`. (Against R's glm(): tests/functional/test_coordinator_glm_e2e.py.)"""

import json

import numpy as np
import pytest

from algorithms import GLMResult
from algorithms.glm_task import CENTRAL, validate
from gateway.coordinator.aggregation import Done, NextRound

NAMES = ["(Intercept)", "x1", "x2"]


def _data(seed=7, n=900):
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(n), rng.normal(size=n), rng.uniform(-1, 1, size=n)])
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ [-0.5, 0.8, 1.5])))).astype(float)
    return x, y


def _part(x, y, beta):
    mu = 1 / (1 + np.exp(-(x @ beta)))
    dev = -2 * np.sum(y * np.log(mu) + (1 - y) * np.log(1 - mu))
    n = len(y)
    return {
        "names": NAMES,
        "info": (x.T * (mu * (1 - mu))) @ x,
        "score": x.T @ (y - mu),
        "deviance": float(dev),
        "nobs": n,
        "n_valid": n,
        "n_missing": 0,
        "n_total": n,
    }


def test_the_central_step_reaches_the_pooled_maximum_likelihood_fit():
    x, y = _data()
    slices = {1: slice(0, 200), 2: slice(200, 550), 3: slice(550, 900)}
    params = {"table": "p/t", "formula": "y ~ x1 + x2", "family": "binomial", "tolerance": 1e-12}
    assert validate(params) == {}
    state, beta, round_ = None, np.zeros(3), 0
    while True:
        results = {
            node: {
                k: v.tolist() if isinstance(v, np.ndarray) else v
                for k, v in _part(x[s], y[s], beta).items()
            }
            for node, s in slices.items()
        }
        outcome = CENTRAL.step(json.loads(json.dumps(results)), params, state, round_)
        if isinstance(outcome, Done):
            break
        assert isinstance(outcome, NextRound)
        beta, state, round_ = np.array(outcome.parameters["beta"]), outcome.state, round_ + 1
    value = json.loads(json.dumps(outcome.result))
    fit = GLMResult.from_dict(value)
    assert fit.converged and fit.iterations == round_ + 1 and fit.nobs == 900
    assert list(fit.coefficients.index) == NAMES
    pooled = _part(x, y, fit.params.to_numpy())
    assert np.abs(pooled["score"]).max() < 1e-8
    se = np.sqrt(np.diag(np.linalg.inv(pooled["info"])))
    np.testing.assert_allclose(fit.bse.to_numpy(), se, rtol=1e-6)
    assert fit.deviance == pytest.approx(pooled["deviance"], rel=1e-9)
    assert fit.aic == pytest.approx(fit.deviance + 6)
    assert list(fit.per_node.index) == ["1", "2", "3"]
    assert fit.per_node["nobs"].tolist() == [200, 350, 350]
    assert GLMResult.from_dict(fit.to_dict()).summary() == fit.summary()


def test_nodes_with_different_columns_stop_the_fit():
    x, y = _data()
    a = _part(x[:450], y[:450], np.zeros(3))
    b = dict(_part(x[450:], y[450:], np.zeros(3)), names=["(Intercept)", "x1", "x3"])
    params = {"table": "p/t", "formula": "y ~ x1 + x2", "family": "binomial"}
    with pytest.raises(Exception, match="different columns"):
        CENTRAL.step({1: a, 2: b}, params, None, 0)
