"""The algorithms' combination logic, without R: a `DSSession` of fake nodes whose
connections answer like dsBase (a few lines of numpy per server function, on each
node's own pandas frame). Every expression the algorithms send is first checked with
the gateway's DataSHIELD grammar against dsGatewayBase's declared methods, and answers
come in both JSON spellings (scalars unboxed, as jsonlite's auto_unbox gives them, or
as one-element lists).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import algorithms as ds
from algorithms.regression import saturated_term_expression
from gateway.node import expression as grammar
from gateway.node.methods import parse_methods

ROOT = Path(__file__).resolve().parents[3]
NFILTER_TAB = 3
NFILTER_SUBSET = 3


def _declared_methods() -> tuple[dict, dict]:
    text = (ROOT / "algorithms" / "R" / "dsGatewayBase" / "DESCRIPTION").read_text()
    fields = {}
    for key in ("AggregateMethods", "AssignMethods"):
        m = re.search(rf"^{key}:(.*?)(?=^\S)", text, re.S | re.M)
        fields[key] = m.group(1)
    return (
        dict(parse_methods("dsGatewayBase", fields["AggregateMethods"])),
        dict(parse_methods("dsGatewayBase", fields["AssignMethods"])),
    )


AGGREGATE, ASSIGN = _declared_methods()


# ------------------------------------------------------------------- a fake node


class FakeNodeError(Exception):
    """What datashield-opal raises for a failed command (the message in get_error())."""

    def get_error(self):
        return {"code": 400, "status": "RServerRuntimeError", "message": f"Error : {self.args[0]}"}


def _box(value):
    if isinstance(value, dict):
        return {k: _box(v) for k, v in value.items()}
    if isinstance(value, list):
        return value
    return [value]


class FakeResult:
    def __init__(self, value=None, error=None, polls=0):
        self.value, self.error, self.polls = value, error, polls

    def is_completed(self):
        self.polls -= 1
        return self.polls < 0

    def fetch(self):
        if self.error:
            raise self.error
        return self.value


class FakeNode:
    """One node: a global environment holding D, and dsBase's functions in numpy."""

    def __init__(self, name: str, frame: pd.DataFrame, boxed: bool = False, polls: int = 0):
        self.name, self.boxed, self.polls = name, boxed, polls
        self.env = {"D": frame}
        self.sent: list[str] = []

    # -- the DSConnection interface the algorithms use
    def get_name(self):
        return self.name

    def aggregate(self, expr, asynchronous=True):
        self.sent.append(expr)
        grammar.check_aggregate(expr, AGGREGATE)
        call = grammar.parse(expr)
        try:
            value = getattr(self, call.name.replace(".", "_"))(*self._args(call))
        except FakeNodeError as error:
            return FakeResult(error=error, polls=self.polls)
        return FakeResult(_box(value) if self.boxed else value, polls=self.polls)

    def assign_expr(self, symbol, expr, asynchronous=True):
        self.sent.append(expr)
        grammar.check_assign(expr, ASSIGN)
        try:
            self.env[symbol] = self._eval(grammar.parse(expr))
        except FakeNodeError as error:
            return FakeResult(error=error)
        return FakeResult()

    def rm_symbol(self, name):
        self.env.pop(name, None)

    # -- evaluation
    def _args(self, call):
        positional, named = [], {}
        for arg in call.args:
            value = arg.value if isinstance(arg.value, grammar.Formula) else self._eval(arg.value)
            if arg.name is None:
                positional.append(value)
            else:
                named[getattr(arg.name, "text", None) or arg.name.value] = value
        return [*positional, named] if named else positional

    def _eval(self, node):
        if isinstance(node, grammar.Number):
            return float(node.text)
        if isinstance(node, grammar.String):
            return node.value
        if isinstance(node, grammar.Symbol):
            constants = {"NULL": None, "TRUE": True, "FALSE": False}
            return constants[node.text] if node.text in constants else self.lookup(node.text)
        if isinstance(node, grammar.BinaryChain):
            values = [self._eval(o) for o in node.operands]
            out = values[-1]
            for op, left in zip(reversed(node.ops), reversed(values[:-1]), strict=True):
                out = {
                    "+": np.add,
                    "-": np.subtract,
                    "*": np.multiply,
                    "/": np.divide,
                    "^": np.power,
                }[op](left, out)
            return out
        if isinstance(node, grammar.Call):
            if node.name == "log":
                return np.log(self._eval(node.args[0].value))
            return getattr(self, node.name)(*self._args(node))
        raise AssertionError(f"unexpected node {node}")

    def lookup(self, name: str):
        first, *rest = name.split("$")
        if first not in self.env:
            raise FakeNodeError(f"object '{first}' not found")
        value = self.env[first]
        for part in rest:
            value = value[part].to_numpy()
        return value

    # -- server functions (the contracts of dsBase 6.3)
    def _numeric(self, x):
        return np.asarray(x, dtype=float)

    def meanDS(self, x):
        x = self._numeric(x)
        valid = x[~np.isnan(x)]
        if 0 < valid.size < NFILTER_TAB:
            raise FakeNodeError("FAILED: Nvalid less than nfilter.tab")
        return {
            "EstimatedMean": valid.mean() if valid.size else None,
            "Nmissing": int(x.size - valid.size),
            "Nvalid": int(valid.size),
            "Ntotal": int(x.size),
            "ValidityMessage": "VALID ANALYSIS",
        }

    def varDS(self, x):
        x = self._numeric(x)
        valid = x[~np.isnan(x)]
        return {
            "Sum": valid.sum(),
            "SumOfSquares": (valid**2).sum(),
            "Nmissing": int(x.size - valid.size),
            "Nvalid": int(valid.size),
            "Ntotal": int(x.size),
            "ValidityMessage": "VALID ANALYSIS",
        }

    def lengthDS(self, name):
        return len(self.lookup(name))

    def numNaDS(self, x):
        return int(pd.isna(pd.Series(x)).sum())

    def classDS(self, name):
        value = self.lookup(name)
        if isinstance(value, pd.DataFrame):
            return "data.frame"
        return {"f": "numeric", "i": "integer", "b": "logical"}.get(value.dtype.kind, "factor")

    def dimDS(self, name):
        return list(self.lookup(name).shape)

    def colnamesDS(self, name):
        return list(self.lookup(name).columns)

    def listDisclosureSettingsDS(self):
        return {"nfilter.tab": NFILTER_TAB, "nfilter.subset": NFILTER_SUBSET}

    def quantileMeanDS(self, x):
        x = self._numeric(x)
        valid = x[~np.isnan(x)]
        if 0 < x.size < NFILTER_TAB:
            return None
        q = np.quantile(valid, [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95])
        return [*q.tolist(), valid.mean()]

    @staticmethod
    def _labels(x) -> pd.Series:
        s = pd.Series(x, dtype=object)
        return s.map(
            lambda v: (
                None
                if pd.isna(v)
                else ("TRUE" if v is True else "FALSE")
                if isinstance(v, bool | np.bool_)
                else str(v)
            )
        )

    def asFactorDS1(self, name):
        values = self._labels(self.lookup(name)).dropna().unique().tolist()
        return sorted(
            values, key=lambda v: (float(v),) if re.fullmatch(r"-?[0-9.]+", v) else (0, v)
        )

    def tableDS(self, named):
        def factor(var, levels):
            labels = self._labels(self.lookup(var))
            lv = levels.split(",") if levels else self.asFactorDS1(var)
            return labels, lv

        variables = [(named["rvar.transmit"], named["rvar.all.unique.levels.transmit"])]
        if named["cvar.transmit"]:
            variables.append((named["cvar.transmit"], named["cvar.all.unique.levels.transmit"]))
        factors = [factor(v, lv) for v, lv in variables]
        use_na = named["useNA.transmit"] == "always"

        def key(labels, lv):
            return [lv.index(v) if v in lv else (len(lv) if v is None else -1) for v in labels]

        shape = [len(lv) + 1 for _, lv in factors]
        counts = np.zeros(shape, dtype=int)
        keys = [key(labels, lv) for labels, lv in factors]
        for idx in zip(*keys, strict=True):
            if -1 not in idx:
                counts[idx] += 1
        inner = counts[tuple(slice(0, s - 1) for s in shape)]
        if ((inner > 0) & (inner < NFILTER_TAB)).any():
            return (
                "Failed: at least one cell has a non-zero count less than nfilter.tab i.e. "
                f"{NFILTER_TAB}"
            )
        if not use_na:
            counts = inner
        return counts.tolist()

    def _frame(self, x, y):
        if y is None:
            frame = self.lookup(x)
            return frame.astype(float), list(frame.columns)
        return pd.DataFrame({"x": self.lookup(x), "y": self.lookup(y)}).astype(float), None

    def corDS(self, x, y=None):
        df, _ = self._frame(x, y)
        m = df.dropna().to_numpy()
        p = m.shape[1]
        s = m.sum(axis=0)
        ss = (m * m).sum(axis=0)
        return {
            "sums.of.products": (m.T @ m).tolist(),
            "sums": np.repeat(s.reshape(p, 1), p, axis=1).tolist(),
            "complete.counts": np.full((p, p), len(m)).tolist(),
            "sums.of.squares": np.repeat(ss.reshape(p, 1), p, axis=1).tolist(),
        }

    def covDS(self, x, y, use):
        df, _ = self._frame(x, y)
        p = df.shape[1]
        if df.shape[0] < 10:
            return {"errorMessage": "ERROR: The ratio of the number of variables ..."}
        if use == "casewise.complete":
            m = df.dropna().to_numpy()
            return {
                "sums.of.products": (m.T @ m).tolist(),
                "sums": m.sum(axis=0).reshape(p, 1).tolist(),
                "complete.counts": np.full((p, p), len(m)).tolist(),
                "errorMessage": None,
            }
        m = df.to_numpy()
        present = ~np.isnan(m)
        m0 = np.where(present, m, 0)
        return {
            "sums.of.products": (m0.T @ m0).tolist(),
            "sums": (m0.T @ present.astype(float)).tolist(),
            "complete.counts": (present.T.astype(int) @ present.astype(int)).tolist(),
            "errorMessage": None,
        }

    def histogramDS1(self, x, method, k, noise):
        x = self._numeric(x)
        return [np.nanmin(x) * 0.98, np.nanmax(x) * 1.02]

    def histogramDS2(self, x, num_breaks, lo, hi, method, k, noise):
        x = self._numeric(x)
        x = x[~np.isnan(x)]
        breaks = np.linspace(lo, hi, int(num_breaks) + 1)
        idx = np.clip(np.searchsorted(breaks, x, side="left") - 1, 0, len(breaks) - 2)
        counts = np.bincount(idx, minlength=len(breaks) - 1)
        small = (counts > 0) & (counts < NFILTER_TAB)
        counts[small] = 0
        return {
            "histobject": {"breaks": breaks.tolist(), "counts": counts.tolist()},
            "invalidcells": int(small.sum()),
        }

    # glm: numeric, logical (dummy TRUE) and text (dummies after the first level) terms
    def _design(self, formula):
        y = self._numeric(self.lookup(formula.lhs.text))
        columns, names = [np.ones_like(y)], ["(Intercept)"]
        for item in formula.rhs.items:
            v = self.lookup(item.text)
            if v.dtype.kind in "fi":
                columns.append(v.astype(float))
                names.append(item.text)
            else:
                labels = self._labels(v)
                for level in sorted(labels.dropna().unique())[1:]:
                    columns.append(np.where(labels.isna(), np.nan, (labels == level).astype(float)))
                    names.append(item.text + level)
        X = np.column_stack(columns)
        keep = ~np.isnan(y) & ~np.isnan(X).any(axis=1)
        return y[keep], X[keep], names, len(y)

    def glmDS1(self, formula, family, weights, offset, data):
        _, X, names, _ = self._design(formula)
        saturated = X.shape[1] > 0.33 * X.shape[0]
        return {
            "dimX": list(X.shape),
            "coef.names": names,
            "y.invalid": 0,
            "Xpar.invalid": [0] * X.shape[1],
            "w.invalid": 0,
            "o.invalid": 0,
            "glm.saturation.invalid": int(saturated),
            "errorMessage": "STUDY DATA OR APPLIED MODEL INVALID FOR THIS SOURCE"
            if saturated
            else "No errors",
        }

    def glmDS2(self, formula, family, beta, offset, weights, data):
        y, X, _, total = self._design(formula)
        eta = X @ np.array([float(b) for b in beta.split(",")])
        if family == "gaussian":
            mu, mu_eta, var = eta, np.ones_like(eta), np.ones_like(eta)
            dev = ((y - mu) ** 2).sum()
        elif family == "binomial":
            mu = 1 / (1 + np.exp(-eta))
            mu_eta = var = mu * (1 - mu)
            dev = -2 * (y * np.log(mu) + (1 - y) * np.log(1 - mu)).sum()
        else:
            mu = mu_eta = var = np.exp(eta)
            ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0)
            dev = 2 * (ylogy - (y - mu)).sum()
        w = mu_eta**2 / var
        return {
            "family": {"family": family},
            "info.matrix": (X.T @ (w[:, None] * X)).tolist(),
            "score.vect": (X.T @ (w * (y - mu) / mu_eta)).reshape(-1, 1).tolist(),
            "numsubs": len(y),
            "dev": dev,
            "Nvalid": len(y),
            "Nmissing": total - len(y),
            "Ntotal": total,
            "disclosure.risk": 0,
            "errorMessage2": "No errors",
        }

    def _subset(self, df, v1, v2, op, keep, rm, keep_na):
        frame = self.lookup(df)
        if v1 == "ONES":
            rows = np.ones(len(frame), dtype=bool)
        else:
            a = self.lookup(v1)
            b = float(v2) if re.fullmatch(r"-?[0-9.e+-]+", v2) else self.lookup(v2)
            with np.errstate(invalid="ignore"):
                rows = [
                    np.equal,
                    np.not_equal,
                    np.less,
                    np.less_equal,
                    np.greater,
                    np.greater_equal,
                ][int(op) - 1](a, b)
            rows = np.where(pd.isna(a), keep_na, rows).astype(bool)
        if rows.sum() < NFILTER_SUBSET:
            raise FakeNodeError("Subset to be created is too small (<nfilter.subset)")
        out = frame[rows]
        if keep:
            out = out.iloc[:, [int(c) - 1 for c in keep.split(",")]]
        if rm:
            out = out.drop(columns=out.columns[[int(c) - 1 for c in rm.split(",")]])
        return out

    def dataFrameSubsetDS1(self, *args):
        self._subset(*args)
        return "Subsetting undertaken without problems"

    def dataFrameSubsetDS2(self, *args):
        return self._subset(*args)


