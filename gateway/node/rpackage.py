"""The R server package that ships with dsgateway (`dsGatewayBase`) and where it lives.

`make setup` installs it into the checkout's `.rlib`; an installed dsgateway installs it
with `dsgateway gateway install-r-package`, by default into a per-user library, which
the gateway then finds without configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import algorithms

PACKAGE = "dsGatewayBase"
SOURCE = Path(algorithms.__file__).resolve().parent / "R" / PACKAGE
LIBRARY_ENV = "DSGATEWAY_R_LIB"


def user_library() -> Path:
    """The per-user R library dsgateway installs into when none is configured."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dsgateway" / "rlib"


def default_library() -> str | None:
    """$DSGATEWAY_R_LIB, else the per-user library if dsgateway installed into it."""
    configured = os.environ.get(LIBRARY_ENV)
    if configured:
        return configured
    user = user_library()
    return str(user) if is_installed(user) else None


def is_installed(library: str | os.PathLike | None) -> bool:
    if not library:
        return False
    return any(
        (Path(path) / PACKAGE / "DESCRIPTION").is_file()
        for path in str(library).split(os.pathsep)
        if path
    )


def install(library: str | os.PathLike) -> Path:
    """R CMD INSTALL the shipped package into `library` (created if missing)."""
    if shutil.which("R") is None:
        raise RuntimeError("R is not installed (Debian: apt-get install r-base-core r-base-dev)")
    if not (SOURCE / "DESCRIPTION").is_file():
        raise RuntimeError(f"The R package sources are missing from {SOURCE}")
    target = Path(library)
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["R", "CMD", "INSTALL", "--no-multiarch", f"--library={target}", str(SOURCE)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"R CMD INSTALL failed:\n{result.stderr[-2000:]}")
    return target
