"""Running a TAP-printing R test script (tests/functional/*.R) and checking its verdict:
no `not ok` line, exit status 0, at least `min_passed` `ok` lines."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["run_r_script"]


def run_r_script(
    script: Path, env: dict[str, str], *, min_passed: int = 0, timeout: float = 600
) -> list[str]:
    """Runs `Rscript --vanilla script` with `env` added to this process's environment;
    fails the test (with R's whole output) on any failed check. The `ok` lines."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        pytest.fail("Rscript is not installed: run `make setup`")
    done = subprocess.run(
        [rscript, "--vanilla", str(script)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    lines = done.stdout.splitlines()
    failed = [line for line in lines if line.startswith("not ok")]
    assert not failed, output
    assert done.returncode == 0, output
    passed = [line for line in lines if line.startswith("ok")]
    assert len(passed) >= min_passed, output
    return passed