class FakeSession:
    """What the algorithms use of datashield.DSSession: .conns and .sessions()."""

    def __init__(self, nodes):
        self.conns = nodes

    def sessions(self):
        return {c.get_name(): None for c in self.conns}


def make_frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = np.round(rng.uniform(20, 80, n), 1)
    bmi = np.round(rng.normal(26, 4, n), 2)
    bmi[rng.random(n) < 0.1] = np.nan
    sex = np.where(rng.random(n) < 0.5, "female", "male")
    smoker = rng.random(n) < 0.3
    outcome = (rng.random(n) < 1 / (1 + np.exp(-(-4 + 0.06 * age)))).astype(int)
    visits = rng.poisson(np.exp(0.5 + 0.01 * age)).astype(int)
    return pd.DataFrame(
        {"age": age, "bmi": bmi, "sex": sex, "smoker": smoker, "outcome": outcome, "visits": visits}
    )


FRAMES = {"a": make_frame(1, 120), "b": make_frame(2, 150), "c": make_frame(3, 90)}


@pytest.fixture(params=[False, True], ids=["unboxed", "boxed"])
def session(request):
    return FakeSession([FakeNode(k, f, boxed=request.param, polls=1) for k, f in FRAMES.items()])


@pytest.fixture
def pooled() -> pd.DataFrame:
    return pd.concat(FRAMES.values(), ignore_index=True)


