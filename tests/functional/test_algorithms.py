"""The federated algorithms against three real gateways (one per node, each with its own
data drawn with a different seed and size), over HTTP through BOTH Python DataSHIELD
drivers: `datashield-opal` on the gateways' Opal face (results as JSON) and our own
`gateway.client.ArmadilloDriver` on their Armadillo face (results as R's serialize()
bytes). Every test runs once per driver: every combined statistic must equal the same
statistic computed on the concatenated data (numpy/pandas; R's own glm() for the
models), and the nodes must refuse what dsBase refuses. Then:

- the same analyses through the two drivers get the same inputs (each node's answer to
  each call: same structure, same strings, counts and flags, numbers equal to the
  JSON's 15 significant digits) and give the same numbers (1e-10 relative, p values
  of 1e-38 included; counts and labels exactly);
- the calls the algorithms send are those dsBaseClient 6.3.3 sends for the same
  analyses (its `ds.*` functions, read in datashield/dsBaseClient): the Python side
  depends only on the server functions' contract.

Swapping the server package: the issue also asks for the same numbers with the server
package replaced by another DataSHIELD-compatible package of the same signatures. No
such package is available here (dsBase itself cannot be installed: it is not on CRAN
and nothing can be fetched), so that is not run; instead
`test_calls_are_those_dsbaseclient_sends` records every call expression and checks it
against dsBaseClient's, which is what a dsBase server receives from R users.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from datashield import DSLoginBuilder, DSSession

import algorithms as ds
from algorithms._calls import node_message
from algorithms._rvalues import decode
from tests.unit.client.json_shapes import mismatches

pytestmark = [pytest.mark.r, pytest.mark.slow]

NODES = {"node1": (1, 400), "node2": (2, 500), "node3": (3, 600)}  # seed, rows
PASSWORD = "algorithms-pw"
REL = 1e-8  # combined statistics vs the pooled data
REL_GLM = 1e-6  # glm coefficients and standard errors vs R's glm()
# Our driver vs datashield-opal: the nodes' numbers reach the algorithms with all their
# digits (RDS) or 15 significant ones (JSON); glm p values far in the tail amplify that.
REL_DRIVERS = 1e-10

# The largest relative difference seen per quantity, printed at the end (pytest -s).
MAX_DIFF: dict[str, float] = {}


def rel_diff(actual, expected) -> float:
    a = np.asarray(actual, dtype=float)
    e = np.asarray(expected, dtype=float)
    assert a.shape == e.shape, (a.shape, e.shape)
    scale = np.maximum(np.abs(e), 1e-300)
    d = np.where(a == e, 0.0, np.abs(a - e) / scale)
    return float(np.max(d)) if d.size else 0.0


def assert_close(name: str, actual, expected, rel: float = REL) -> None:
    d = rel_diff(actual, expected)
    MAX_DIFF[name] = max(MAX_DIFF.get(name, 0.0), d)
    assert d <= rel, f"{name}: relative difference {d:.3g} > {rel:g}\n{actual}\n{expected}"


@pytest.fixture(scope="module", autouse=True)
def report_differences():
    yield
    if MAX_DIFF:
        print("\nmax relative difference vs the pooled analysis:")
        for name, d in sorted(MAX_DIFF.items()):
            print(f"  {name:<40} {d:.3g}")


# ---------------------------------------------------------------- the federation


class Node:
    def __init__(self, name: str, app, server, data_dir: Path):
        self.name, self.app, self.server, self.data_dir = name, app, server, data_dir

    @property
    def url(self) -> str:
        return self.server.url

    def patients(self) -> pd.DataFrame:
        return pq.read_table(self.data_dir / "demo" / "cohort" / "patients.parquet").to_pandas()


@pytest.fixture(scope="module")
def federation(r_lib, tmp_path_factory):
    from werkzeug.security import generate_password_hash

    from gateway.node.app import close_services, create_app
    from gateway.node.config import NodeConfig
    from gateway.node.exampledata import generate_example_data
    from gateway.node.server import BackgroundServer

    password_hash = generate_password_hash(PASSWORD, method="scrypt")
    nodes = []
    try:
        for name, (seed, rows) in NODES.items():
            work = tmp_path_factory.mktemp(name)
            generate_example_data(work / "data", seed=seed, n=rows)
            config = NodeConfig.from_dict(
                {
                    "data_dir": str(work / "data"),
                    "state_dir": str(work / "state"),
                    "r_lib": r_lib,
                    "users": {"alice": {"password_hash": password_hash, "projects": "*"}},
                    "profiles": {
                        "default": {
                            "packages": ["dsGatewayBase"],
                            "options": {"datashield.seed": 1000 + seed},
                        }
                    },
                    "limits": {"warm_workers": 1, "command_timeout": 60},
                }
            )
            app = create_app(config)
            nodes.append(Node(name, app, BackgroundServer(app).start(), work / "data"))
        yield nodes
    finally:
        for node in nodes:
            node.server.stop()
            close_services(node.app.extensions["dsgateway"])


DRIVERS = {
    "opal": ("datashield_opal.OpalDriver", "demo.cohort.patients"),
    "armadillo": ("gateway.client.ArmadilloDriver", "demo/cohort/patients"),
}


def open_session(federation, driver: str = "opal") -> DSSession:
    """A DataSHIELD session over all nodes with `driver` ("opal" or "armadillo")."""
    class_name, table = DRIVERS[driver]
    builder = DSLoginBuilder()
    for node in federation:
        builder.add(node.name, node.url, user="alice", password=PASSWORD, driver=class_name)
    session = DSSession(builder.build())
    session.open()
    session.assign_table("D", table)
    return session


@pytest.fixture(scope="module", params=list(DRIVERS))
def session(federation, request):
    s = open_session(federation, request.param)
    yield s
    s.close()


@pytest.fixture(scope="module")
def pooled(federation) -> pd.DataFrame:
    return pd.concat([n.patients() for n in federation], ignore_index=True)


@pytest.fixture(scope="module")
def node_data(federation) -> dict[str, pd.DataFrame]:
    return {n.name: n.patients() for n in federation}


# ---------------------------------------------------------------- structure


def test_dimensions_and_column_names(session, pooled, node_data):
    d = ds.dim(session, "D")
    assert list(d.index) == [*NODES, ds.COMBINED]
    assert d.loc[ds.COMBINED, "rows"] == len(pooled)
    assert d.loc[ds.COMBINED, "columns"] == pooled.shape[1]
    for name, frame in node_data.items():
        assert tuple(d.loc[name]) == frame.shape
    names = ds.colnames(session, "D")
    assert names == {name: list(frame.columns) for name, frame in node_data.items()}
    assert ds.length(session, "D$age").loc[ds.COMBINED, "length"] == len(pooled)
    assert ds.classes(session, "D$sex") == {name: ["factor"] for name in NODES}
    settings = ds.disclosure_settings(session)
    assert list(settings["nfilter.tab"]) == [3, 3, 3]


# ---------------------------------------------------------------- means, variances


@pytest.mark.parametrize("variable", ["age", "bmi", "visits", "height"])
def test_mean_and_var_equal_the_pooled_ones(session, pooled, node_data, variable):
    m = ds.mean(session, f"D${variable}")
    x = pooled[variable].astype(float)
    assert_close("mean", m.loc[ds.COMBINED, "mean"], x.mean())
    assert m.loc[ds.COMBINED, "n_valid"] == x.notna().sum()
    assert m.loc[ds.COMBINED, "n_missing"] == x.isna().sum()
    for name, frame in node_data.items():
        assert_close("mean (per node)", m.loc[name, "mean"], frame[variable].astype(float).mean())
    assert list(ds.mean(session, f"D${variable}", type="split").index) == list(NODES)
    assert list(ds.mean(session, f"D${variable}", type="combined").index) == [ds.COMBINED]

    v = ds.var(session, f"D${variable}")
    assert_close("var", v.loc[ds.COMBINED, "var"], x.var(ddof=1))
    assert_close("var: mean", v.loc[ds.COMBINED, "mean"], x.mean())
    for name, frame in node_data.items():
        assert_close("var (per node)", v.loc[name, "var"], frame[variable].astype(float).var())


def test_quantile_mean(session, pooled, node_data):
    q = ds.quantile_mean(session, "D$bmi")
    probs = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]
    for name, frame in node_data.items():
        x = frame["bmi"].dropna().to_numpy()
        # R's default quantile type 7 is numpy's default "linear"
        assert_close("quantile (per node)", q.loc[name, list(ds.QUANTILES)], np.quantile(x, probs))
        assert q.loc[name, "n_valid"] == x.size
    # combined: the mean is the pooled mean; quantiles are dsBaseClient's weighted average
    assert_close("quantile_mean: Mean", q.loc[ds.COMBINED, "Mean"], pooled["bmi"].mean())
    w = np.array([node_data[n]["bmi"].notna().sum() for n in NODES], dtype=float)
    per = np.array([q.loc[n, list(ds.QUANTILES)].to_numpy(float) for n in NODES])
    assert_close(
        "quantile_mean: weighted", q.loc[ds.COMBINED, list(ds.QUANTILES)], w @ per / w.sum()
    )


def test_summary_by_class(session, pooled):
    s = ds.summary(session, "D$bmi")
    assert s.loc[ds.COMBINED, "class"] == "numeric"
    assert s.loc[ds.COMBINED, "length"] == len(pooled)
    assert_close("summary: mean", s.loc[ds.COMBINED, "mean"], pooled["bmi"].mean())
    assert_close("summary: sd", s.loc[ds.COMBINED, "sd"], pooled["bmi"].std())

    f = ds.summary(session, "D$sex")
    counts = pooled["sex"].value_counts()
    assert f.loc[ds.COMBINED, "female"] == counts["female"]
    assert f.loc[ds.COMBINED, "male"] == counts["male"]
    assert f.loc[ds.COMBINED, "length"] == len(pooled)

    d = ds.summary(session, "D")
    assert d.loc[ds.COMBINED, "rows"] == len(pooled)


# ---------------------------------------------------------------- tables


def crosstab(frame: pd.DataFrame, r: str, c: str | None = None) -> pd.DataFrame:
    rows = frame[r].astype(object).where(frame[r].notna(), ds.NA_LABEL).astype(str)
    rows = rows.replace({"True": "TRUE", "False": "FALSE"})
    if c is None:
        return rows.value_counts().rename("count").to_frame()
    cols = frame[c].astype(object).where(frame[c].notna(), ds.NA_LABEL).astype(str)
    return pd.crosstab(rows, cols)


def same_counts(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    expected = expected.reindex(index=actual.index, columns=actual.columns, fill_value=0)
    assert (actual.to_numpy() == expected.to_numpy()).all(), (actual, expected)


def test_one_dimensional_table(session, pooled, node_data):
    t = ds.table(session, "D$smoker")
    assert list(t.combined.index) == ["FALSE", "TRUE", ds.NA_LABEL]
    same_counts(t.combined, crosstab(pooled, "smoker"))
    assert t.combined["count"].sum() == len(pooled)
    for name, frame in node_data.items():
        same_counts(t.per_node[name], crosstab(frame, "smoker"))
    t = ds.table(session, "D$smoker", use_na="no")
    assert list(t.combined.index) == ["FALSE", "TRUE"]


def test_two_dimensional_table(session, pooled, node_data):
    t = ds.table(session, "D$sex", "D$region")
    assert list(t.combined.index) == ["female", "male", ds.NA_LABEL]
    assert list(t.combined.columns)[-1] == ds.NA_LABEL
    same_counts(t.combined, crosstab(pooled, "sex", "region"))
    assert t.combined.to_numpy().sum() == len(pooled)
    for name, frame in node_data.items():
        same_counts(t.per_node[name], crosstab(frame, "sex", "region"))


def test_table_with_small_cells_is_refused_as_the_server_does(session, pooled):
    # visits has counts of 1 or 2 in its tail on every node: dsBase's tableDS answers
    # "Failed: at least one cell has a non-zero count less than nfilter.tab i.e. 3"
    with pytest.raises(ds.NodeError) as caught:
        ds.table(session, "D$visits")
    err = caught.value
    assert err.call == "tableDS"
    assert set(err.nodes) == set(NODES)
    for message in err.failures.values():
        assert message == (
            "Failed: at least one cell has a non-zero count less than nfilter.tab i.e. 3"
        )
    assert "failed on 3 nodes" in str(err)
    # and crossed with another variable as well
    with pytest.raises(ds.NodeError, match=r"nfilter\.tab"):
        ds.table(session, "D$visits", "D$sex")


# ---------------------------------------------------------------- histogram


def r_hist_counts(x: np.ndarray, breaks: np.ndarray) -> np.ndarray:
    """Counts as R's hist(): right-closed bins, the first one closed on the left too."""
    x = x[~np.isnan(x)]
    idx = np.searchsorted(breaks, x, side="left") - 1
    idx[x == breaks[0]] = 0
    return np.bincount(idx, minlength=len(breaks) - 1)[: len(breaks) - 1]


