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

from tests.functional.conftest import PASSWORDS
from tests.functional.rscript import run_r_script

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
