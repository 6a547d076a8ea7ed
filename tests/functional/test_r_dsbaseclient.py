"""Runs test_r_dsbaseclient.R: R (httr + jsonlite, as DSI + DSMolgenisArmadillo drive the
Armadillo API) calls every server function of dsGatewayBase exactly as dsBaseClient
6.3.3's ds.* functions call it, unserializes the answers in R and checks they have the
structure and names dsBaseClient reads. Fails on any `not ok` line."""

from pathlib import Path

import pytest

from tests.functional.conftest import PASSWORDS
from tests.functional.rscript import run_r_script

pytestmark = [pytest.mark.r, pytest.mark.slow]

SCRIPT = Path(__file__).with_suffix(".R")


def test_server_functions_return_what_dsbaseclient_expects(gateway):
    env = {
        "DSG_URL": gateway.url,
        "DSG_USER": "alice",
        "DSG_PASSWORD": PASSWORDS["alice"],
        "DSG_TABLE": "demo/cohort/patients",
    }
    run_r_script(SCRIPT, env, min_passed=40, timeout=300)
