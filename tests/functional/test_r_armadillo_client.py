"""Runs test_r_armadillo_client.R (httr + jsonlite, driving the Armadillo API exactly as
DSMolgenisArmadillo does) against the real gateway, and fails on any `not ok` line."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.functional.conftest import PASSWORDS, make_token

pytestmark = [pytest.mark.r, pytest.mark.slow]

SCRIPT = Path(__file__).with_suffix(".R")


def test_r_client(gateway):
    rscript = shutil.which("Rscript")
    if rscript is None:
        pytest.fail("Rscript is not installed: run `make setup`")
    env = {
        **os.environ,
        "DSG_URL": gateway.url,
        "DSG_USER": "alice",
        "DSG_PASSWORD": PASSWORDS["alice"],
        "DSG_TABLE": "demo/cohort/patients",
        "DSG_TOKEN": make_token("dave", ["demo"]),
        "DSG_OTHER_USER": "bob",
        "DSG_OTHER_PASSWORD": PASSWORDS["bob"],
    }
    done = subprocess.run(
        [rscript, "--vanilla", str(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith("not ok")]
    assert not failed, output
    assert done.returncode == 0, output
    passed = [line for line in done.stdout.splitlines() if line.startswith("ok")]
    assert len(passed) >= 45, output
