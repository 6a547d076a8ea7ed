"""Runs test_r_dsbaseclient.R: R (httr + jsonlite, as DSI + DSMolgenisArmadillo drive the
Armadillo API) calls every server function of dsGatewayBase exactly as dsBaseClient
6.3.3's ds.* functions call it, unserializes the answers in R and checks they have the
structure and names dsBaseClient reads. Fails on any `not ok` line."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.functional.conftest import PASSWORDS

pytestmark = [pytest.mark.r, pytest.mark.slow]

SCRIPT = Path(__file__).with_suffix(".R")


def test_server_functions_return_what_dsbaseclient_expects(gateway):
    rscript = shutil.which("Rscript")
    if rscript is None:
        pytest.fail("Rscript is not installed: run `make setup`")
    env = {
        **os.environ,
        "DSG_URL": gateway.url,
        "DSG_USER": "alice",
        "DSG_PASSWORD": PASSWORDS["alice"],
        "DSG_TABLE": "demo/cohort/patients",
    }
    done = subprocess.run(
        [rscript, "--vanilla", str(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith("not ok")]
    assert not failed, output
    assert done.returncode == 0, output
    passed = [line for line in done.stdout.splitlines() if line.startswith("ok")]
    assert len(passed) >= 40, output