def test_histogram_counts_equal_the_pooled_ones(session, pooled, node_data, tmp_path):
    h = ds.histogram(session, "D$age", 6)
    assert h.breaks.size == 7
    assert h.breaks[0] < pooled["age"].min() and h.breaks[-1] > pooled["age"].max()
    assert all(n == 0 for n in h.invalid_cells.values())
    for name, frame in node_data.items():
        np.testing.assert_array_equal(
            h.per_node[name], r_hist_counts(frame["age"].to_numpy(), h.breaks)
        )
    expected = r_hist_counts(pooled["age"].to_numpy(), h.breaks)
    np.testing.assert_array_equal(h.counts, expected)
    density = expected / (expected.sum() * np.diff(h.breaks))
    assert_close("histogram density", h.density, density)
    frame = h.to_frame()
    assert list(frame.columns) == ["lower", "upper", "mid", *NODES, ds.COMBINED, "density"]

    # plot helper, drawn for real (matplotlib's Agg backend): the combined counts
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = ds.plot_histogram(h)
    try:
        np.testing.assert_array_equal([b.get_height() for b in ax.patches], h.counts)
        path = tmp_path / "age.png"
        ax.figure.savefig(path)
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5_000
    finally:
        plt.close(ax.figure)


def test_histogram_small_bins_are_zeroed_by_the_node(session, node_data):
    h = ds.histogram(session, "D$bmi", 40)  # thin bins: the tails hold 1 or 2 values
    assert sum(h.invalid_cells.values()) > 0
    for name, frame in node_data.items():
        counts = h.per_node[name]
        assert not ((counts > 0) & (counts < 3)).any()
        raw = r_hist_counts(frame["bmi"].to_numpy(dtype=float), h.breaks)
        small = (raw > 0) & (raw < 3)
        assert h.invalid_cells[name] == small.sum()
        np.testing.assert_array_equal(counts, np.where(small, 0, raw))