# ------------------------------------------------------------------- the tests


def test_mean_var_and_counts(session, pooled):
    m = ds.mean(session, "D$bmi")
    assert list(m.index) == ["a", "b", "c", ds.COMBINED]
    assert m.loc[ds.COMBINED, "mean"] == pytest.approx(pooled["bmi"].mean(), rel=1e-13)
    assert m.loc[ds.COMBINED, "n_missing"] == pooled["bmi"].isna().sum()
    v = ds.var(session, "D$bmi", type="combined")
    assert list(v.index) == [ds.COMBINED]
    assert v.loc[ds.COMBINED, "var"] == pytest.approx(pooled["bmi"].var(), rel=1e-12)
    with pytest.raises(ValueError, match="type must be"):
        ds.mean(session, "D$bmi", type="pooled")


def test_quantiles_weighted_by_valid_counts(session, pooled):
    q = ds.quantile_mean(session, "D$bmi")
    assert q.loc[ds.COMBINED, "Mean"] == pytest.approx(pooled["bmi"].mean(), rel=1e-13)
    w = np.array([f["bmi"].notna().sum() for f in FRAMES.values()])
    median = np.array([f["bmi"].median() for f in FRAMES.values()])
    assert q.loc[ds.COMBINED, "50%"] == pytest.approx(w @ median / w.sum(), rel=1e-13)
    assert list(q["n_valid"]) == [*w.tolist(), w.sum()]


