"""One coordinator login, a `datashield.DSSession` over the whole collaboration through
the relay, every part its own process (`python -m gateway.coordinator.relay` and three
`dsgateway node run` stations): the `algorithms` package runs through it and its
results equal the same analysis on the pooled rows (pandas for the mean, R's own glm()
for the model)."""

from __future__ import annotations

import pytest

import algorithms as ds
from gateway.client import CoordinatorError
from gateway.client.relay import RelayConnection, relay_session
from tests.functional.pooled import pooled_rows, r_binomial_glm
from tests.functional.stack import running_stack

pytestmark = [pytest.mark.slow, pytest.mark.r]

MODEL = "D$outcome ~ D$age + D$bmi + D$smoker"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, r_lib):
    with running_stack(tmp_path_factory.mktemp("relay-python"), r_lib, relay=True) as stack:
        yield stack


def test_one_login_runs_the_algorithms_through_the_relay(stack, tmp_path):
    client = stack.admin_client()
    session = client.datashield_session(stack.collaboration, stack.relay_url)
    try:
        assert sorted(conn.name for conn in session.conns) == sorted(stack.stations)
        session.assign_table("D", "demo/cohort/patients")
        means = ds.mean(session, "D$age")
        fit = ds.glm(session, MODEL, "binomial")
    finally:
        session.close()
    pooled = pooled_rows(stack)
    assert means.loc[ds.COMBINED, "n_valid"] == pooled["age"].notna().sum()
    assert means.loc[ds.COMBINED, "mean"] == pytest.approx(pooled["age"].mean(), rel=1e-10)
    reference = r_binomial_glm(pooled, MODEL, tmp_path)
    assert fit.nobs == reference["nobs"]
    assert list(fit.params) == pytest.approx(reference["coef"], rel=1e-6)
    assert list(fit.bse) == pytest.approx(reference["se"], rel=1e-6)


def test_chosen_nodes_and_tokens_renewed_mid_session(stack):
    """`nodes` by name; with a renewal margin beyond the tokens' lifetime every call
    asks for a new token: the node's R session (bound to its cookie) carries on."""
    client = stack.admin_client()
    session = relay_session(client, stack.collaboration, stack.relay_url, ["node-b"], margin=10**7)
    try:
        (conn,) = session.conns
        assert isinstance(conn, RelayConnection) and conn.name == "node-b"
        first = conn.token
        session.assign_table("D", "demo/cohort/patients")
        once = ds.mean(session, "D$age")
        assert conn.token != first  # renewed, and the session's symbols are still there
        again = ds.mean(session, "D$age")
    finally:
        session.close()
    assert once.loc["node-b", "mean"] == again.loc["node-b", "mean"]
    with pytest.raises(CoordinatorError, match="Not nodes of collaboration"):
        relay_session(client, stack.collaboration, stack.relay_url, ["no-such-node"])