# ---------------------------------------------------------------- cor, cov


NUMERIC = ["age", "height", "weight", "bmi"]


@pytest.fixture(scope="module")
def numeric_frame(session):
    """N: the numeric columns of D, made on the nodes with a column-only subset."""
    dims = ds.subset(session, "D", "N", keep_cols=NUMERIC)
    assert list(dims["columns"]) == [4, 4, 4, 4]
    return "N"


def test_cor_equals_the_pooled_one(session, pooled, node_data):
    r = ds.cor(session, "D$age", "D$bmi")
    complete = pooled[["age", "bmi"]].dropna()
    assert r.n == len(complete)
    assert_close(
        "cor (two vectors)", r.combined.loc["D$age", "D$bmi"], complete.corr().loc["age", "bmi"]
    )
    for name, frame in node_data.items():
        c = frame[["age", "bmi"]].dropna().corr()
        assert_close("cor (per node)", r.per_node[name].loc["D$age", "D$bmi"], c.loc["age", "bmi"])


def test_cor_and_cov_of_a_data_frame(session, pooled, numeric_frame):
    complete = pooled[NUMERIC].dropna()
    r = ds.cor(session, numeric_frame)
    assert list(r.combined.columns) == NUMERIC
    assert_close("cor (matrix)", r.combined.to_numpy(), complete.corr().to_numpy())
    c = ds.cov(session, numeric_frame)
    assert c.n == len(complete)
    assert_close("cov casewise", c.combined.to_numpy(), complete.cov().to_numpy())
    p = ds.cov(session, numeric_frame, use="pairwise")
    assert_close("cov pairwise", p.combined.to_numpy(), pooled[NUMERIC].cov().to_numpy())
    counts = pooled[NUMERIC].notna().astype(int)
    np.testing.assert_array_equal(p.n.to_numpy(), counts.T @ counts)


