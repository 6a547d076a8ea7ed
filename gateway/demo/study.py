"""The demo's study, as a researcher runs it from Python with one login at the
coordinator: DataSHIELD sessions to every station through the coordinator's relay
(node-scoped relay tokens, `gateway.client.ArmadilloDriver`, the `algorithms` package),
and coordinator tasks (`aggregate`, `glm`) to cross-check.

1. descriptive tables per station and combined (age, EDSS; disease course, therapy);
2. therapy x severe COVID-19, where a station's disclosure filter refuses a table with
   a small cell, and what the researcher gets instead;
3. a logistic regression of severe COVID-19 on therapy adjusted for age, sex and EDSS,
   as a tidy table and a forest plot.

`run_study` prints as it goes and returns every number it printed (also written to
``study.json``), so the tests can hold them against a pooled analysis.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

import algorithms as ds
from gateway.client import CoordinatorClient
from gateway.demo import report
from gateway.demo.registry import TABLE

__all__ = ["FORMULA", "open_relay_session", "run_study"]

SYMBOL = "D"
FORMULA = "severe ~ dmt + age + sex + edss"
NUMERIC = ("age", "edss")
CATEGORICAL = ("sex", "course", "dmt", "covid_severity")
GLM_EPSILON = 1e-10  # tighter than R's 1e-8: the tests hold the fit to R's within 1e-6
GLM_MAXIT = 50
STEPS = 8  # for the progress bar


def open_relay_session(client: CoordinatorClient, collaboration_id: int, relay_url: str):
    """A `datashield` session with every node of the collaboration, through the relay:
    one relay token per node (each opens only that node), all from one login."""
    from datashield import DSLoginBuilder, DSSession

    builder = DSLoginBuilder()
    for node in sorted(client.nodes(collaboration_id), key=lambda n: n["name"]):
        token = client.relay_token(collaboration_id, node["id"])["token"]
        builder.add(node["name"], relay_url, token=token, driver="gateway.client.ArmadilloDriver")
    session = DSSession(builder.build())
    session.open()
    return session


def _frame_json(frame: pd.DataFrame) -> dict:
    return json.loads(frame.to_json(orient="index"))


def run_study(
    coordinator_url: str,
    relay_url: str,
    username: str,
    password: str,
    out_dir: Path,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> dict:
    """Run the study; print it with ``echo``; return its numbers."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    results: dict = {"table": TABLE, "formula": FORMULA}
    bar = tqdm(total=STEPS, desc="study", unit="step", disable=not progress, leave=False)

    def step(what: str) -> None:
        bar.set_postfix_str(f"{what}: done")
        bar.update(1)

    def write(text: str = "") -> None:
        # Above the progress bar, not through it.
        tqdm.write(text) if progress else echo(text)

    try:
        client = CoordinatorClient(coordinator_url)
        client.login(username, password)
        collaboration = client.collaborations()[0]
        write(
            f"Logged in at the coordinator as {username!r}; collaboration "
            f"{collaboration['name']!r}."
        )
        session = open_relay_session(client, collaboration["id"], relay_url)
        step("sessions open")
        try:
            stations = session.get_connection_names()
            write(f"DataSHIELD sessions through the relay {relay_url} to: {', '.join(stations)}")
            session.assign_table(SYMBOL, TABLE)
            step("table assigned")
            _descriptives(session, results, write, step)
            _contingency(session, results, write)
            step("contingency table")
            fit = _regression(session, results, write, out_dir)
            step("logistic regression")
        finally:
            session.close()
        _task(client, collaboration["id"], results, write, progress)
        step("aggregate task")
        _glm_task(client, collaboration["id"], fit, results, write, progress)
        step("glm task")
    finally:
        bar.close()
    (out_dir / "study.json").write_text(json.dumps(results, indent=2, default=_json_default))
    results["fit"] = fit
    return results


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _heading(write, text: str) -> None:
    write("")
    write(text)
    write("=" * len(text))


def _descriptives(session, results, write, step) -> None:
    _heading(write, "1. Descriptive tables, per station and combined")
    dims = ds.dim(session, SYMBOL)
    results["dims"] = _frame_json(dims)
    write(f"Rows and columns of {TABLE}:\n{dims.to_string()}")
    results["numeric"] = {}
    for var in NUMERIC:
        table = report.numeric_table(ds.summary(session, f"{SYMBOL}${var}"))
        results["numeric"][var] = _frame_json(table)
        write(f"\n{var}:\n{table.to_string(float_format=lambda v: f'{v:.2f}')}")
    step("numeric summaries")
    results["categorical"] = {}
    for var in CATEGORICAL:
        counts = report.categorical_table(ds.summary(session, f"{SYMBOL}${var}"))
        results["categorical"][var] = _frame_json(counts)
        write(f"\n{var}, n (row %):\n{report.with_percentages(counts).to_string()}")
    step("categorical summaries")


def _contingency(session, results, write) -> None:
    _heading(write, "2. Therapy x severe COVID-19 (hospitalised, ICU or died)")
    rvar, cvar = f"{SYMBOL}$dmt", f"{SYMBOL}$severe"
    refused: dict[str, str] = {}
    try:
        table = ds.table(session, rvar, cvar)
    except ds.NodeError as err:
        refused = err.failures
        write("The stations' disclosure filter refused the table where a cell was small:")
        for node, message in refused.items():
            write(f"  {node}: {message}")
        released = [n for n in session.get_connection_names() if n not in refused]
        write(
            "No numbers leave those stations. The table over the stations that released "
            f"theirs ({', '.join(released)}):"
        )
        table = ds.table(session, rvar, cvar, nodes=released) if released else None
    results["contingency"] = {
        "refused": refused,
        "per_node": {n: _frame_json(t) for n, t in table.per_node.items()} if table else {},
        "combined": _frame_json(table.combined) if table else None,
    }
    if table is None:
        return
    for node, frame in table.per_node.items():
        write(f"\n{node}:\n{frame.to_string()}")
    write(f"\ncombined ({', '.join(table.per_node)}):\n{table.combined.to_string()}")


