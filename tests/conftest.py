"""Fixtures shared across the suite: the project's R library, a test-only R package of
faults and canaries, and the example study's data."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT_R_LIB = Path(os.environ.get("DSGATEWAY_R_LIB", ROOT / ".rlib"))


@pytest.fixture(scope="session")
def r_lib() -> str:
    """The R library holding dsGatewayBase (installed by `make rpkg`)."""
    if shutil.which("Rscript") is None:
        pytest.fail("R is not installed: run `make setup` (it installs R from Debian)")
    if not (PROJECT_R_LIB / "dsGatewayBase" / "DESCRIPTION").is_file():
        pytest.fail(f"dsGatewayBase is not installed in {PROJECT_R_LIB}: run `make rpkg`")
    return str(PROJECT_R_LIB)


@pytest.fixture(scope="session")
def faults_lib(tmp_path_factory, r_lib) -> str:
    """The project library plus dsTestFaults (endless loops, memory bombs, a canary)."""
    lib = tmp_path_factory.mktemp("rlib-faults")
    subprocess.run(
        [
            "R",
            "CMD",
            "INSTALL",
            "--no-multiarch",
            f"--library={lib}",
            str(ROOT / "tests" / "fixtures" / "dsTestFaults"),
        ],
        check=True,
        capture_output=True,
    )
    return f"{lib}{os.pathsep}{r_lib}"


@pytest.fixture(scope="session")
def example_data(tmp_path_factory) -> Path:
    from gateway.node.exampledata import generate_example_data

    data_dir = tmp_path_factory.mktemp("data")
    generate_example_data(data_dir, seed=1)
    return data_dir


@pytest.fixture(scope="session")
def canary(tmp_path_factory) -> Path:
    """A file that dsTestFaults::canaryDS appends to whenever R runs it.

    R processes inherit the environment when the pool starts, so request this fixture
    before any gateway or pool fixture that should see it."""
    path = tmp_path_factory.mktemp("canary") / "canary.log"
    os.environ["DSGATEWAY_CANARY"] = str(path)
    return path