def test_cov_of_two_vectors_pairwise(session, pooled):
    c = ds.cov(session, "D$age", "D$bmi", use="pairwise")
    expected = pooled[["age", "bmi"]].cov()
    assert_close("cov pairwise (two vectors)", c.combined.to_numpy(), expected.to_numpy())


# ---------------------------------------------------------------- glm vs R's glm()

MODELS = {
    "gaussian": "D$bmi ~ D$age + D$sex + D$smoker",
    "binomial": "D$outcome ~ D$age + D$bmi + D$smoker",
    "poisson": "D$visits ~ D$age + D$sex",
}


@pytest.fixture(scope="module")
def r_glm(pooled, tmp_path_factory) -> dict:
    """R's glm() and summary() on the pooled data: the reference."""
    if shutil.which("Rscript") is None:
        pytest.fail("R is needed for the reference fits")
    work = tmp_path_factory.mktemp("rglm")
    csv = work / "pooled.csv"
    frame = pooled[["age", "sex", "bmi", "smoker", "visits", "outcome"]].copy()
    frame["smoker"] = frame["smoker"].map({True: "TRUE", False: "FALSE"})
    frame["sex"] = frame["sex"].astype(str)
    frame.to_csv(csv, index=False, na_rep="NA")
    models = ",\n".join(f"{fam} = {f}" for fam, f in MODELS.items())
    script = f"""
    D <- read.csv({json.dumps(str(csv))}, stringsAsFactors = TRUE)
    D$smoker <- as.logical(D$smoker)
    forms <- list({models})
    out <- lapply(names(forms), function(fam) {{
      # converged tightly: R's default (1e-8 on the deviance) leaves its standard errors,
      # taken at the second-to-last iterate, off by up to 1e-4 relative
      fit <- glm(forms[[fam]], family = fam, control = glm.control(epsilon = 1e-14, maxit = 100))
      s <- summary(fit)
      list(names = rownames(s$coefficients), coef = unname(s$coefficients[, 1]),
           se = unname(s$coefficients[, 2]), stat = unname(s$coefficients[, 3]),
           p = unname(s$coefficients[, 4]), deviance = fit$deviance, aic = fit$aic,
           df = fit$df.residual, dispersion = s$dispersion, nobs = nobs(fit))
    }})
    names(out) <- names(forms)
    fit <- glm(bmi ~ age + sex, family = gaussian, data = D, control = glm.control(1e-14, 100))
    out$data <- list(coef = unname(coef(fit)), names = names(coef(fit)))
    cat(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE))
    """
    result = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("family", list(MODELS))
def test_glm_equals_r_glm_on_the_pooled_data(session, r_glm, family):
    fit = ds.glm(session, MODELS[family], family)
    ref = r_glm[family]
    assert fit.converged
    assert list(fit.coefficients.index) == ref["names"]
    assert_close(f"glm {family}: coefficients", fit.params, ref["coef"], REL_GLM)
    assert_close(f"glm {family}: std errors", fit.bse, ref["se"], REL_GLM)
    assert_close(f"glm {family}: z/t values", fit.coefficients.iloc[:, 2], ref["stat"], REL_GLM)
    assert_close(f"glm {family}: p values", fit.coefficients.iloc[:, 3], ref["p"], 1e-5)
    assert_close(f"glm {family}: deviance", fit.deviance, ref["deviance"], REL)
    assert_close(f"glm {family}: AIC", fit.aic, ref["aic"], REL)
    assert_close(f"glm {family}: dispersion", fit.dispersion, ref["dispersion"], REL_GLM)
    assert fit.df_residual == ref["df"]
    assert fit.nobs == ref["nobs"]
    assert fit.per_node["nobs"].sum() == ref["nobs"]
    stat = "t value" if family == "gaussian" else "z value"
    assert stat in fit.coefficients.columns
    text = fit.summary()
    assert "Coefficients:" in text and "AIC:" in text and "Residual deviance" in text


def test_glm_with_a_data_argument(session, r_glm):
    fit = ds.glm(session, "bmi ~ age + sex", "gaussian", data="D")
    assert list(fit.coefficients.index) == r_glm["data"]["names"]
    assert_close("glm (data=) coefficients", fit.params, r_glm["data"]["coef"], REL_GLM)
    # the poisson AIC's server-side term also works with columns of `data`
    fit = ds.glm(session, "visits ~ age + sex", "poisson", data="D")
    assert_close("glm (data=) poisson AIC", fit.aic, r_glm["poisson"]["aic"], REL)
    assert_close("glm (data=) poisson coefficients", fit.params, r_glm["poisson"]["coef"], REL_GLM)


