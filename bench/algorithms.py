"""Figures of the federated analyses (issue 3), each against a reference in the same run.

- `run_glm`: a federated logistic regression (`algorithms.glm`) over `nodes` gateways
  on loopback HTTP, `rows` rows each, `covariates` normal covariates, against R's own
  `glm()` on the pooled rows (Rscript, same machine, same run);
- `run_summary`: `algorithms.summary` of `variables` numeric variables over `nodes`
  gateways, `rows` rows each, against pandas' `describe()` of the pooled frame.

Each function starts its own gateways (real R sessions, waitress on loopback ports),
returns a plain dict (``federated_s``, ``reference_s``, ``ratio`` and details; times in
seconds, medians over ``repeats``) and prints nothing but a tqdm progress bar. The
federated timings use dsgateway's Armadillo driver (`gateway.client.ArmadilloDriver`,
RDS over the Armadillo face); ``federated_opal_s`` is the same analysis through the
`datashield-opal` driver (JSON over the Opal face), for comparison.

    python -c "import bench.algorithms as b; print(b.run_glm(rows=10_000, repeats=1))"
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password"  # noqa: S105 - throw-away local gateways
GLM_TABLE = "bench/glm/t"
SUMMARY_TABLE = "bench/summary/t"

__all__ = ["run_glm", "run_summary"]


def _algorithms():
    """The `algorithms` package. Run as `python bench/run.py`, bench/ comes first on
    sys.path and this very file answers to the name `algorithms`: it is then renamed
    and the package loaded from the repository under its own name."""
    module = sys.modules.get("algorithms")
    if module is not None and hasattr(module, "__path__"):
        return module
    if module is not None:
        sys.modules["bench_algorithms"] = sys.modules.pop("algorithms")
    spec = importlib.util.spec_from_file_location(
        "algorithms",
        ROOT / "algorithms" / "__init__.py",
        submodule_search_locations=[str(ROOT / "algorithms")],
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["algorithms"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["algorithms"]
        raise
    return module


# ---------------------------------------------------------------- gateways


class _Federation:
    """`nodes` gateways, each serving its own data directory."""

    def __init__(self, data_dirs: list[Path], work: Path):
        from gateway.node.app import create_app
        from gateway.node.config import NodeConfig
        from gateway.node.limits import Limits
        from gateway.node.server import BackgroundServer

        r_lib = os.environ.get("DSGATEWAY_R_LIB", str(ROOT / ".rlib"))
        self.apps, self.servers = [], []
        try:
            for k, data_dir in enumerate(data_dirs):
                config = NodeConfig.quick(
                    data_dir,
                    work / f"state{k}",
                    password=PASSWORD,
                    r_lib=r_lib,
                    limits=Limits(warm_workers=1, max_sessions=8, memory_per_session=4096),
                )
                app = create_app(config)
                self.apps.append(app)
                self.servers.append(BackgroundServer(app, threads=8).start())
        except BaseException:
            self.close()
            raise
        self.urls = [s.url for s in self.servers]
        time.sleep(1.0)  # let each pool fork and warm its worker

    def session(self, driver: str, table: str):
        from datashield import DSLoginBuilder, DSSession

        builder = DSLoginBuilder()
        for k, url in enumerate(self.urls):
            builder.add(f"node{k + 1}", url, user="admin", password=PASSWORD, driver=driver)
        session = DSSession(builder.build())
        session.open()
        name = table if driver.startswith("gateway.") else table.replace("/", ".")
        session.assign_table("D", name)
        return session

    def close(self) -> None:
        from gateway.node.app import close_services

        for server in self.servers:
            server.stop()
        for app in self.apps:
            close_services(app.extensions["dsgateway"])


ARMADILLO = "gateway.client.ArmadilloDriver"
OPAL = "datashield_opal.OpalDriver"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Nothing but the progress bar: the servers' and the clients' logs are silenced."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _median_time(fn: Callable[[], object], repeats: int, bar: tqdm) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
        bar.update(1)
    return statistics.median(times), value


def _race(
    federation: _Federation, table: str, analysis: Callable, repeats: int, bar: tqdm
) -> tuple[dict, dict]:
    """Median time of `analysis(session)` through each driver, the drivers taking turns
    (a shared machine's load then weighs on both alike); the last result of each."""
    sessions = {}
    try:
        for driver in (ARMADILLO, OPAL):
            sessions[driver] = federation.session(driver, table)
            analysis(sessions[driver])  # warm-up
            bar.update(1)
        times: dict[str, list[float]] = {d: [] for d in sessions}
        results = {}
        for _ in range(repeats):
            for driver, session in sessions.items():
                started = time.perf_counter()
                results[driver] = analysis(session)
                times[driver].append(time.perf_counter() - started)
                bar.update(1)
        return {d: statistics.median(t) for d, t in times.items()}, results
    finally:
        for session in sessions.values():
            session.close()


def _rscript(code: str) -> str:
    env = dict(os.environ, R_LIBS_USER=os.environ.get("DSGATEWAY_R_LIB", str(ROOT / ".rlib")))
    done = subprocess.run(
        ["Rscript", "--vanilla", "-e", code],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"Rscript failed: {done.stderr[-2000:]}")
    return done.stdout


# ---------------------------------------------------------------- glm


def _glm_data(rows: int, nodes: int, covariates: int, seed: int = 20251) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    beta = np.linspace(-0.6, 0.6, covariates)
    frames = []
    for _ in range(nodes):
        x = rng.normal(size=(rows, covariates))
        p = 1 / (1 + np.exp(-(-0.4 + x @ beta)))
        frame = pd.DataFrame(x, columns=[f"x{j + 1}" for j in range(covariates)])
        frame.insert(0, "y", (rng.random(rows) < p).astype(np.int32))
        frames.append(frame)
    return frames


R_GLM = r"""
D <- read.csv("{csv}")
f <- y ~ {terms}
fit <- glm(f, family = binomial, data = D)   # warm-up
times <- numeric({repeats})
for (i in seq_len({repeats})) {{
  t0 <- proc.time()[["elapsed"]]
  fit <- glm(f, family = binomial, data = D)
  times[i] <- proc.time()[["elapsed"]] - t0
}}
# one node's glmDS2 evaluated in R directly: what a federated iteration costs in R
N <- D[seq_len({rows}), ]
b <- paste(rep(0, length(coef(fit))), collapse = ",")
step <- function() dsGatewayBase::glmDS2(f, "binomial", b, NULL, NULL, "N")
invisible(step())
t0 <- proc.time()[["elapsed"]]
for (i in 1:10) invisible(step())
node_step <- (proc.time()[["elapsed"]] - t0) / 10
cat(jsonlite::toJSON(list(times = times, coef = unname(coef(fit)), iter = fit$iter,
                          node_step = node_step), digits = NA, auto_unbox = TRUE))
"""


def run_glm(rows: int = 100_000, nodes: int = 3, covariates: int = 6, repeats: int = 3) -> dict:
    """Federated logistic regression over `nodes` gateways vs R's glm() on the pooled
    rows; see the module documentation. Keys: ``federated_s`` (median total time of
    `algorithms.glm`, our Armadillo driver), ``reference_s`` (median `glm()` time in
    R), ``ratio``, ``iterations`` (Fisher scoring iterations, ours and R's),
    ``per_iteration_s``, ``rounds`` (glmDS1 + one glmDS2 per iteration),
    ``federated_opal_s`` and ``ratio_opal`` (the datashield-opal driver),
    ``node_step_s`` (one node's glmDS2 evaluated in R directly), ``max_rel_diff``
    (coefficients vs R's)."""
    algorithms = _algorithms()
    formula = "D$y ~ " + " + ".join(f"D$x{j + 1}" for j in range(covariates))
    with _quiet(), tempfile.TemporaryDirectory(prefix="dsgateway-bench-glm-") as tmp:
        work = Path(tmp)
        bar = tqdm(total=2 * repeats + 4, desc="glm benchmark", leave=False)
        frames = _glm_data(rows, nodes, covariates)
        dirs = []
        for k, frame in enumerate(frames):
            target = work / f"data{k}" / Path(GLM_TABLE).parent
            target.mkdir(parents=True)
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), target / "t.parquet")
            dirs.append(work / f"data{k}")
        csv = work / "pooled.csv"
        pd.concat(frames, ignore_index=True).to_csv(csv, index=False, float_format="%.17g")
        bar.update(1)

        terms = " + ".join(f"x{j + 1}" for j in range(covariates))
        reference = json.loads(
            _rscript(R_GLM.format(csv=csv, terms=terms, repeats=repeats, rows=rows))
        )
        bar.update(1)

        federation = _Federation(dirs, work)
        try:
            timings, fits = _race(
                federation,
                GLM_TABLE,
                lambda s: algorithms.glm(s, formula, "binomial"),
                repeats,
                bar,
            )
        finally:
            federation.close()
        bar.close()

    fit = fits[ARMADILLO]
    ref_s = statistics.median(np.atleast_1d(reference["times"]).tolist())
    coef = np.asarray(fit.params, dtype=float)
    ref_coef = np.asarray(reference["coef"], dtype=float)
    federated = timings[ARMADILLO]
    return {
        "federated_s": federated,
        "reference_s": ref_s,
        "ratio": federated / ref_s,
        "iterations": fit.iterations,
        "reference_iterations": int(reference["iter"]),
        "per_iteration_s": federated / fit.iterations,
        "rounds": fit.iterations + 1,
        "federated_opal_s": timings[OPAL],
        "ratio_opal": timings[OPAL] / ref_s,
        "node_step_s": float(reference["node_step"]),
        "max_rel_diff": float(np.max(np.abs(coef - ref_coef) / np.abs(ref_coef))),
        "rows": rows,
        "nodes": nodes,
        "covariates": covariates,
        "repeats": repeats,
        "driver": ARMADILLO,
    }


