"""`make demo` as a newcomer runs it, from a clean clone on a machine without the
project's virtualenv: a fresh `git clone` of this repository's HEAD, then `make demo`
there, which makes its own .venv and .rlib (pip uses this machine's caches, so in CI,
after `make setup`, nothing is downloaded or built twice) and runs the study: a
coordinator and three stations (each its own process), the study through the relay and
coordinator tasks, printed, the plot saved, everything stopped. That one run serves every
check of the study: its numbers must equal the same analyses on the pooled synthetic
data, pandas for the descriptive tables and counts, R's own glm() for the logistic
regression. `--keep-running` and `--gateway-only` run from this checkout's virtualenv."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from gateway.demo.registry import SITES, pooled_registries
from tests.e2e.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.r]
STATIONS = [s.name for s in SITES]
COMBINED = "combined"


def _without_this_checkout(environ: dict[str, str]) -> dict[str, str]:
    """The environment of a newcomer's shell: nothing pointing into this checkout's
    virtualenv or R library."""
    env = {
        k: v
        for k, v in environ.items()
        if k not in ("VIRTUAL_ENV", "DSGATEWAY_R_LIB", "R_LIBS_USER", "PYTHONPATH")
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`make demo`, exactly the README's command, in a fresh clone."""
    clone = tmp_path_factory.mktemp("clean-clone") / "dsgateway"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    assert not (clone / ".venv").exists() and not (clone / ".rlib").exists()
    started = time.monotonic()
    done = subprocess.run(
        ["make", "demo"],
        cwd=clone,
        env=_without_this_checkout(dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    print(f"make demo in a clean clone: {time.monotonic() - started:.0f} s")
    work = clone / "demo-run"
    if done.returncode != 0:
        for log in sorted(work.glob("**/*.log")):
            print(f"--- {log}\n{log.read_text()[-3000:]}")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    # make did the set-up itself, and the demo ran from the clone's own virtualenv.
    assert (clone / ".venv" / ".installed").exists()
    assert (clone / ".rlib" / ".dsGatewayBase.installed").exists()
    assert ".venv/bin/python -m gateway.cli demo" in done.stdout
    study = json.loads((work / "study.json").read_text())
    return work, done.stdout, study


@pytest.fixture(scope="module")
def pooled() -> pd.DataFrame:
    data = pooled_registries(2020)
    for column in ("age", "edss"):
        data[column] = data[column].astype(float)
    return data


def _close(a, b, rel=1e-6):
    return a == pytest.approx(b, rel=rel, abs=1e-9)


@pytest.mark.timeout(1800)
def test_the_demo_prints_the_study_and_says_where_everything_is(demo):
    work, out, _ = demo
    for part in (
        "All stations online.",
        "1. Descriptive tables, per station and combined",
        "2. Therapy x severe COVID-19",
        "3. Logistic regression",
        "4. The same counts and means as a coordinator task",
        "5. The same regression as a coordinator task (glm)",
        "Audit trail",
        "Stopped.",
    ):
        assert part in out, part
    assert "station-c: Failed: at least one cell has a non-zero count less than nfilter.tab" in out
    assert f"Forest plot of the odds ratios: {work / 'forest-plot.png'}" in out
    assert (work / "forest-plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "library(DSI)" in (work / "study.R").read_text()
    assert "dsBaseClient is not installed here" in out or "Running the same study from R" in out
    assert str(work / "coordinator" / "coordinator.db") in out
    assert stat.S_IMODE((work / "credentials.json").stat().st_mode) == 0o600
    for name in STATIONS:
        audit = work / name / "var" / "audit.log"
        assert str(audit) in out
        entries = [json.loads(line) for line in audit.read_text().splitlines()]
        # The researcher's relayed calls are in the station's own audit, under her name.
        assert any(e.get("user") == "alice" for e in entries)
    assert not (work / "pids").exists()  # everything stopped
    assert "Largest difference from the relayed session's mean ages" in out


@pytest.mark.timeout(1800)
def test_descriptive_numbers_equal_the_pooled_data(demo, pooled):
    _, _, study = demo
    groups = dict(list(pooled.groupby("station"))) | {COMBINED: pooled}
    for name, frame in groups.items():
        assert study["dims"][name]["rows"] == len(frame)
        for var in ("age", "edss"):
            got = study["numeric"][var][name]
            assert got["n"] == len(frame)
            assert got["missing"] == frame[var].isna().sum()
            assert _close(got["mean"], frame[var].mean())
            assert _close(got["sd"], frame[var].std(ddof=1))
        for var in ("sex", "course", "dmt", "covid_severity"):
            got = study["categorical"][var][name]
            counts = frame[var].value_counts()
            for level, n in got.items():
                expected = frame[var].isna().sum() if level == "<NA>" else counts.get(level, 0)
                assert n == expected, (name, var, level)
    task = study["task"]["per_node"]
    for name in STATIONS:
        frame = groups[name]
        assert task[name]["rows"] == len(frame)
        assert _close(task[name]["age mean"], frame["age"].mean())
        assert _close(task[name]["edss mean"], frame["edss"].mean())


@pytest.mark.timeout(1800)
def test_small_cells_are_suppressed_by_the_station_that_holds_them(demo, pooled):
    _, _, study = demo
    table = study["contingency"]
    small = set()
    crosstabs = {}
    for name, frame in pooled.groupby("station"):
        known = frame.dropna(subset=["dmt", "severe"])
        counts = pd.crosstab(known["dmt"], known["severe"])
        crosstabs[name] = counts
        if ((counts.to_numpy() > 0) & (counts.to_numpy() < 3)).any():
            small.add(name)
    assert small == {"station-c"}
    assert set(table["refused"]) == small
    assert set(table["per_node"]) == set(STATIONS) - small
    for name, got in table["per_node"].items():
        for level, row in crosstabs[name].iterrows():
            assert got[level]["0"] == row[0] and got[level]["1"] == row[1]
    released = pooled[pooled["station"].isin(set(STATIONS) - small)]
    combined = pd.crosstab(released["dmt"], released["severe"])
    for level, row in combined.iterrows():
        assert table["combined"][level]["1"] == row[1]


@pytest.mark.timeout(1800)
def test_the_logistic_regression_equals_r_glm_on_the_pooled_data(demo, pooled, tmp_path):
    _, _, study = demo
    model = pooled[["severe", "dmt", "age", "sex", "edss"]].dropna()
    csv = tmp_path / "pooled.csv"
    model.to_csv(csv, index=False)
    script = (
        f"d <- read.csv('{csv}', stringsAsFactors = TRUE); "
        "f <- glm(severe ~ dmt + age + sex + edss, family = binomial, data = d, "
        "control = glm.control(epsilon = 1e-14, maxit = 100)); s <- summary(f)$coefficients; "
        "cat(jsonlite::toJSON(list(terms = rownames(s), est = s[, 1], se = s[, 2], "
        "p = s[, 4], deviance = deviance(f), aic = AIC(f), n = nobs(f)), digits = NA))"
    )
    done = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, check=True)
    r = json.loads(done.stdout)
    tidy = study["glm"]["tidy"]
    assert list(tidy) == r["terms"]
    assert study["glm"]["nobs"] == r["n"][0] == len(model)
    for term, est, se, p in zip(r["terms"], r["est"], r["se"], r["p"], strict=True):
        assert _close(tidy[term]["estimate"], est), term
        assert _close(tidy[term]["se"], se), term
        assert _close(tidy[term]["p"], p, rel=1e-5), term
        assert _close(tidy[term]["OR"], np.exp(est)), term
        assert _close(tidy[term]["OR 2.5%"], np.exp(est - 1.959963984540054 * se)), term
    assert _close(study["glm"]["deviance"], r["deviance"][0])
    assert _close(study["glm"]["aic"], r["aic"][0])
    # The same model as a coordinator task (rounds of agents' glmDS2) agrees with both.
    task = study["glm_task"]
    assert task["status"] == "completed" and task["nobs"] == len(model)
    for term, est, se in zip(r["terms"], r["est"], r["se"], strict=True):
        assert _close(task["tidy"][term]["estimate"], est), term
        assert _close(task["tidy"][term]["se"], se), term
    assert task["largest_relative_difference"] < 1e-8


def _docs_block(containing: str, lang: str) -> str:
    text = (ROOT / "docs" / "getting-started.md").read_text()
    blocks = text.split("```")[1::2]
    return next(b[len(lang) :] for b in blocks if b.startswith(lang) and containing in b)


@pytest.mark.timeout(900)
def test_keep_running_then_the_docs_commands_then_stop(tmp_path, r_lib):
    """--keep-running leaves the federation up; the Python code and the audit command of
    docs/getting-started.md work against it as written; --stop ends every process."""
    env = {**os.environ, "DSGATEWAY_R_LIB": r_lib, "R_LIBS_USER": r_lib}
    cli = [sys.executable, "-m", "gateway.cli"]

    def run(args, **kw):
        return subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, **kw
        )

    started = run([*cli, "demo", "--keep-running", "--no-progress"])
    assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
    work = tmp_path / "demo-run"
    assert f"Stop everything with: dsgateway demo --stop --workdir {work}" in started.stdout
    pids = [int(p) for p in (work / "pids").read_text().split()]
    assert len(pids) == 4
    try:
        snippet = run([sys.executable, "-c", _docs_block("open_relay_session", "python")])
        assert snippet.returncode == 0, snippet.stderr[-3000:]
        assert "combined" in snippet.stdout and "dmtrituximab_ocrelizumab" in snippet.stdout
        command = _docs_block("gateway audit", "\n").strip().split()
        assert command[0] == "dsgateway"
        audit = run([*cli, *command[1:]])
        assert audit.returncode == 0, audit.stderr
        assert "tableDS(" in audit.stdout and "alice" in audit.stdout
    finally:
        stopped = run([*cli, "demo", "--stop"])
    assert stopped.stdout.strip() == "Stopped 4 processes."
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read()
    assert not (work / "pids").exists()


@pytest.mark.timeout(300)
def test_the_gateway_only_demo_still_runs(tmp_path, r_lib):
    env = {**os.environ, "DSGATEWAY_R_LIB": r_lib, "R_LIBS_USER": r_lib}
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--gateway-only"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "meanDS(D$age)" in done.stdout and "nonsense(D$age) is refused" in done.stdout
    assert not (tmp_path / "demo-run").exists()
