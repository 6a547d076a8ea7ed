"""Docker for the client-image tests: a real daemon and real images built here.

`docker_client` runs scripts/ensure-docker.sh once per session: it installs Docker and
mmdebstrap when missing, starts a daemon on unix:///run/docker-test.sock when nothing
answers there, and makes the local base image (no registry is reachable): one root file
system with python3 and R, tagged as both PY_BASE and R_BASE (the deployment test
builds on it too). If Docker
cannot run, every test that needs it FAILS with the script's reason: it never skips.

Images (built once per session; Docker's layer cache makes later sessions quick):
- `client_python`: client_images/python FROM the local Python base, with wheels built
  on the host (kept in client_images/python/wheels between sessions);
- `client_r`: client_images/r FROM the local R base, without DataSHIELD's CRAN
  packages (INSTALL_DATASHIELD=false: its runner speaks the Armadillo API with httr);
- `probe_image`: the local Python base running /input/script.py, for scripts that
  attack the sandbox (they need no client library).

`image_gateway` is a real gateway (R workers, waitress on 127.0.0.1) that accepts the
HS256 tokens `image_tokens` signs, as a coordinator's relay tokens would be.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER_HOST = "unix:///run/docker-test.sock"
PY_BASE = "dsgateway-test/base-python:bookworm"
R_BASE = "dsgateway-test/base-r:bookworm"
WHEEL_REQUIREMENTS = [
    "click",
    "pyyaml",
    "requests",
    "datashield",
    "datashield-opal",
    "numpy",
    "pandas",
]
TOKEN_SECRET = "image-tests-secret-0123456789abcdef0123"
TOKEN_ENV = "DSG_IMAGE_TEST_TOKEN_SECRET"
ISSUER = "https://coordinator.image-tests"
AUDIENCE = "node-image-tests"


@pytest.fixture(scope="session")
def docker_client():
    os.environ.setdefault("DOCKER_HOST", DOCKER_HOST)
    try:
        import docker
    except ImportError:
        pytest.fail("The Docker SDK is missing: pip install -e '.[images]' (see setup.cfg).")
    script = ROOT / "scripts" / "ensure-docker.sh"
    proc = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=900, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"Docker cannot run here, so the client-image tests cannot either.\n"
            f"{script} said:\n{proc.stderr[-4000:]}{proc.stdout[-2000:]}"
        )
    client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], timeout=120)
    try:
        client.ping()
    except Exception as err:
        pytest.fail(f"The Docker daemon at {os.environ['DOCKER_HOST']} does not answer: {err}")
    yield client
    client.close()


def _build(client, path: Path, tag: str, **buildargs: str) -> str:
    import docker

    try:
        image, _ = client.images.build(
            path=str(path), tag=tag, buildargs=buildargs or None, rm=True, forcerm=True
        )
    except docker.errors.BuildError as err:
        log = "".join(str(c.get("stream") or c.get("error") or "") for c in err.build_log)
        pytest.fail(f"Building {tag} failed: {err}\n{log[-4000:]}")
    return image.id


def _wheels(target: Path) -> None:
    """Dependency wheels, made on the host once per set of constraints."""
    constraints = ROOT / "constraints.txt"
    stamp = hashlib.sha256(
        constraints.read_bytes() + " ".join(WHEEL_REQUIREMENTS).encode()
    ).hexdigest()
    stamp_file = target / ".stamp"
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return
    target.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "-c", str(constraints)]
    proc = subprocess.run(
        [*command, "-w", str(target), *WHEEL_REQUIREMENTS],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip wheel failed (the Python client image needs the wheels):\n{proc.stderr}")
    stamp_file.write_text(stamp)


@pytest.fixture(scope="session")
def client_python(docker_client) -> str:
    here = ROOT / "client_images" / "python"
    _wheels(here / "wheels")
    dist = here / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    dist.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"Building the dsgateway wheel failed:\n{proc.stderr[-4000:]}")
    return _build(docker_client, here, "dsgateway-test/client-python:dev", BASE_IMAGE=PY_BASE)


@pytest.fixture(scope="session")
def client_r(docker_client) -> str:
    return _build(
        docker_client,
        ROOT / "client_images" / "r",
        "dsgateway-test/client-r:dev",
        BASE_IMAGE=R_BASE,
        INSTALL_DATASHIELD="false",
    )


@pytest.fixture(scope="session")
def probe_image(docker_client, tmp_path_factory) -> str:
    context = tmp_path_factory.mktemp("probe-image")
    (context / "Dockerfile").write_text(
        f"FROM {PY_BASE}\n"
        "ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1\n"
        'CMD ["python3", "/input/script.py"]\n'
    )
    return _build(docker_client, context, "dsgateway-test/probe:dev")


# ---------------------------------------------------------------- a real gateway


@dataclass
class ImageGateway:
    url: str
    address: tuple[str, int]
    config: object
    data_dir: Path

    def audit(self, **filters) -> list[dict]:
        from gateway.node.audit import AuditLog

        return AuditLog(self.config.audit_path).read(**filters)


@pytest.fixture(scope="session")
def image_gateway(tmp_path_factory, r_lib, example_data) -> ImageGateway:
    from gateway.node.app import close_services, create_app
    from gateway.node.config import NodeConfig
    from gateway.node.server import BackgroundServer

    work = tmp_path_factory.mktemp("image-gateway")
    data = work / "data"
    shutil.copytree(example_data, data)
    os.environ[TOKEN_ENV] = TOKEN_SECRET
    config = NodeConfig.from_dict(
        {
            "data_dir": str(data),
            "state_dir": str(work / "state"),
            "r_lib": r_lib,
            "tokens": {"issuer": ISSUER, "audience": AUDIENCE, "secret_env": TOKEN_ENV},
            "profiles": {"default": {"packages": ["dsGatewayBase"]}},
            "limits": {"max_sessions": 20, "warm_workers": 2, "command_timeout": 60},
        }
    )
    app = create_app(config)
    server = BackgroundServer(app, "127.0.0.1", 0).start()
    try:
        yield ImageGateway(server.url, ("127.0.0.1", int(server.port)), config, data)
    finally:
        server.stop()
        close_services(app.extensions["dsgateway"])


@pytest.fixture(scope="session")
def image_tokens():
    from gateway.agent.images.tokens import JwtTokenMinter

    return JwtTokenMinter(TOKEN_SECRET, issuer=ISSUER, audience=AUDIENCE)
