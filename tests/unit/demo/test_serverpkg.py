"""The demo keeps the per-user dsGatewayBase in step with the dsgateway that runs it
(gateway/demo/serverpkg.py): installed when missing, when an older demo installed it
without a record, and whenever the bundled package's version or content differs; left
alone otherwise. Real R CMD INSTALL into a temporary library, from a copy of the
bundled sources that the test changes as an upgrade would."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from gateway.demo import serverpkg
from gateway.node import rpackage


@pytest.fixture
def source(tmp_path, monkeypatch):
    """A copy of the bundled package, standing in for what this dsgateway ships."""
    copy = tmp_path / "src" / rpackage.PACKAGE
    shutil.copytree(rpackage.SOURCE, copy)
    monkeypatch.setattr(rpackage, "SOURCE", copy)
    return copy


def _has_function(library, name: str) -> bool:
    check = f'quit(status = if (exists("{name}", asNamespace("{rpackage.PACKAGE}"))) 0 else 1)'
    done = subprocess.run(
        ["Rscript", "--vanilla", "-e", f'.libPaths("{library}"); {check}'], capture_output=True
    )
    return done.returncode == 0


def _upgrade(source, function: str) -> None:
    """What a newer dsgateway ships: one more server function, the same version."""
    (source / "R" / "zz_added.R").write_text(f"{function} <- function() 42\n")


def test_the_digest_follows_the_packages_content(source):
    first = serverpkg.source_digest(source)
    assert serverpkg.source_digest(source) == first
    (source / ".Rhistory").write_text("not part of the package")
    assert serverpkg.source_digest(source) == first
    _upgrade(source, "addedDS")
    assert serverpkg.source_digest(source) != first
    bundled = serverpkg.bundled()
    assert bundled["sha256"] == serverpkg.source_digest(source)
    assert bundled["version"] and bundled["version"][0].isdigit()


@pytest.mark.slow
@pytest.mark.r
def test_installed_once_and_again_only_when_the_bundled_package_changes(source, tmp_path):
    library = tmp_path / "rlib"
    said: list[str] = []
    assert serverpkg.ensure_current(library, said.append) is True
    assert said[-1].startswith("Installing the built-in R server package")
    record = json.loads((library / rpackage.PACKAGE / serverpkg.RECORD).read_text())
    assert record == serverpkg.bundled()

    # the same dsgateway again: nothing to do, nothing touched
    description = library / rpackage.PACKAGE / "DESCRIPTION"
    before = description.stat().st_mtime_ns
    assert serverpkg.ensure_current(library, said.append) is False
    assert description.stat().st_mtime_ns == before and len(said) == 1

    # an upgraded dsgateway whose package has a new function under the same version
    _upgrade(source, "addedDS")
    assert not _has_function(library, "addedDS")
    assert serverpkg.ensure_current(library, said.append) is True
    assert said[-1].startswith(f"Updating the R server package in {library}")
    assert _has_function(library, "addedDS")
    assert serverpkg.installed_record(library)["sha256"] == serverpkg.source_digest(source)
    assert serverpkg.ensure_current(library, said.append) is False


@pytest.mark.slow
@pytest.mark.r
def test_a_library_an_older_demo_installed_is_brought_up_to_date(source, tmp_path):
    library = tmp_path / "rlib"
    rpackage.install(library)  # as the demo did before: no record
    assert serverpkg.installed_record(library) is None
    _upgrade(source, "laterDS")
    assert serverpkg.ensure_current(library, lambda _: None) is True
    assert _has_function(library, "laterDS")


def test_a_record_that_is_not_of_the_installed_package_is_no_record(tmp_path):
    folder = tmp_path / "rlib" / rpackage.PACKAGE
    folder.mkdir(parents=True)
    (folder / "DESCRIPTION").write_text("Package: dsGatewayBase\nVersion: 0.2.0\n")
    (folder / serverpkg.RECORD).write_text(json.dumps({"version": "0.1.0", "sha256": "x"}))
    assert serverpkg.installed_record(tmp_path / "rlib") is None
    (folder / serverpkg.RECORD).write_text("{not json")
    assert serverpkg.installed_record(tmp_path / "rlib") is None
    (folder / serverpkg.RECORD).write_text(json.dumps({"version": "0.2.0", "sha256": "y"}))
    assert serverpkg.installed_record(tmp_path / "rlib") == {"version": "0.2.0", "sha256": "y"}
