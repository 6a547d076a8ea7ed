"""OPT-IN: the REAL DataSHIELD R packages (DSI, DSMolgenisArmadillo, DSOpal + opalr,
dsBaseClient) against our system, when DSGATEWAY_REAL_R_LIB names an R library that
holds them (scripts/install-real-r-clients.sh builds one; docs/guides/r-users.md).
Skipped otherwise: they come from CRAN/GitHub, which our test machines cannot reach,
and nothing of them is in this repository.

- test_real_r_clients.R: both drivers logged in to one gateway, dsBaseClient's ds.*
  functions, every number against plain R on the pooled rows;
- the demo's study.R (`dsgateway demo`), through the coordinator's relay with relay
  tokens, its numbers against the Python study of the same run and pandas."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.functional.conftest import PASSWORDS, make_token
from tests.functional.rscript import run_r_script
from tests.functional.test_relay_opal_cookie import relay, relay_token  # noqa: F401 (fixture)

LIB_ENV = "DSGATEWAY_REAL_R_LIB"
PACKAGES = ("DSI", "DSMolgenisArmadillo", "DSOpal", "opalr", "dsBaseClient")
SCRIPT = Path(__file__).with_suffix(".R")


def _real_library() -> str | None:
    """The library named by DSGATEWAY_REAL_R_LIB if R finds every package there."""
    lib = os.environ.get(LIB_ENV)
    if not lib:
        return None
    check = (
        f".libPaths(c({json.dumps(lib)}, .libPaths())); "
        f"ok <- all(sapply(c({', '.join(json.dumps(p) for p in PACKAGES)}), "
        "requireNamespace, quietly = TRUE)); quit(status = if (ok) 0 else 1)"
    )
    done = subprocess.run(["Rscript", "--vanilla", "-e", check], capture_output=True)
    if done.returncode != 0:
        pytest.fail(f"{LIB_ENV}={lib} lacks one of {', '.join(PACKAGES)}")
    return lib


REAL_LIB = _real_library()
pytestmark = [
    pytest.mark.r,
    pytest.mark.slow,
    pytest.mark.skipif(
        REAL_LIB is None,
        reason=f"opt-in: set {LIB_ENV} to an R library with the real DataSHIELD "
        "clients (scripts/install-real-r-clients.sh)",
    ),
]


@pytest.fixture
def real_r(monkeypatch):
    """R finds the real packages first (R_LIBS is read by Rscript --vanilla too)."""
    libs = [REAL_LIB, os.environ.get("R_LIBS")]
    monkeypatch.setenv("R_LIBS", os.pathsep.join(lib for lib in libs if lib))


def test_dsbaseclient_over_both_drivers_equals_pooled_r(gateway, real_r, tmp_path):
    table = gateway.data_dir / "demo" / "cohort" / "patients.parquet"
    pooled = tmp_path / "patients.csv"
    pd.read_parquet(table).to_csv(pooled, index=False, na_rep="NA")
    env = {
        "DSG_URL": gateway.url,
        # opalr refuses plain http to any host but "localhost"
        "DSG_OPAL_URL": gateway.url.replace("127.0.0.1", "localhost"),
        "DSG_USER": "alice",
        "DSG_PASSWORD": PASSWORDS["alice"],
        "DSG_PROJECT": "demo",
        "DSG_FOLDER": "cohort",
        "DSG_TABLE": "patients",
        "DSG_POOLED": str(pooled),
    }
    run_r_script(SCRIPT, env, min_passed=29, timeout=600)


def test_the_demos_r_study_through_the_relay(real_r, tmp_path, monkeypatch):
    from gateway.demo.registry import pooled_registries
    from gateway.demo.run import run_demo

    r_results = tmp_path / "r-study.json"
    monkeypatch.setenv("DSG_R_RESULTS", str(r_results))
    lines: list[str] = []
    python = run_demo(tmp_path / "demo", echo=lines.append, progress=False)
    output = "\n".join(lines)
    assert "The R study failed" not in output, output[-4000:]
    assert r_results.exists(), output[-4000:]
    r = json.loads(r_results.read_text())

    # R (DSI + DSMolgenisArmadillo + dsBaseClient) = Python (datashield) = pooled
    data = pooled_registries(2020)
    assert r["dims"] == [len(data), 8]
    assert r["age_mean"] == pytest.approx(data["age"].mean(), rel=1e-9)
    assert r["age_mean"] == pytest.approx(python["numeric"]["age"]["combined"]["mean"], rel=1e-9)
    assert r["edss_var"] == pytest.approx(data["edss"].var(), rel=1e-9)
    # ds.table: station-c refuses (cells of 1 and 2), the others are combined
    ab = data[data["station"] != "station-c"]
    counts = pd.crosstab(ab["dmt"], ab["severe"])  # rows: the levels in order; no NA
    assert np.array(r["table"])[:-1, :2].tolist() == counts[[0.0, 1.0]].to_numpy().tolist()
    # ds.histogram works now that the demo's stations set datashield.seed: each station's
    # counts in the combined bins, its small cells (1 or 2) zeroed, then summed
    breaks = np.array(r["histogram"]["breaks"])
    expected = np.zeros(len(breaks) - 1, dtype=int)
    for _, rows in data.groupby("station"):
        counts = pd.cut(rows["age"].dropna().astype(float), breaks, include_lowest=True)
        station = counts.value_counts(sort=False).to_numpy().copy()
        station[(station > 0) & (station < 3)] = 0  # nfilter.tab = 3
        expected += station
    assert r["histogram"]["counts"] == expected.tolist()
    tidy = python["glm"]["tidy"]
    assert r["glm"]["names"] == list(tidy)
    for name, estimate, se in zip(*(r["glm"][k] for k in ("names", "estimate", "se")), strict=True):
        assert estimate == pytest.approx(tidy[name]["estimate"], rel=1e-6)
        assert se == pytest.approx(tidy[name]["se"], rel=1e-6)


# ---------------------------------------------------------------- the R image's runner


RUNNER = Path(__file__).resolve().parents[2] / "client_images" / "r" / "runner.R"
RUNNER_SCRIPT = """\
suppressPackageStartupMessages(library(dsBaseClient))
options(datashield.progress = FALSE)
m <- ds.mean("D$age", type = "combine", datasources = conns)$Global.Mean
g <- ds.glm("bmi ~ age + sex", data = "D", family = "gaussian", datasources = conns,
            viewIter = FALSE)$coefficients
