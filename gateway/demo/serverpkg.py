"""The demo's stations' R server package (dsGatewayBase) in the per-user library, kept in
step with the dsgateway that runs the demo.

The package ships inside dsgateway (gateway.node.rpackage.SOURCE) and changes with it,
often without a new version number (cDS came in 0.1.0). So the install records what it
installed, the bundled DESCRIPTION's `Version` and a SHA-256 over the package's source
files, in `<library>/dsGatewayBase/dsgateway-source.json`; a demo whose bundled package
differs in either (or finds no record) installs it again. The check reads ~25 small
files: milliseconds. R CMD INSTALL replaces the package folder, record included, so a
failed or foreign install is never taken for ours.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from gateway.node import rpackage

__all__ = ["RECORD", "bundled", "ensure_current", "installed_record", "source_digest"]

RECORD = "dsgateway-source.json"


def source_digest(source: Path) -> str:
    """SHA-256 over the package's files: relative path and content, in a fixed order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(source).rglob("*") if p.is_file()):
        rel = path.relative_to(source)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        digest.update(rel.as_posix().encode("utf-8") + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _version(description: Path) -> str | None:
    try:
        text = description.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return None


def bundled(source: Path | None = None) -> dict[str, str | None]:
    """What this dsgateway ships: {"version", "sha256"}."""
    source = Path(source or rpackage.SOURCE)
    return {"version": _version(source / "DESCRIPTION"), "sha256": source_digest(source)}


def installed_record(library: Path) -> dict | None:
    """The record of our last install into `library`, if it is still the package there
    (its DESCRIPTION's version is the recorded one)."""
    folder = Path(library) / rpackage.PACKAGE
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != _version(folder / "DESCRIPTION"):
        return None
    return record


def ensure_current(library: Path, echo: Callable[[str], None] = print) -> bool:
    """Install the bundled package into `library` unless it already holds exactly this
    one; True when it (re)installed."""
    library = Path(library)
    want = bundled()
    have = installed_record(library)
    if (
        have is not None
        and have.get("version") == want["version"]
        and (have.get("sha256") == want["sha256"])
    ):
        return False
    if not rpackage.is_installed(library):
        echo(f"Installing the built-in R server package into {library} ...")
    else:
        echo(
            f"Updating the R server package in {library}: this dsgateway ships another "
            f"{rpackage.PACKAGE} ({want['version']}, {want['sha256'][:12]}) ..."
        )
    rpackage.install(library)
    record = Path(library) / rpackage.PACKAGE / RECORD
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(want), encoding="utf-8")
    os.replace(tmp, record)
    return True
