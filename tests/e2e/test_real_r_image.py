"""The R client image with the REAL DataSHIELD R packages, run as an image task.

OPT-IN: DSGATEWAY_REAL_R_LIB names an R library holding DSI, MolgenisAuth,
DSMolgenisArmadillo and dsBaseClient built for the R of the local R base (Debian 12's
4.2; scripts/install-real-r-clients.sh makes one). The published image installs them
from CRAN, which this machine cannot reach; here the image is made at test time, in a
temporary build context, from:
- the shared R base (dsgateway-test/base-r:bookworm, made by scripts/ensure-docker.sh);
- the Debian r-cran-* packages those R packages depend on, downloaded on the host by apt
  against the base's own dpkg status (only what the base lacks) and installed in the
  image with dpkg (a build has no network here: docs ENVIRONMENT.md);
- the four packages COPIED from that library (nothing of them is in this repository);
then client_images/r/Dockerfile FROM it (INSTALL_DATASHIELD=false: it installs nothing,
it adds runner.R, the user and the entrypoint as for the published image).

The task: stations [node-a, node-b], run once at node-a, whose steward approved the
image; runner.R opens one DSI connection per station through the relay and the script's
dsBaseClient calls over `conns` equal the pooled rows.

Without DSGATEWAY_REAL_R_LIB that test is skipped and says why; the runner's helpers
that need no real package are tested always (below).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from email.parser import HeaderParser
from pathlib import Path

import pandas as pd
import pytest

from tests.e2e.conftest import R_BASE, ROOT, _build
from tests.e2e.test_image_tasks import TABLE, finished_runs, image_task, stack  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.r, pytest.mark.timeout(900)]

LIB_ENV = "DSGATEWAY_REAL_R_LIB"
RUNNER = ROOT / "client_images" / "r" / "runner.R"
# What the published image installs from CRAN (MolgenisAuth: DSMolgenisArmadillo's).
IMAGE_PACKAGES = ("DSI", "MolgenisAuth", "DSMolgenisArmadillo", "dsBaseClient")
# R's own packages (priority "base"): in r-base-core, never a Debian r-cran-* package.
R_BASE_PACKAGES = {
    "R", "base", "compiler", "datasets", "graphics", "grDevices", "grid", "methods",
    "parallel", "splines", "stats", "stats4", "tcltk", "tools", "utils",
}  # fmt: skip
BASE_TAG = "dsgateway-test/base-r-real:dev"
IMAGE_TAG = "dsgateway-test/client-r-real:dev"


# ---------------------------------------------------------------- always


def _runner_function(name: str) -> str:
    """R code that defines runner.R's function `name` alone, taken from the file's
    parsed expressions (sourcing runner.R would run it)."""
    return f"""
    for (e in parse({json.dumps(str(RUNNER))}, keep.source = FALSE)) {{
      if (is.call(e) && identical(e[[1]], as.name("<-")) &&
          identical(e[[2]], as.name({json.dumps(name)}))) eval(e)
    }}
    stopifnot(exists({json.dumps(name)}))
    """


def _rscript(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["Rscript", "--vanilla", "-e", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )


def test_dsi_connections_are_named_so_dsbaseclient_can_parse_them():
    """dsBaseClient 6.3.3's ds.table parses `list(TABLE.STUDY.<server>_row.props=...)`:
    with a station called node-a that failed (`unexpected '='`), so the runner names the
    connections itself; the station names stay as they were in `stations`."""
    names = ["node-a", "node_a", "Hospital B", "3rd site", "ok"]
    code = (
        _runner_function(".dsg_server_names")
        + f"""
    out <- .dsg_server_names({json.dumps(names).replace("[", "c(").replace("]", ")")})
    for (n in out) parse(text = sprintf("list(TABLE.STUDY.%s_row.props=1)", n))
    stopifnot(identical(out, make.names(out)))
    cat(jsonlite::toJSON(out))
    """
    )
    done = _rscript(code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["node_a", "node_a_1", "Hospital_B", "s_3rd_site", "ok"]


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"D": ["demo/cohort/patients"]}, "`tables`: D must be a table name"),
        ({"D": {"table": "demo/cohort/patients"}}, "`tables`: D must be a table name"),
        (["demo/cohort/patients"], "`tables` must map symbols to table names"),
        ("demo/cohort/patients", "`tables` must map symbols to table names"),
    ],
)
def test_the_runner_refuses_tables_it_cannot_assign(tmp_path, tables, message):
    """Before any login (nothing answers at DSGATEWAY_URL here): exit 2, saying what."""
    (tmp_path / "parameters.json").write_text(json.dumps({"script": "a.R", "tables": tables}))
    done = subprocess.run(
        ["Rscript", str(RUNNER)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            "DSGATEWAY_URL": "http://127.0.0.1:9",
            "DSGATEWAY_TOKEN": "t",
            "DSGATEWAY_INPUT": str(tmp_path),
            "DSGATEWAY_OUTPUT": str(tmp_path),
        },
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"dsgateway runner: {message}" in done.stderr


# ---------------------------------------------------------------- opt-in: the real packages


def _real_library() -> Path:
    lib = os.environ[LIB_ENV]
    missing = [p for p in IMAGE_PACKAGES if not (Path(lib) / p / "DESCRIPTION").is_file()]
    if missing:
        pytest.fail(f"{LIB_ENV}={lib} lacks {', '.join(missing)}")
    return Path(lib)


def _r_dependencies(lib: Path) -> set[str]:
    """The R packages the image's packages import or depend on, other than themselves
    and R's own."""
    needed: set[str] = set()
    for package in IMAGE_PACKAGES:
        # DCF, as mail headers: "Field: value", continued on indented lines
        fields = HeaderParser().parsestr((lib / package / "DESCRIPTION").read_text())
        for field in ("Depends", "Imports"):
            for item in (fields.get(field) or "").split(","):
                name = item.split("(")[0].strip()
                if name:
                    needed.add(name)
    return needed - set(IMAGE_PACKAGES) - R_BASE_PACKAGES