def test_dim_summary_and_settings(session, pooled):
    d = ds.dim(session, "D")
    assert d.loc[ds.COMBINED, "rows"] == len(pooled)
    s = ds.summary(session, "D$age")
    assert s.loc[ds.COMBINED, "sd"] == pytest.approx(pooled["age"].std(), rel=1e-12)
    f = ds.summary(session, "D$sex")
    assert f.loc[ds.COMBINED, "female"] == (pooled["sex"] == "female").sum()
    assert list(ds.disclosure_settings(session)["nfilter.tab"]) == [3, 3, 3]


def test_tables_align_levels_and_add_up(session, pooled):
    t = ds.table(session, "D$sex", "D$smoker")
    expected = pd.crosstab(pooled["sex"], pooled["smoker"])
    assert list(t.combined.index) == ["female", "male", ds.NA_LABEL]
    assert list(t.combined.columns) == ["FALSE", "TRUE", ds.NA_LABEL]
    assert t.combined.loc["male", "TRUE"] == expected.loc["male", True]
    assert t.per_node["b"].to_numpy().sum() == len(FRAMES["b"])
    one = ds.table(session, "D$sex", use_na="no")
    assert list(one.combined["count"]) == [
        (pooled["sex"] == "female").sum(),
        (pooled["sex"] == "male").sum(),
    ]