# 2D ds.table parses code made from the server names (node-a would not parse)
t <- ds.table("D$sex", "D$outcome", datasources = conns)$output.list
t <- t$TABLES.COMBINED_all.sources_counts
write_json("pooled.json", list(
  servers = as.list(names(conns)), stations = as.list(stations),
  table = list(rows = rownames(t), columns = colnames(t), counts = unname(t)),
  mean = unname(m[1, "EstimatedMean"]), n_valid = unname(m[1, "Nvalid"]),
  glm = list(names = rownames(g), estimate = unname(g[, "Estimate"]),
             se = unname(g[, "Std. Error"]))
))
"""


def run_runner(tmp_path: Path, env: dict[str, str], script: str = RUNNER_SCRIPT):
    """client_images/r/runner.R on this host, as the image's ENTRYPOINT runs it, with the
    contract's environment (docs/client-images.md) and /input, /output in tmp_path."""
    inputs, outputs = tmp_path / "input", tmp_path / "output"
    inputs.mkdir()
    outputs.mkdir()
    (inputs / "analysis.R").write_text(script)
    parameters = {"script": "analysis.R", "tables": {"D": "demo/cohort/patients"}}
    (inputs / "parameters.json").write_text(json.dumps(parameters))
    done = subprocess.run(
        ["Rscript", str(RUNNER)],
        env={
            **os.environ,
            "DSGATEWAY_PROFILE": "default",
            "DSGATEWAY_INPUT": str(inputs),
            "DSGATEWAY_OUTPUT": str(outputs),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return done, outputs


def pooled_ols(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """bmi ~ age + sex by least squares on complete rows: estimates, standard errors
    (what ds.glm's gaussian fit equals)."""
    rows = rows.dropna(subset=["bmi", "age", "sex"])
    x = np.column_stack([np.ones(len(rows)), rows["age"], (rows["sex"] == "male").astype(float)])
    y = rows["bmi"].to_numpy()
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ beta
    sigma2 = residual @ residual / (len(y) - x.shape[1])
    return beta, np.sqrt(np.diag(sigma2 * np.linalg.inv(x.T @ x)))


def check_pooled(out: dict, rows: pd.DataFrame) -> None:
    assert out["n_valid"] == int(rows["age"].notna().sum())
    assert out["mean"] == pytest.approx(float(rows["age"].mean()), rel=1e-10)
    estimate, se = pooled_ols(rows)
    assert out["glm"]["names"] == ["(Intercept)", "age", "sexmale"]
    assert out["glm"]["estimate"] == pytest.approx(estimate.tolist(), rel=1e-6)
    assert out["glm"]["se"] == pytest.approx(se.tolist(), rel=1e-6)
    # sex x outcome, combined: every level of each, then dsBaseClient's NA row/column
    counts = pd.crosstab(rows["sex"], rows["outcome"])
    table = out["table"]
    assert table["rows"] == ["female", "male", "NA"]
    assert table["columns"] == ["0", "1", "NA"]
    assert [row[:2] for row in table["counts"][:2]] == counts.to_numpy().tolist()


def test_the_r_image_runner_opens_dsi_at_its_gateway(gateway, real_r, tmp_path):
    """runner.R's DSI path with the real DSI + DSMolgenisArmadillo: one connection,
    `node`, to DSGATEWAY_URL with the run's token, `D` assigned; dsBaseClient on it."""
    token = make_token(sub="alice", projects=["demo"])
    done, outputs = run_runner(tmp_path, {"DSGATEWAY_URL": gateway.url, "DSGATEWAY_TOKEN": token})
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads((outputs / "pooled.json").read_text())
    assert out["servers"] == ["node"] and out["stations"] == []
    check_pooled(out, pd.read_parquet(gateway.data_dir / "demo/cohort/patients.parquet"))


def relay_stations(relay) -> list[dict]:  # noqa: F811 (the fixture imported above)
    """DSGATEWAY_STATIONS as the node writes it for a relay run (contract.Station)."""
    return [
        {
            "name": name,
            "node_id": node_id,
            "url": relay.listener.url,
            "opal_url": f"{relay.listener.url}/nodes/{node_id}",
            "token": relay_token(relay, node_id),
        }
        for name, node_id in (("node-a", relay.node_a), ("node-b", relay.node_b))
    ]


def test_the_r_image_runner_opens_every_station_through_the_relay(
    relay,  # noqa: F811 (the fixture imported above)
    gateway,
    real_r,
    tmp_path,
):
    """runner.R's DSI path over DSGATEWAY_STATIONS: one DSI connection per station
    through the relay (each its relay token), `D` assigned at each; ds.mean and ds.glm
    over `conns` = the pooled rows (both stations are the same gateway here: the table
    twice)."""
    env = {
        "DSGATEWAY_URL": gateway.url,
        "DSGATEWAY_TOKEN": make_token(sub="alice", projects=["demo"]),
        "DSGATEWAY_RELAY_URL": relay.listener.url,
        "DSGATEWAY_STATIONS": json.dumps(relay_stations(relay)),
    }
    done, outputs = run_runner(tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads((outputs / "pooled.json").read_text())
    # `stations` as the task names them (dsg_*(station = ) takes them); the DSI
    # connections named so that dsBaseClient can parse code made of them
    assert out["stations"] == ["node-a", "node-b"]
    assert out["servers"] == ["node_a", "node_b"]
    rows = pd.read_parquet(gateway.data_dir / "demo/cohort/patients.parquet")
    check_pooled(out, pd.concat([rows, rows]))


def test_a_failing_r_image_run_logs_each_stations_error(
    relay,  # noqa: F811 (the fixture imported above)
    gateway,
    real_r,
    tmp_path,
):
    """DSI stops with "There are some DataSHIELD errors, list them with
    datashield.errors()", which nobody can call once the run is over: the runner prints
    them, station by station, and exits 1."""
    env = {
        "DSGATEWAY_URL": gateway.url,
        "DSGATEWAY_TOKEN": make_token(sub="alice", projects=["demo"]),
        "DSGATEWAY_STATIONS": json.dumps(relay_stations(relay)),
    }
    script = "DSI::datashield.aggregate(conns, quote(nosuchDS(D)))\n"
    done, outputs = run_runner(tmp_path, env, script)
    assert done.returncode == 1, done.stdout + done.stderr
    log = done.stderr
    assert "Error: There are some DataSHIELD errors" in log, log
    assert "DataSHIELD errors of the last DSI call (DSI::datashield.errors()):" in log, log
    for server in ("node_a", "node_b"):
        line = next(x for x in log.splitlines() if x.startswith(f"  {server}: "))
        assert "nosuchDS" in line, log
    assert list(outputs.iterdir()) == []
