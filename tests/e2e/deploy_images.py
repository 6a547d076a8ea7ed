"""The images of the deployment test (tests/e2e/test_docker_deploy.py), made without a
registry and cached by what makes them:

- the local stand-ins for the public bases (docker/offline/make-bases.sh), the Python
  and the node base being the one shared base scripts/ensure-docker.sh makes for the
  client-image tests (python3 and R in one root file system), so a fresh machine runs
  mmdebstrap for it once;
- the coordinator and node images (docker/build.sh), tagged with a hash of their
  sources and their bases' ids, so a second run finds them and builds nothing.

`make test` runs this module in the background before pytest (scripts/prepare-docker.sh),
so that on a fresh machine the slow part overlaps the tests that come first; the
fixture calls `ensure()` too, which waits on the same lock and then finds everything
made. Run it by hand with `.venv/bin/python -m tests.e2e.deploy_images`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
PREFIX = "dsgw-deploy-test"
DOCKER_HOST = "unix:///run/docker-test.sock"
# scripts/ensure-docker.sh: one base holds python3, python3-venv, r-base-core,
# r-cran-httr and r-cran-jsonlite; both names are tags of it.
SHARED_BASE = "dsgateway-test/base-r:bookworm"
LOCK = Path(
    os.environ.get("DSG_DEPLOY_LOCK", Path(tempfile.gettempdir()) / "dsgateway-deploy-images.lock")
)


def run(args: list[str], env: dict | None = None, timeout: float = 900, check=True):
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
            f"\n{proc.stdout[-2000:]}"
        )
    return proc


def source_hash(*extra: str) -> str:
    """What the dsgateway images are made of: the docker/ files, the package's sources
    and requirements, and the base images' ids."""
    h = hashlib.sha256()
    files = [
        *sorted(DOCKER_DIR.glob("*.sh")),
        *sorted(DOCKER_DIR.glob("*.py")),
        DOCKER_DIR / "coordinator" / "Dockerfile",
        DOCKER_DIR / "station" / "Dockerfile",
        ROOT / "setup.cfg",
        ROOT / "setup.py",
        ROOT / "constraints.txt",
        ROOT / "scripts" / "rpy2-requirement.sh",
        *sorted((ROOT / "gateway").rglob("*.py")),
        *sorted((ROOT / "algorithms").rglob("*.py")),
        *sorted(p for p in (ROOT / "algorithms" / "R").rglob("*") if p.is_file()),
    ]
    for path in files:
        if path.exists() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    for item in extra:
        h.update(item.encode())
    return h.hexdigest()[:16]


def image_id(name: str) -> str:
    return run(["docker", "image", "inspect", "-f", "{{.Id}}", name]).stdout.strip()


def _drop_older_tags(repo: str, keep: str) -> None:
    tags = run(["docker", "images", repo, "--format", "{{.Tag}}"]).stdout.split()
    for tag in tags:
        if tag != keep:
            run(["docker", "rmi", f"{repo}:{tag}"], check=False)


def ensure() -> dict[str, str]:
    """Image names: COORDINATOR_IMAGE, NODE_IMAGE, REDIS_IMAGE, POSTGRES_IMAGE. Needs
    the daemon and the shared base (scripts/ensure-docker.sh). One caller at a time
    (a lock file): a second waits for the first and then builds nothing."""
    os.environ.setdefault("DOCKER_HOST", DOCKER_HOST)
    env = {**os.environ, "PY_BASE": SHARED_BASE, "NODE_BASE": SHARED_BASE}
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = run(["bash", str(DOCKER_DIR / "offline" / "make-bases.sh")], env=env).stdout
        bases = dict(line.split("=", 1) for line in out.split() if "=" in line)
        tag = source_hash(image_id(bases["PY_BASE_IMAGE"]), image_id(bases["NODE_BASE_IMAGE"]))
        made = {
            "COORDINATOR_IMAGE": f"{PREFIX}/coordinator:{tag}",
            "NODE_IMAGE": f"{PREFIX}/node:{tag}",
        }
        have = all(
            run(["docker", "image", "inspect", name], check=False).returncode == 0
            for name in made.values()
        )
        if not have:
            build_env = {
                **env,
                **bases,
                "IMAGE_PREFIX": PREFIX,
                "TAG": tag,
                "PYTHON": sys.executable,
            }
            run(["bash", str(DOCKER_DIR / "build.sh")], env=build_env, timeout=1800)
            for name in made.values():
                repo, keep = name.split(":")
                _drop_older_tags(repo, keep)
    return {**made, "REDIS_IMAGE": bases["REDIS_IMAGE"], "POSTGRES_IMAGE": bases["POSTGRES_IMAGE"]}


if __name__ == "__main__":
    for key, value in ensure().items():
        print(f"{key}={value}")
