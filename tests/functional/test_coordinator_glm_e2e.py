"""A federated GLM as a coordinator task, every part its own process: PostgreSQL (a fresh
database), a private Redis as broker, `dsgateway coordinator serve`, a separate
`dsgateway coordinator worker`, three `dsgateway node run` stations with different data.
A researcher (`CoordinatorClient`) fits a logistic regression on all three; the
coefficients and standard errors equal R's glm() on the pooled data. Then the worker is
killed mid-task and restarted: the task still completes, once, with the same numbers."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.functional.pooled import pooled_rows, r_binomial_glm
from tests.functional.stack import running_stack, until
from tests.unit.coordinator.fixtures import postgres_database  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.r]

FORMULA = "outcome ~ age + bmi + smoker"
PARAMS = {
    "table": "demo/cohort/patients",
    "formula": FORMULA,
    "family": "binomial",
    "variables": ["outcome", "age", "bmi", "smoker"],
    # Tight, as the reference: R takes its standard errors at the second-to-last
    # iterate, so a loose criterion leaves them off by more than 1e-6 relative.
    "tolerance": 1e-12,
    "max_iterations": 30,
}
REL = 1e-6


@pytest.fixture(scope="module")
def stack(tmp_path_factory, r_lib, postgres_database):  # noqa: F811 (the fixture)
    work = tmp_path_factory.mktemp("glm-stack")
    with running_stack(
        work, r_lib, redis=True, database_url=postgres_database, algorithms=["glm"]
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def reference(stack, tmp_path_factory) -> dict:
    """R's glm() on the three stations' data pooled."""
    return r_binomial_glm(pooled_rows(stack), FORMULA, tmp_path_factory.mktemp("pooled"))


def _assert_equals_reference(value: dict, ref: dict) -> None:
    table = pd.DataFrame.from_dict(value["coefficients"], orient="index")
    assert list(table.index) == ref["names"]
    for column, key in (("Estimate", "coef"), ("Std. Error", "se"), ("z value", "z")):
        got, want = table[column].to_numpy(), pd.Series(ref[key]).to_numpy()
        assert abs(got - want).max() <= REL * abs(want).max(), (column, got, want)
    assert value["deviance"] == pytest.approx(ref["deviance"], rel=REL)
    assert value["nobs"] == ref["nobs"]
    assert value["family"] == "binomial" and value["converged"] is True


def _check_rounds(client, task: dict, value: dict) -> None:
    """One run per station per round, each completed; as many rounds as iterations."""
    runs = client.runs(task["id"])
    rounds = value["iterations"]
    assert task["round"] == rounds - 1
    keys = sorted((r["round"], r["node_id"]) for r in runs)
    assert len(keys) == len(set(keys)) == 3 * rounds
    assert {r["status"] for r in runs} == {"completed"}


def test_a_binomial_glm_task_equals_r_glm_on_the_pooled_data(stack, reference):
    client = stack.admin_client()
    task = client.create_task(stack.collaboration, "glm", PARAMS)
    done = client.wait(task["id"], timeout=600, progress=False)
    assert done["status"] == "completed", done["message"]
    value = client.result(task["id"])["value"]
    _assert_equals_reference(value, reference)
    _check_rounds(client, done, value)
    per_node = value["per_node"]
    assert sorted(int(k) for k in per_node) == sorted(stack.node_ids.values())
    assert sum(n["nobs"] for n in per_node.values()) == reference["nobs"]


def test_the_worker_killed_mid_task_and_restarted(stack, reference):
    client = stack.admin_client()
    task = client.create_task(stack.collaboration, "glm", PARAMS)
    # Mid-task: the first round is behind us (a worker advanced it), more are to come.
    until(lambda: client.task(task["id"])["round"] >= 1, 300, "the second round", step=0.2)
    stack.kill_worker()
    # Without a worker, the round in progress finishes at the nodes and then waits.
    current = client.task(task["id"])
    until(
        lambda: client.task(task["id"])["runs"].get("completed", 0) >= 3 * (current["round"] + 1),
        300,
        "the nodes to finish the round in progress",
        step=0.2,
    )
    assert client.task(task["id"])["status"] == "running"
    stack.start_worker()
    done = client.wait(task["id"], timeout=600, progress=False)
    assert done["status"] == "completed", done["message"]
    value = client.result(task["id"])["value"]
    _assert_equals_reference(value, reference)
    _check_rounds(client, done, value)


def test_a_model_a_node_refuses_fails_the_task_with_the_nodes_reasons(stack):
    client = stack.admin_client()
    params = dict(PARAMS, formula="outcome ~ age + nosuchcolumn", variables=None)
    del params["variables"]
    task = client.create_task(stack.collaboration, "glm", params)
    done = client.wait(task["id"], timeout=300, progress=False)
    assert done["status"] == "failed" and done["round"] == 0
    # Each node's own R error, from its gateway, named by node.
    for name in stack.stations:
        assert f"{name}: failed (glmDS1(" in done["message"], done["message"]
    assert done["message"].count("object 'nosuchcolumn' not found") == 3