def test_table_refusal_names_every_refusing_node(session):
    with pytest.raises(ds.NodeError) as caught:
        ds.table(session, "D$visits")
    assert caught.value.call == "tableDS"
    assert set(caught.value.failures) == {"a", "b", "c"}
    assert "nfilter.tab i.e. 3" in str(caught.value)


def test_cor_cov_equal_pooled(session, pooled):
    r = ds.cor(session, "D$age", "D$bmi")
    both = pooled[["age", "bmi"]].dropna()
    assert r.combined.iloc[0, 1] == pytest.approx(both.corr().iloc[0, 1], rel=1e-12)
    assert r.n == len(both)
    c = ds.cov(session, "D$age", "D$bmi", use="pairwise")
    assert c.combined.to_numpy() == pytest.approx(
        pooled[["age", "bmi"]].cov().to_numpy(), rel=1e-12
    )
    c = ds.cov(session, "D$age", "D$bmi")
    assert c.combined.to_numpy() == pytest.approx(both.cov().to_numpy(), rel=1e-12)


def test_cov_error_message_becomes_node_error(pooled):
    nodes = [FakeNode("a", FRAMES["a"]), FakeNode("tiny", FRAMES["b"].head(5))]
    with pytest.raises(ds.NodeError, match="failed on node 'tiny': ERROR: The ratio"):
        ds.cov(FakeSession(nodes), "D$age", "D$bmi")


def test_histogram_sums_counts_and_checks_breaks(session, pooled):
    h = ds.histogram(session, "D$age", 4)
    assert h.counts.sum() == len(pooled)
    assert h.breaks[0] == pytest.approx(pooled["age"].min() * 0.98)
    assert h.density @ np.diff(h.breaks) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="method"):
        ds.histogram(session, "D$age", method="exact")
    with pytest.raises(ValueError, match="num_breaks"):
        ds.histogram(session, "D$age", 0)


@pytest.mark.parametrize("family", ["gaussian", "binomial", "poisson"])
def test_glm_reaches_the_pooled_optimum(session, pooled, family):
    response = {"gaussian": "bmi", "binomial": "outcome", "poisson": "visits"}[family]
    fit = ds.glm(session, f"D${response} ~ D$age + D$sex", family)
    assert fit.converged
    data = pooled.dropna(subset=[response, "age"])
    X = np.column_stack([np.ones(len(data)), data["age"], (data["sex"] == "male").astype(float)])
    y = data[response].to_numpy(float)
    assert fit.nobs == len(y)
    beta = fit.params.to_numpy()
    if family == "gaussian":  # least squares in closed form
        expected, *_ = np.linalg.lstsq(X, y, rcond=None)
        assert beta == pytest.approx(expected, rel=1e-10)
        resid = y - X @ expected
        assert fit.dispersion == pytest.approx(resid @ resid / (len(y) - 3), rel=1e-10)
    else:  # the score equations hold on the pooled data
        mu = 1 / (1 + np.exp(-X @ beta)) if family == "binomial" else np.exp(X @ beta)
        assert np.abs(X.T @ (y - mu)).max() < 1e-6
    assert list(fit.coefficients.index) == ["(Intercept)", "D$age", "D$sexmale"]
    assert fit.aic is not None
    if family == "poisson":
        from math import lgamma

        loglik = (
            y * np.log(np.exp(X @ beta)) - np.exp(X @ beta) - [lgamma(v + 1) for v in y]
        ).sum()
        assert fit.aic == pytest.approx(-2 * loglik + 2 * 3, rel=1e-10)
        # the temporary server-side term is gone
        assert all("dsgwGlmSatTerm" not in n.env for n in session.conns)
    if family == "binomial":
        assert fit.aic == pytest.approx(fit.deviance + 6, rel=1e-12)
    ci = fit.conf_int()
    assert (ci["lower"] < fit.params).all() and (fit.params < ci["upper"]).all()
    assert "Number of Fisher Scoring iterations" in str(fit)


