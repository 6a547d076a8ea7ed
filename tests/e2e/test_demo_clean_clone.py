"""`make demo` from a clean clone, on a machine without the project's virtualenv: a
fresh `git clone` of this repository's HEAD, `make demo` there (its own .venv and .rlib;
pip uses its cache), and the study printed at the end, its counts those of the seed's
registries."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from gateway.demo.registry import SITES, pooled_registries
from tests.e2e.conftest import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.r,
    # 4 to 6 minutes on the 2-core development machine (a new virtualenv: pip, with its
    # cache, then the rpy2 build), too long for the suite's 20-minute budget: run it on
    # purpose, e.g. before a release.
    pytest.mark.skipif(
        os.environ.get("DSGATEWAY_TEST_CLEAN_CLONE") != "1",
        reason="set DSGATEWAY_TEST_CLEAN_CLONE=1 to run `make demo` in a fresh clone (4-6 min)",
    ),
]


@pytest.mark.timeout(1800)
def test_make_demo_from_a_clean_clone(tmp_path):
    clone = tmp_path / "dsgateway"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "DSGATEWAY_R_LIB", "R_LIBS_USER", "PYTHONPATH")
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    done = subprocess.run(
        ["make", "demo", "DEMO_ARGS=--no-progress"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert (clone / ".venv" / ".installed").exists()
    for part in ("All stations online.", "3. Logistic regression", "Audit trail", "Stopped."):
        assert part in done.stdout, part
    study = json.loads((clone / "demo-run" / "study.json").read_text())
    pooled = pooled_registries(2020)
    assert study["dims"]["combined"]["rows"] == len(pooled)
    for site in SITES:
        assert study["dims"][site.name]["rows"] == site.n
    assert study["glm"]["nobs"] == len(pooled[["severe", "dmt", "age", "sex", "edss"]].dropna())