def test_glm_refused_when_a_node_has_too_few_rows_for_the_parameters(session):
    # 3 rows per node with 3 parameters: more than nfilter.glm (0.33) x rows
    ds.subset(session, "D", "Tiny", "D$id", "<=", 3)
    with pytest.raises(ds.NodeError) as caught:
        ds.glm(session, "Tiny$bmi ~ Tiny$age + Tiny$height", "gaussian")
    assert caught.value.call == "glmDS1"
    assert set(caught.value.nodes) == set(NODES)
    assert "nfilter.glm" in str(caught.value)


# ---------------------------------------------------------------- subsets


def test_subset_rows_equal_the_pooled_filter(session, pooled, node_data):
    dims = ds.subset(session, "D", "Old", "D$age", ">=", 65)
    assert dims.loc[ds.COMBINED, "rows"] == (pooled["age"] >= 65).sum()
    for name, frame in node_data.items():
        assert dims.loc[name, "rows"] == (frame["age"] >= 65).sum()
    m = ds.mean(session, "Old$bmi")
    assert_close(
        "mean of a subset",
        m.loc[ds.COMBINED, "mean"],
        pooled.loc[pooled["age"] >= 65, "bmi"].mean(),
    )
    # a variable compared with another one, missing comparisons kept
    dims = ds.subset(session, "D", "Young", "D$bmi", ">", "D$age", keep_na=True)
    expected = (pooled["bmi"] > pooled["age"]) | pooled["bmi"].isna()
    assert dims.loc[ds.COMBINED, "rows"] == expected.sum()
    dims = ds.subset(session, "D", "NoId", rm_cols=["id"])
    assert list(dims["columns"]) == [pooled.shape[1] - 1] * 4


def test_subset_smaller_than_nfilter_subset_is_refused(session, pooled):
    oldest = pooled["age"].max()
    with pytest.raises(ds.NodeError) as caught:
        ds.subset(session, "D", "Few", "D$age", ">=", float(oldest) - 0.05)
    err = caught.value
    assert err.call == "dataFrameSubsetDS1"
    assert "Subset to be created is too small (<nfilter.subset)" in err.failures.values()
    assert "Few" not in session.ls()[next(iter(NODES))]


def test_subset_almost_the_whole_frame_warns_as_dsbase(session, pooled):
    # drop exactly one row on each node: dsBase's warning about differencing attacks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds.subset(session, "D", "AllButOne", "D$id", "!=", 1)
    assert any("difference-based attack" in str(w.message) for w in caught)


# ---------------------------------------------------------------- errors


def test_node_errors_name_the_node_and_the_message(session):
    with pytest.raises(ds.NodeError) as caught:
        ds.mean(session, "Nothing$x")
    err = caught.value
    assert err.nodes == list(NODES)
    assert "meanDS failed on 3 nodes" in str(err)
    with pytest.raises(ds.NodeError, match="failed on node 'node1'"):
        ds.histogram(session, "D$age", 10, method="deterministic", k=1, nodes=["node1"])
    with pytest.raises(ValueError, match="no open connection named 'nodeX'"):
        ds.mean(session, "D$age", nodes=["nodeX"])
    with pytest.raises(ValueError, match="not a server-side object name"):
        ds.mean(session, "D$age; quit()")


# ---------------------------------------------------------------- the two drivers


class RecordedResult:
    def __init__(self, inner, log: list, node: str, kind: str, expr: str):
        self.inner, self.log, self.node, self.kind, self.expr = inner, log, node, kind, expr

    def is_completed(self):
        return self.inner.is_completed()

    def fetch(self):
        try:
            value = self.inner.fetch()
        except Exception as error:
            self.log.append((self.node, self.kind, self.expr, "error", node_message(error)))
            raise
        self.log.append((self.node, self.kind, self.expr, "value", decode(value)))
        return value


class Recorder:
    """A connection that records every call it is asked to send, and the answer."""

    def __init__(self, conn, log: list):
        self._conn, self._log = conn, log

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def aggregate(self, expr, asynchronous=True):
        result = self._conn.aggregate(expr, asynchronous)
        return RecordedResult(result, self._log, self._conn.get_name(), "aggregate", expr)

    def assign_expr(self, symbol, expr, asynchronous=True):
        result = self._conn.assign_expr(symbol, expr, asynchronous)
        return RecordedResult(result, self._log, self._conn.get_name(), f"assign {symbol}", expr)


def recording(session: DSSession) -> list:
    log: list = []
    session.conns = [Recorder(c, log) for c in session.conns]
    return log


