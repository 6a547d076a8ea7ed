"""A disclosure filter's refusal is audited as `blocked` at the node, in both of
dsBase's forms (an R error, a returned refusal), and every answer tells the coordinator's
relay its outcome. Real gateway, real R, dsGatewayBase."""

from __future__ import annotations

import pytest

from gateway.node.audit_outcomes import (
    OUTCOME_HEADER,
    failure_outcome,
    is_disclosure_message,
    returned_refusal,
)
from tests.functional.rds import unserialize

pytestmark = pytest.mark.r

TABLE = "demo/cohort/patients"
# Every id is seen once: each cell is below nfilter.tab (3).
TWO_WAY = (
    'tableDS(rvar.transmit="D$id", cvar.transmit="D$sex", stvar.transmit=NULL, '
    "rvar.all.unique.levels.transmit=NULL, cvar.all.unique.levels.transmit=NULL, "
    "stvar.all.unique.levels.transmit=NULL, exclude.transmit=NULL, useNA.transmit=NULL, "
    "force.nfilter.transmit=NULL)"
)


def _sync(armadillo, expr: str):
    return armadillo.post("/execute", data=expr, headers={"Content-Type": "text/plain"})


def _last(gateway, **filters) -> dict:
    return gateway.audit(user="alice", **filters)[-1]


def test_an_error_refusal_is_blocked_at_the_node_and_said_to_the_relay(gateway, armadillo):
    armadillo.load_table("D", TABLE)
    r = _sync(armadillo, "table1DDS(D$id)")
    assert r.status_code == 500
    assert "invalid table - invalid counts present" in r.json()["message"]
    assert r.headers[OUTCOME_HEADER] == "blocked"
    command = _last(gateway, action="aggregate")
    assert (command["expression"], command["outcome"]) == ("table1DDS(D$id)", "blocked")
    call = _last(gateway, action="execute")
    assert (call["outcome"], call["status"]) == ("blocked", 500)
    assert "invalid counts" in call["message"]

    # Asynchronously (DSMolgenisArmadillo): the answers that carry the refusal say so.
    failed = armadillo.execute("table1DDS(D$id)")
    assert failed["status"] == "FAILED" and "invalid counts present" in failed["message"]
    assert [(e["action"], e["outcome"]) for e in gateway.audit(user="alice")[-2:]] == [
        ("lastresult", "blocked"),
        ("lastcommand", "blocked"),
    ]
    # A value returned, and an error that is no refusal, keep their outcomes.
    r = _sync(armadillo, "meanDS(D$age)")
    assert r.status_code == 200 and r.headers[OUTCOME_HEADER] == "returned"
    r = _sync(armadillo, "meanDS(nosuchsymbol)")
    assert r.status_code == 500 and r.headers[OUTCOME_HEADER] == "failed"
    r = _sync(armadillo, "nosuchDS(D)")
    assert r.status_code == 400 and r.headers[OUTCOME_HEADER] == "refused"


def test_a_returned_refusal_reaches_the_client_and_is_audited_blocked(gateway, armadillo):
    armadillo.load_table("D", TABLE)
    r = _sync(armadillo, TWO_WAY)
    assert r.status_code == 200 and r.headers[OUTCOME_HEADER] == "blocked"
    # The client gets dsBase's answer unchanged: ds.table reads the message.
    refusal = "Failed: at least one cell has a non-zero count less than nfilter.tab i.e. 3"
    assert unserialize(r.content) in (refusal, [refusal])
    call = _last(gateway, action="execute")
    assert call["outcome"] == "blocked" and call["bytes"] > 0
    assert call["message"].startswith("Failed: at least one cell")
    assert _last(gateway, action="aggregate")["outcome"] == "blocked"
    # A two-way table with large enough cells is a value like any other.
    ok = TWO_WAY.replace("D$id", "D$region")
    r = _sync(armadillo, ok)
    assert r.status_code == 200 and r.headers[OUTCOME_HEADER] == "returned"


def test_how_messages_are_told_apart():
    assert failure_outcome("Error : FAILED: Nvalid less than nfilter.tab") == "blocked"
    assert failure_outcome("Error : invalid table - invalid counts present") == "blocked"
    assert failure_outcome("Error : k must be greater than or equal to 3 and less") == "blocked"
    # The call R puts before the message is not the message.
    assert not is_disclosure_message(
        "Error in tableDS(force.nfilter.transmit = y) : object 'y' not found"
    )
    assert failure_outcome(None) == failure_outcome("") == "failed"
    assert returned_refusal("risk:ERROR: y vector is binary") == "ERROR: y vector is binary"
    assert returned_refusal("risk:") == "The model was refused: disclosure risk."
    # A returned string is a refusal only in dsBase's form.
    assert returned_refusal("Subsetting undertaken without problems") is None
    assert returned_refusal("too small a sample is a fine answer") is None
    assert returned_refusal(None) is None


def test_the_r_side_picks_the_refusal_of_each_returned_form():
    """R_REFUSAL on dsBase's returned refusals (glmDS2's flag, covDS's message) and on
    values that are none, then `returned_refusal`'s verdict."""
    import shutil
    import subprocess

    from gateway.node.audit_outcomes import R_REFUSAL

    cases = {
        "glm": 'list(info.matrix = NA, disclosure.risk = 1, errorMessage2 = c("ERROR: y vector'
        ' is binary", "MODEL FAILED"))',
        "glm_ok": 'list(info.matrix = diag(2), disclosure.risk = 0, errorMessage2 = "No errors")',
        "glm1": "list(dimX = c(10, 2), y.invalid = 0, Xpar.invalid = c(0, 1), w.invalid = 0,"
        ' errorMessage = "STUDY DATA OR APPLIED MODEL INVALID FOR THIS SOURCE")',
        "glm1_ok": "list(dimX = c(10, 2), y.invalid = 0, Xpar.invalid = c(0, 0),"
        ' errorMessage = "No errors")',
        "cov": 'list(sums = NA, errorMessage = "ERROR: at least one variable is binary with one'
        ' category less than the filter threshold for table cell size")',
        "cov_ok": "list(sums = 1, errorMessage = NA)",
        "mean": "list(EstimatedMean = 2, ValidityMessage = 'VALID ANALYSIS')",
        "number": "42",
    }
    code = f"refusal <- {R_REFUSAL}\n" + "".join(
        f'cat("{name}", refusal({expr}), sep = "\\t"); cat("\\n")\n' for name, expr in cases.items()
    )
    done = subprocess.run(
        [shutil.which("Rscript") or "Rscript", "--vanilla", "-e", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    picked = dict(line.split("\t", 1) for line in done.stdout.splitlines())
    verdicts = {
        name: returned_refusal(None if text == "NA" else text) for name, text in picked.items()
    }
    assert verdicts == {
        "glm": "ERROR: y vector is binary; MODEL FAILED",
        "glm_ok": None,
        "glm1": "Xpar.invalid; STUDY DATA OR APPLIED MODEL INVALID FOR THIS SOURCE",
        "glm1_ok": None,
        "cov": "ERROR: at least one variable is binary with one category less than the filter "
        "threshold for table cell size",
        "cov_ok": None,
        "mean": None,
        "number": None,
    }