# ---------------------------------------------------------------- summary


def _summary_data(rows: int, nodes: int, variables: int, seed: int = 4711) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(nodes):
        columns = {}
        for j in range(variables):
            values = rng.normal(50 + j, 10 + j, rows)
            values[rng.random(rows) < 0.02] = np.nan  # some missing values
            columns[f"v{j + 1}"] = values
        frames.append(pd.DataFrame(columns))
    return frames


def run_summary(
    rows: int = 1_000_000, nodes: int = 3, variables: int = 10, repeats: int = 3
) -> dict:
    """`algorithms.summary` of each of `variables` numeric variables over `nodes`
    gateways vs pandas `describe()` of the pooled frame; see the module documentation.
    Keys: ``federated_s`` (median time of the summaries of all the variables, our
    Armadillo driver), ``reference_s`` (median `describe()` time), ``ratio``,
    ``rounds`` (server calls per node), ``federated_opal_s``, ``ratio_opal``,
    ``max_rel_diff`` (combined means and standard deviations vs pandas)."""
    algorithms = _algorithms()
    names = [f"v{j + 1}" for j in range(variables)]
    with _quiet(), tempfile.TemporaryDirectory(prefix="dsgateway-bench-summary-") as tmp:
        work = Path(tmp)
        bar = tqdm(total=3 * repeats + 3, desc="summary benchmark", leave=False)
        frames = _summary_data(rows, nodes, variables)
        dirs = []
        for k, frame in enumerate(frames):
            target = work / f"data{k}" / Path(SUMMARY_TABLE).parent
            target.mkdir(parents=True)
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), target / "t.parquet")
            dirs.append(work / f"data{k}")
        pooled = pd.concat(frames, ignore_index=True)
        del frames
        bar.update(1)

        pooled.describe()  # warm-up
        reference_s, described = _median_time(pooled.describe, repeats, bar)

        def summaries(session) -> dict:
            return {v: algorithms.summary(session, f"D${v}") for v in names}

        federation = _Federation(dirs, work)
        try:
            timings, results = _race(federation, SUMMARY_TABLE, summaries, repeats, bar)
        finally:
            federation.close()
        bar.close()

    ours = results[ARMADILLO]
    diffs = []
    for v in names:
        combined = ours[v].loc[algorithms.COMBINED]
        diffs.append(abs(combined["mean"] / described.loc["mean", v] - 1))
        diffs.append(abs(combined["sd"] / described.loc["std", v] - 1))
    federated = timings[ARMADILLO]
    return {
        "federated_s": federated,
        "reference_s": reference_s,
        "ratio": federated / reference_s,
        "rounds": 3 * variables,
        "federated_opal_s": timings[OPAL],
        "ratio_opal": timings[OPAL] / reference_s,
        "max_rel_diff": float(max(diffs)),
        "rows": rows,
        "nodes": nodes,
        "variables": variables,
        "repeats": repeats,
        "driver": ARMADILLO,
    }