# Each analysis: a call of the algorithms; what it returns is compared across drivers.
ANALYSES = {
    "dim": lambda s: ds.dim(s, "D"),
    "colnames": lambda s: ds.colnames(s, "D"),
    "classes": lambda s: ds.classes(s, "D$sex"),
    "length": lambda s: ds.length(s, "D$age"),
    "disclosure settings": lambda s: ds.disclosure_settings(s),
    "mean": lambda s: ds.mean(s, "D$bmi"),
    "var": lambda s: ds.var(s, "D$height"),
    "quantile_mean": lambda s: ds.quantile_mean(s, "D$age"),
    "summary numeric": lambda s: ds.summary(s, "D$weight"),
    "summary factor": lambda s: ds.summary(s, "D$sex"),
    "levels": lambda s: ds.levels(s, "D$region"),
    "table 1-d": lambda s: ds.table(s, "D$smoker").combined,
    "table 2-d": lambda s: ds.table(s, "D$sex", "D$region").combined,
    "histogram": lambda s: ds.histogram(s, "D$age", 5).to_frame(),
    "cor": lambda s: ds.cor(s, "D$age", "D$weight").combined,
    "cov pairwise": lambda s: ds.cov(s, "D$age", "D$weight", use="pairwise").combined,
    "glm gaussian": lambda s: ds.glm(s, MODELS["gaussian"], "gaussian").coefficients,
    "glm binomial": lambda s: ds.glm(s, MODELS["binomial"], "binomial").coefficients,
    "glm poisson": lambda s: ds.glm(s, MODELS["poisson"], "poisson").aic,
    "glm with data": lambda s: ds.glm(s, "bmi ~ age + sex", "gaussian", data="D").params,
    "subset": lambda s: ds.subset(s, "D", "Old", "D$age", ">=", 65),
    "subset columns": lambda s: ds.subset(s, "D", "N", keep_cols=NUMERIC),
    "cov of a frame": lambda s: ds.cov(s, "N").combined,
}

REFUSALS = {
    "table small cells": lambda s: ds.table(s, "D$visits"),
    "small subset": lambda s: ds.subset(s, "D", "Few", "D$id", "<", 2),
    "saturated glm": lambda s: ds.glm(s, "Few2$bmi ~ Few2$age + Few2$height", "gaussian"),
    "unknown object": lambda s: ds.mean(s, "Nothing$x"),
}


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def same_expression(a: str, b: str) -> bool:
    """The same call, numbers aside, which may differ in their last digits: they are
    computed from the nodes' answers (histogram ranges, glm coefficients), which JSON
    carries to 15 significant digits."""
    if _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
        return False
    numbers = zip(_NUMBER.findall(a), _NUMBER.findall(b), strict=True)
    return all(math.isclose(float(x), float(y), rel_tol=1e-10, abs_tol=1e-12) for x, y in numbers)


def same_result(a, b, what: str) -> None:
    if isinstance(a, pd.DataFrame):
        assert list(a.index) == list(b.index) and list(a.columns) == list(b.columns), what
        for column in a.columns:
            x, y = a[column], b[column]
            if pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x):
                assert_close(f"drivers: {what}", y.to_numpy(float), x.to_numpy(float), REL_DRIVERS)
            else:
                assert list(x) == list(y), (what, column)
    elif isinstance(a, pd.Series):
        same_result(a.to_frame(), b.to_frame(), what)
    elif isinstance(a, dict):
        assert a == b, what
    elif isinstance(a, float):
        assert_close(f"drivers: {what}", b, a, REL_DRIVERS)
    else:
        assert a == b, what


@pytest.fixture(scope="module")
def both_drivers(federation):
    sessions = {name: open_session(federation, name) for name in DRIVERS}
    logs = {name: recording(s) for name, s in sessions.items()}
    yield sessions, logs
    for s in sessions.values():
        s.close()


def test_same_inputs_and_numbers_through_both_drivers(both_drivers):
    """Every node answers every call the same way through both faces and drivers (up
    to the JSON's precision), so the algorithms give the same numbers."""
    sessions, logs = both_drivers
    for name, analysis in {**ANALYSES, **REFUSALS}.items():
        for log in logs.values():
            log.clear()
        outcomes = {}
        for driver, s in sessions.items():
            try:
                outcomes[driver] = ("ok", analysis(s))
            except ds.DataSHIELDError as error:
                outcomes[driver] = ("refused", str(error))
        # per node, in the order sent (the nodes are called in parallel)
        opal, ours = (sorted(logs[d], key=lambda r: r[0]) for d in ("opal", "armadillo"))
        # same calls, same fates
        assert [(r[0], r[1], r[3]) for r in ours] == [(r[0], r[1], r[3]) for r in opal], name
        for mine, theirs in zip(ours, opal, strict=True):
            assert same_expression(mine[2], theirs[2]), (name, mine[2], theirs[2])
            # answers to the very same call agree to the JSON's digits; to a call whose
            # numbers differed in their last digits, to 1e-10
            rel = 0.0 if mine[2] == theirs[2] else 1e-10
            differences = mismatches(mine[4], theirs[4], rel=rel)
            assert not differences, (name, mine[2], differences[:5])
        (kind_a, a), (kind_b, b) = outcomes["opal"], outcomes["armadillo"]
        assert kind_a == kind_b, (name, a, b)
        if name in REFUSALS:
            assert kind_a == "refused" and a == b, (name, a, b)
        else:
            same_result(a, b, name)
        if name == "small subset":
            for s in sessions.values():  # a subset of 3 rows per node, for the saturated glm
                ds.subset(s, "D", "Few2", "D$id", "<=", 3)


# ---------------------------------------------------------------- dsBaseClient's calls