def _regression(session, results, write, out_dir: Path):
    _heading(write, "3. Logistic regression: severe COVID-19 on therapy, age, sex and EDSS")
    write(f"glm({FORMULA}, family = binomial), reference therapy 'none', complete cases")
    fit = ds.glm(session, FORMULA, "binomial", data=SYMBOL, epsilon=GLM_EPSILON, maxit=GLM_MAXIT)
    tidy = report.tidy_glm(fit)
    write(report.format_tidy(tidy))
    write(
        f"n = {fit.nobs} used ({fit.n_missing} rows with a missing value left out), "
        f"{fit.iterations} Fisher scoring iterations over "
        f"{len(fit.per_node)} stations; residual deviance {fit.deviance:.3f} on "
        f"{fit.df_residual} df, AIC {fit.aic:.3f}"
    )
    plot = report.forest_plot(
        tidy,
        out_dir / "forest-plot.png",
        f"Severe COVID-19 in MS, {len(fit.per_node)} stations, n = {fit.nobs}",
    )
    write(f"Forest plot of the odds ratios: {plot}")
    results["glm"] = {
        "tidy": _frame_json(tidy),
        "nobs": fit.nobs,
        "deviance": fit.deviance,
        "aic": fit.aic,
        "iterations": fit.iterations,
        "per_node": _frame_json(fit.per_node),
    }
    results["plot"] = str(plot)
    return fit


def _task(client: CoordinatorClient, collaboration_id: int, results, write, progress) -> None:
    _heading(write, "4. The same counts and means as a coordinator task (aggregate)")
    params = {
        "table": TABLE,
        "symbol": SYMBOL,
        "expressions": [f'dimDS("{SYMBOL}")', f"meanDS({SYMBOL}$age)", f"meanDS({SYMBOL}$edss)"],
    }
    task = client.create_task(collaboration_id, "aggregate", params, name="demo descriptives")
    done = client.wait(task["id"], timeout=600, progress=progress)
    if done["status"] != "completed":
        write(f"Task {task['id']} ended {done['status']}: {done.get('message') or ''}")
        results["task"] = {"status": done["status"]}
        return
    names = {n["id"]: n["name"] for n in client.nodes(collaboration_id)}
    value = client.result(task["id"])["value"]
    rows = {}
    for node_id, answer in value.items():
        dims, age, edss = answer["results"]
        rows[names[int(node_id)]] = {
            "rows": _first(dims)[0] if isinstance(_first(dims), list) else _first(dims),
            "age mean": _mean(age),
            "edss mean": _mean(edss),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    frame.index.name = "station"
    write(f"Task {task['id']} completed on {len(rows)} stations:\n{frame.to_string()}")
    relay = {n: results["numeric"]["age"][n]["mean"] for n in rows}
    worst = max(abs(rows[n]["age mean"] - relay[n]) for n in rows)
    write(f"Largest difference from the relayed session's mean ages: {worst:.3g}")
    results["task"] = {"status": "completed", "id": task["id"], "per_node": _frame_json(frame)}


def _glm_task(client, collaboration_id: int, fit, results, write, progress) -> None:
    _heading(write, "5. The same regression as a coordinator task (glm)")
    write(
        "Each round, the coordinator sends the coefficients to every station's agent, "
        "which answers with X'WX, the score and the deviance; the coordinator updates."
    )
    params = {
        "table": TABLE,
        "formula": FORMULA,
        "family": "binomial",
        "variables": ["severe", "dmt", "age", "sex", "edss"],
        "tolerance": GLM_EPSILON,
        "max_iterations": GLM_MAXIT,
    }
    task = client.create_task(collaboration_id, "glm", params, name="demo logistic regression")
    done = client.wait(task["id"], timeout=900, progress=progress)
    if done["status"] != "completed":
        write(f"Task {task['id']} ended {done['status']}: {done.get('message') or ''}")
        results["glm_task"] = {"status": done["status"], "message": done.get("message")}
        return
    from algorithms.regression import GLMResult

    central = GLMResult.from_dict(client.result(task["id"])["value"])
    tidy = report.tidy_glm(central)
    relay = report.tidy_glm(fit)
    differences = (tidy[["estimate", "se"]] - relay[["estimate", "se"]]).abs()
    worst = float((differences / relay[["estimate", "se"]].abs()).max().max())
    write(f"Task {task['id']} completed in {central.iterations} rounds; odds ratios (95% CI):")
    write(tidy[["OR", "OR 2.5%", "OR 97.5%"]].to_string(float_format=lambda v: f"{v:.4f}"))
    write(f"Largest relative difference from the relayed fit (estimates, SEs): {worst:.3g}")
    results["glm_task"] = {
        "status": "completed",
        "id": task["id"],
        "tidy": _frame_json(tidy),
        "nobs": central.nobs,
        "iterations": central.iterations,
        "largest_relative_difference": worst,
    }


def _first(value):
    """A value as JSON gives it: R's length-1 vectors may come as one-element lists."""
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def _mean(answer) -> float:
    return float(_first(answer["EstimatedMean"]))