def test_glm_setup_refusal_says_why():
    nodes = [FakeNode("a", FRAMES["a"]), FakeNode("small", FRAMES["b"].head(6))]
    with pytest.raises(ds.NodeError) as caught:
        ds.glm(FakeSession(nodes), "D$bmi ~ D$age + D$sex", "gaussian")
    assert caught.value.nodes == ["small"]
    assert "too many parameters for the number of rows (nfilter.glm)" in str(caught.value)
    with pytest.raises(ValueError, match="family"):
        ds.glm(FakeSession(nodes), "D$bmi ~ D$age", "gamma")


def test_saturated_term_expression_is_log_factorial_exact():
    node = FakeNode("a", pd.DataFrame({"y": np.arange(0, 200, dtype=float)}))
    node.assign_expr("T", saturated_term_expression("D$y"))
    y = np.arange(0, 200, dtype=float)
    from math import lgamma

    expected = [(v * math.log(v) if v > 0 else 0.0) - v - lgamma(v + 1) for v in y]
    assert node.env["T"] == pytest.approx(expected, rel=1e-12, abs=3e-12)


def test_subset_then_analyse(session, pooled):
    dims = ds.subset(session, "D", "Old", "D$age", ">=", 60, keep_cols=["age", "bmi"])
    assert dims.loc[ds.COMBINED, "rows"] == (pooled["age"] >= 60).sum()
    assert list(dims["columns"]) == [2, 2, 2, 2]
    m = ds.mean(session, "Old$bmi")
    assert m.loc[ds.COMBINED, "mean"] == pytest.approx(
        pooled.loc[pooled["age"] >= 60, "bmi"].mean()
    )
    with pytest.raises(ds.NodeError, match="Subset to be created is too small"):
        ds.subset(session, "D", "None", "D$age", ">", 1000)
    with pytest.raises(ValueError, match="not both"):
        ds.subset(session, "D", "X", keep_cols=[1], rm_cols=[2])
    with pytest.raises(ValueError, match="operator"):
        ds.subset(session, "D", "X", "D$age", "=~", 3)


def test_node_failures_are_one_error_naming_nodes_and_messages(session):
    with pytest.raises(ds.NodeError) as caught:
        ds.mean(session, "Missing$x")
    err = caught.value
    assert err.failures == {n: "object 'Missing' not found" for n in ("a", "b", "c")}
    assert str(err).startswith("meanDS failed on 3 nodes:")
    with pytest.raises(ds.NodeError) as caught:
        ds.mean(session, "Missing$x", nodes=["b"])
    assert str(caught.value) == "meanDS failed on node 'b': object 'Missing' not found"
    with pytest.raises(ValueError, match="no open connection named 'z'"):
        ds.mean(session, "D$age", nodes=["z"])


def test_refused_before_sending(session):
    for bad in ["D$age; q()", "D age", "", "1D", "D$if"]:
        with pytest.raises(ValueError):
            ds.mean(session, bad)
    with pytest.raises(ValueError, match="no open connection"):
        ds.mean(FakeSession([]), "D$age")
    assert all(not n.sent for n in session.conns)


def test_levels_that_cannot_be_sent_fall_back_to_each_nodes_own():
    frames = {
        "a": pd.DataFrame({"city": ["New York"] * 4 + ["Paris"] * 3}),
        "b": pd.DataFrame({"city": ["Paris"] * 5}),
    }
    session = FakeSession([FakeNode(k, f) for k, f in frames.items()])
    t = ds.table(session, "D$city")
    assert t.combined.loc["Paris", "count"] == 8
    assert t.combined.loc["New York", "count"] == 4
    assert list(t.combined.index)[-1] == ds.NA_LABEL