# What dsBaseClient 6.3.3 sends for the same analyses (R/ds.*.R in datashield/
# dsBaseClient; DSI deparses a call() and sends a pasted string as it is). Placeholders
# stand for values computed during the analysis: <num> a number, <nums> a quoted
# comma-separated list of numbers, <levels> a quoted comma-separated list of levels.
# Whitespace is not significant (R's deparse() adds spaces the grammar ignores).
# A leading "?" marks dsBaseClient's client-side pre-checks, isDefined() (which sends
# exists("x") or exists("x", D)) and checkClass() (classDS("D$x")): ours leaves it to
# the server function to refuse an unknown object, so they may be absent. A trailing
# "..." means "repeated" (one glmDS2 per iteration).
DSBASECLIENT = {
    # ds.dim: isDefined, checkClass, call("dimDS", x)
    "dim": ['?exists("D")', '?classDS("D")', 'dimDS("D")'],
    # ds.colnames: isDefined, checkClass, call("colnamesDS", x)
    "colnames": ['?exists("D")', '?classDS("D")', 'colnamesDS("D")'],
    # ds.class: isDefined, call('classDS', x)
    "classes": ['?exists("sex", D)', 'classDS("D$sex")'],
    # ds.length: isDefined, checkClass, call("lengthDS", x)
    "length": ['?exists("age", D)', '?classDS("D$age")', 'lengthDS("D$age")'],
    # ds.listDisclosureSettings: call("listDisclosureSettingsDS")
    "disclosure settings": ["listDisclosureSettingsDS()"],
    # ds.mean: isDefined, checkClass, paste0("meanDS(", x, ")")
    "mean": ['?exists("bmi", D)', '?classDS("D$bmi")', "meanDS(D$bmi)"],
    # ds.var: isDefined, checkClass, paste0("varDS(", x, ")")
    "var": ['?exists("height", D)', '?classDS("D$height")', "varDS(D$height)"],
    # ds.quantileMean: isDefined, checkClass, paste0('quantileMeanDS(', x, ')'),
    # call('lengthDS', x), paste0("numNaDS(", x, ")")
    "quantile_mean": [
        '?exists("age", D)',
        '?classDS("D$age")',
        "quantileMeanDS(D$age)",
        'lengthDS("D$age")',
        "numNaDS(D$age)",
    ],
    # summary() of a numeric is ds.class + ds.var + ds.quantileMean (whose lengthDS
    # and numNaDS are skipped: varDS already counted the valid values). dsBaseClient's
    # own ds.summary reports each study apart (isValidDS, lengthDS, quantileMeanDS).
    "summary numeric": ['classDS("D$weight")', "varDS(D$weight)", "quantileMeanDS(D$weight)"],
    # summary() of a factor is ds.class + ds.table + ds.length
    "summary factor": [
        'classDS("D$sex")',
        'asFactorDS1("D$sex")',
        'tableDS(rvar.transmit = "D$sex", cvar.transmit = NULL, stvar.transmit = NULL,'
        " rvar.all.unique.levels.transmit = <levels>, cvar.all.unique.levels.transmit = NULL,"
        " stvar.all.unique.levels.transmit = NULL, exclude.transmit = NULL,"
        ' useNA.transmit = "always", force.nfilter.transmit = NULL)',
        'lengthDS("D$sex")',
    ],
    # levels(): ds.asFactor's first step, call("asFactorDS1", input.var.name)
    "levels": ['asFactorDS1("D$region")'],
    # ds.table: isDefined(rvar), isDefined(cvar), call("asFactorDS1", rvar) [, cvar],
    # then call("tableDS", rvar.transmit = ..., force.nfilter.transmit = ...) with
    # useNA = "always" by default
    "table 1-d": [
        '?exists("smoker", D)',
        'asFactorDS1("D$smoker")',
        'tableDS(rvar.transmit = "D$smoker", cvar.transmit = NULL, stvar.transmit = NULL,'
        " rvar.all.unique.levels.transmit = <levels>, cvar.all.unique.levels.transmit = NULL,"
        " stvar.all.unique.levels.transmit = NULL, exclude.transmit = NULL,"
        ' useNA.transmit = "always", force.nfilter.transmit = NULL)',
    ],
    "table 2-d": [
        '?exists("sex", D)',
        '?exists("region", D)',
        'asFactorDS1("D$sex")',
        'asFactorDS1("D$region")',
        'tableDS(rvar.transmit = "D$sex", cvar.transmit = "D$region", stvar.transmit = NULL,'
        " rvar.all.unique.levels.transmit = <levels>, cvar.all.unique.levels.transmit ="
        " <levels>, stvar.all.unique.levels.transmit = NULL, exclude.transmit = NULL,"
        ' useNA.transmit = "always", force.nfilter.transmit = NULL)',
    ],
    # ds.histogram: isDefined, checkClass, paste0("histogramDS1(", x, ",",
    # method.indicator, ",", k, ",", noise, ")"), then paste0("histogramDS2(", x, ",",
    # num.breaks, ",", min, ",", max, ",", method.indicator, ",", k, ",", noise, ")")
    "histogram": [
        '?exists("age", D)',
        '?classDS("D$age")',
        "histogramDS1(D$age,1,3,0.25)",
        "histogramDS2(D$age,5,<num>,<num>,1,3,0.25)",
    ],
    # ds.cor: isDefined and checkClass of x and y, call("corDS", x, y)
    "cor": [
        '?exists("age", D)',
        '?classDS("D$age")',
        '?exists("weight", D)',
        '?classDS("D$weight")',
        'corDS("D$age", "D$weight")',
    ],
    # ds.cov: the same checks, call("covDS", x, y, naAction)
    "cov pairwise": [
        '?exists("age", D)',
        '?classDS("D$age")',
        '?exists("weight", D)',
        '?classDS("D$weight")',
        'covDS("D$age", "D$weight", "pairwise.complete")',
    ],
    "cov of a frame": ['?exists("N")', '?classDS("N")', 'covDS("N", NULL, "casewise.complete")'],
    # ds.glm: call('glmDS1', formula, family, weights, offset, data), then per
    # iteration call('glmDS2', formula, family, beta.vect.temp, offset, weights, data)
    "glm gaussian": [
        'glmDS1(D$bmi ~ D$age + D$sex + D$smoker, "gaussian", NULL, NULL, NULL)',
        'glmDS2(D$bmi ~ D$age + D$sex + D$smoker, "gaussian", <nums>, NULL, NULL, NULL)...',
    ],
    "glm binomial": [
        'glmDS1(D$outcome ~ D$age + D$bmi + D$smoker, "binomial", NULL, NULL, NULL)',
        'glmDS2(D$outcome ~ D$age + D$bmi + D$smoker, "binomial", <nums>, NULL, NULL, NULL)...',
    ],
    # with data = "D", ds.glm first checks that D exists (isDefined)
    "glm with data": [
        '?exists("D")',
        'glmDS1(bmi ~ age + sex, "gaussian", NULL, NULL, "D")',
        'glmDS2(bmi ~ age + sex, "gaussian", <nums>, NULL, NULL, "D")...',
    ],
    # ds.dataFrameSubset: call("dataFrameSubsetDS1", df.name, V1.name, V2.name, BO.n,
    # keep.cols, rm.cols, keep.NAs), then datashield.assign(newobj, the same call of
    # dataFrameSubsetDS2); V2 is transmitted as text, ">=" is 6, keep.NAs FALSE
    "subset": [
        'dataFrameSubsetDS1("D", "D$age", "65", 6, NULL, NULL, FALSE)',
        'dataFrameSubsetDS2("D", "D$age", "65", 6, NULL, NULL, FALSE)',
    ],
    # column subsets: V1 = V2 = "ONES", "==" (1), keep.cols pasted with ","
    "subset columns": [
        'dataFrameSubsetDS1("D", "ONES", "ONES", 1, "2,4,5,6", NULL, FALSE)',
        'dataFrameSubsetDS2("D", "ONES", "ONES", 1, "2,4,5,6", NULL, FALSE)',
    ],
}

