"""Runs test_r_armadillo_client.R (httr + jsonlite, driving the Armadillo API exactly as
DSMolgenisArmadillo does) against the real gateway, and fails on any `not ok` line.
(test_relay.py runs the same script through the coordinator's relay.)"""

from pathlib import Path

import pytest

from tests.functional.conftest import PASSWORDS, make_token
from tests.functional.rscript import run_r_script

pytestmark = [pytest.mark.r, pytest.mark.slow]

SCRIPT = Path(__file__).with_suffix(".R")


def test_r_client(gateway):
    env = {
        "DSG_URL": gateway.url,
        "DSG_USER": "alice",
        "DSG_PASSWORD": PASSWORDS["alice"],
        "DSG_TABLE": "demo/cohort/patients",
        "DSG_TOKEN": make_token("dave", ["demo"]),
        "DSG_OTHER_USER": "bob",
        "DSG_OTHER_PASSWORD": PASSWORDS["bob"],
    }
    run_r_script(SCRIPT, env, min_passed=45)
