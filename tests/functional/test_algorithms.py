"""The federated algorithms against three real gateways (one per node, each with its own
data drawn with a different seed and size), through the real `datashield-opal` driver
over HTTP: every combined statistic must equal the same statistic computed on the
concatenated data (numpy/pandas; R's own glm() for the models), and the nodes must
refuse what dsBase refuses.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from datashield import DSLoginBuilder, DSSession
from datashield.interface import DSConnection, DSDriver, DSResult

import algorithms as ds

pytestmark = [pytest.mark.r, pytest.mark.slow]

NODES = {"node1": (1, 400), "node2": (2, 500), "node3": (3, 600)}  # seed, rows
PASSWORD = "algorithms-pw"
REL = 1e-8  # combined statistics vs the pooled data
REL_GLM = 1e-6  # glm coefficients and standard errors vs R's glm()

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


def opal_session(federation) -> DSSession:
    builder = DSLoginBuilder()
    for node in federation:
        builder.add(node.name, node.url, user="alice", password=PASSWORD)
    session = DSSession(builder.build())
    session.open()
    session.assign_table("D", "demo.cohort.patients")
    return session


@pytest.fixture(scope="module")
def session(federation):
    s = opal_session(federation)
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


def test_histogram_counts_equal_the_pooled_ones(session, pooled, node_data):
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

    # plot helper: draws the combined counts on the given axes
    class Axes:
        def __init__(self):
            self.calls = []

        def __getattr__(self, name):
            return lambda *a, **k: self.calls.append((name, a, k))

    ax = Axes()
    assert ds.plot_histogram(h, ax=ax) is ax
    name, args, _ = ax.calls[0]
    assert name == "bar"
    np.testing.assert_array_equal(args[1], h.counts)


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


# ---------------------------------------------------------------- two connection types


class DirectResult(DSResult):
    def __init__(self, command, json_result: bool):
        self.command, self.json_result = command, json_result

    def is_completed(self) -> bool:
        return self.command.status in ("COMPLETED", "FAILED")

    def fetch(self):
        self.command.wait()
        if self.command.status == "FAILED":
            raise RuntimeError(self.command.message)
        return json.loads(self.command.result) if self.json_result else None


class DirectConnection(DSConnection):
    """A second connection type: straight into a node's session manager (no HTTP), with
    results as the session core's JSON."""

    MANAGERS: dict[str, object] = {}

    def __init__(self, name: str, manager):
        from gateway.node.auth import User

        self.name, self.manager = name, manager
        self.session = manager.create(User("alice"), "default")

    def get_name(self):
        return self.name

    def has_session(self):
        return True

    def start_session(self, asynchronous=True):
        return None

    def is_session_started(self):
        return True

    def get_session(self):
        return None

    def assign_table(
        self,
        symbol,
        table,
        variables=None,
        missings=False,
        identifiers=None,
        id_name=None,
        asynchronous=True,
    ):
        return DirectResult(self.session.assign_table(symbol, table, variables), False)

    def assign_expr(self, symbol, expr, asynchronous=True):
        return DirectResult(self.session.assign_expr(symbol, expr), False)

    def aggregate(self, expr, asynchronous=True):
        return DirectResult(self.session.aggregate(expr, fmt="json"), True)

    def list_symbols(self):
        return self.session.symbols()

    def rm_symbol(self, name):
        self.session.remove_symbol(name)

    def keep_alive(self):
        pass

    def disconnect(self):
        self.manager.close(self.session.id)


class DirectDriver(DSDriver):
    @classmethod
    def new_connection(cls, args, restore=None):
        return DirectConnection(args.name, DirectConnection.MANAGERS[args.url])


def test_same_numbers_through_two_connection_types(federation, session):
    builder = DSLoginBuilder()
    for node in federation:
        DirectConnection.MANAGERS[f"direct://{node.name}"] = node.app.extensions[
            "dsgateway"
        ].sessions
        builder.add(
            node.name,
            f"direct://{node.name}",
            user="alice",
            password=PASSWORD,
            driver=f"{__name__}.DirectDriver",
        )
    direct = DSSession(builder.build())
    direct.open()
    try:
        direct.assign_table("D", "demo/cohort/patients")
        calls = [
            lambda s: ds.mean(s, "D$bmi"),
            lambda s: ds.var(s, "D$height"),
            lambda s: ds.quantile_mean(s, "D$age"),
            lambda s: ds.table(s, "D$sex", "D$region").combined,
            lambda s: ds.histogram(s, "D$age", 5).to_frame(),
            lambda s: ds.cor(s, "D$age", "D$weight").combined,
            lambda s: ds.cov(s, "D$age", "D$weight", use="pairwise").combined,
            lambda s: ds.glm(s, MODELS["binomial"], "binomial").coefficients,
            lambda s: ds.glm(s, MODELS["poisson"], "poisson").aic,
            lambda s: ds.subset(s, "D", "Old", "D$age", ">=", 65),
        ]
        for call in calls:
            a, b = call(session), call(direct)
            if isinstance(a, pd.DataFrame):
                pd.testing.assert_frame_equal(a, b, check_exact=True)
            else:
                assert a == b or (math.isnan(a) and math.isnan(b))
        with pytest.raises(ds.NodeError) as caught:
            ds.table(direct, "D$visits")
        assert set(caught.value.failures.values()) == {
            "Failed: at least one cell has a non-zero count less than nfilter.tab i.e. 3"
        }
        with pytest.raises(ds.NodeError) as caught:
            ds.subset(direct, "D", "Few", "D$id", "<", 2)
        assert set(caught.value.failures.values()) == {
            "Subset to be created is too small (<nfilter.subset)"
        }
    finally:
        direct.close()