# Calls ours sends besides, each for a reason:
# - subset() given column names asks for the columns first, to transmit the positions
#   (ds.dataFrameSubset's users type positions), and reports the new object's
#   dimensions after (ds.dataFrameSubset checks it with testObjExistsDS/messageDS);
# - cov() of a data frame asks for its column names to label the matrix (ds.cov
#   labels it with the names of the returned matrix);
# - the poisson glm, for its AIC (ds.glm reports none), assigns `dsgwGlmSatTerm` and
#   runs one more glmDS2: not compared ("glm poisson" is absent above).
OURS_FIRST = {"subset columns": ['colnamesDS("D")'], "cov of a frame": ['colnamesDS("N")']}
OURS_AFTER = {"subset": ['dimDS("Old")'], "subset columns": ['dimDS("N")']}

_PLACEHOLDERS = {
    "<num>": r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?",
    "<nums>": r'"-?\d[-\d.eE+,]*"',
    "<levels>": r'"[A-Za-z0-9_.+\-;:,$]+"',
}


def _pattern(template: str) -> tuple[re.Pattern, bool, bool]:
    text = re.sub(r"\s+", "", template)
    optional = text.startswith("?")
    repeat = text.endswith("...")
    text = text.removeprefix("?").removesuffix("...")
    out = re.escape(text)
    for key, regex in _PLACEHOLDERS.items():
        out = out.replace(re.escape(key), regex)
    return re.compile(out), optional, repeat


def test_calls_are_those_dsbaseclient_sends(federation):
    """The call expressions the algorithms send (recorded on one node) are the ones
    dsBaseClient's ds.* functions send for the same analysis, in the same order:
    function, arguments, argument order and transmitted values."""
    s = open_session(federation, "armadillo")
    try:
        log = recording(s)
        assert set(DSBASECLIENT) <= set(ANALYSES)
        for name in (n for n in ANALYSES if n in DSBASECLIENT):  # in order: N before cov(N)
            log.clear()
            ANALYSES[name](s)
            sent = [re.sub(r"\s+", "", r[2]) for r in log if r[0] == "node1"]
            templates = OURS_FIRST.get(name, []) + DSBASECLIENT[name] + OURS_AFTER.get(name, [])
            position = 0
            for pattern, optional, repeat in map(_pattern, templates):
                if position < len(sent) and pattern.fullmatch(sent[position]):
                    position += 1
                    while repeat and position < len(sent) and pattern.fullmatch(sent[position]):
                        position += 1
                elif not optional:
                    got = sent[position] if position < len(sent) else "nothing"
                    pytest.fail(f"{name}: expected {pattern.pattern}, sent {got}")
            assert position == len(sent), (name, "unexpected calls", sent[position:])
    finally:
        s.close()