def _base_dpkg_status(docker_client, target: Path) -> None:
    """The R base's /var/lib/dpkg/status: apt then downloads only what the base lacks."""
    container = docker_client.containers.create(R_BASE)
    try:
        stream, _ = container.get_archive("/var/lib/dpkg/status")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            target.write_bytes(tar.extractfile("status").read())
    finally:
        container.remove()


def _download_debs(r_packages: set[str], status: Path, archives: Path) -> list[str]:
    """The Debian packages of `r_packages` and their dependencies missing in the base,
    downloaded by the host's apt (the image build cannot reach a registry)."""
    debian = sorted(f"r-cran-{name.lower()}" for name in r_packages)
    (archives / "partial").mkdir(parents=True)
    if shutil.which("apt-get") is None:
        pytest.fail("apt-get is needed to fetch the image's Debian r-cran-* packages")
    command = [
        "apt-get", "install", "--download-only", "-y", "-qq", "--no-install-recommends",
        f"-o=Dir::State::status={status}", f"-o=Dir::Cache::archives={archives}",
        *debian,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(
            "The Debian packages the real R clients need cannot be had here, so the image "
            f"cannot be built with them ({' '.join(debian)}):\n{done.stdout}{done.stderr}"
        )
    shutil.rmtree(archives / "partial")
    (archives / "lock").unlink(missing_ok=True)
    return debian


@pytest.fixture(scope="module")
def client_r_real(docker_client, tmp_path_factory) -> str:
    """The R client image with the real packages; its image ID (the digest approved)."""
    lib = _real_library()
    context = tmp_path_factory.mktemp("client-r-real")
    _base_dpkg_status(docker_client, context / "status")
    debian = _download_debs(_r_dependencies(lib), context / "status", context / "debs")
    for package in IMAGE_PACKAGES:
        shutil.copytree(lib / package, context / "rlib" / package)
    (context / "status").unlink()
    checks = ", ".join(f"'{p}'" for p in IMAGE_PACKAGES)
    (context / "Dockerfile").write_text(
        f"FROM {R_BASE}\n"
        f"# {' '.join(debian)} and what they need that the base lacks\n"
        "COPY debs /tmp/debs\n"
        "RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs\n"
        "COPY rlib /usr/local/lib/R/site-library\n"
        f'RUN Rscript -e "for (p in c({checks})) '
        'stopifnot(requireNamespace(p, quietly = TRUE))"\n'
    )
    _build(docker_client, context, BASE_TAG)
    return _build(
        docker_client,
        ROOT / "client_images" / "r",
        IMAGE_TAG,
        BASE_IMAGE=BASE_TAG,
        INSTALL_DATASHIELD="false",
    )


@pytest.mark.skipif(
    not os.environ.get(LIB_ENV),
    reason=f"opt-in: set {LIB_ENV} to an R library with the real DataSHIELD clients "
    "(scripts/install-real-r-clients.sh): the R image is then built with them",
)
def test_the_real_dsi_path_runs_once_over_two_stations_through_the_relay(
    client_r_real,
    stack,  # noqa: F811 (the fixture imported above)
    image_gateway,
):
    from tests.functional.test_real_r_clients import RUNNER_SCRIPT, check_pooled

    w = stack
    node_a, node_b = w.node_ids["node-a"], w.node_ids["node-b"]
    w.stations["node-a"].cli(
        "approve", client_r_real, "--reason", "real DSI runner", "--by", "dana"
    )
    task = image_task(
        w,
        f"{IMAGE_TAG}@{client_r_real}",
        RUNNER_SCRIPT,
        "analysis.R",
        node_ids=[node_a],
        stations=[node_a, node_b],
    )
    runs = finished_runs(w, task["id"])
    assert list(runs) == ["node-a"]  # one run, at node-a; node-b only answers
    run = runs["node-a"]
    assert run["status"] == "completed", (run["message"], run["log"])
    out = {o["name"]: o["content"] for o in run["result"]["outputs"]}["pooled.json"]
    assert out["stations"] == ["node-a", "node-b"]
    assert out["servers"] == ["node_a", "node_b"]
    rows = pd.read_parquet(image_gateway.data_dir / f"{TABLE}.parquet")
    check_pooled(out, pd.concat([rows, rows]))  # both stations serve the same rows here
