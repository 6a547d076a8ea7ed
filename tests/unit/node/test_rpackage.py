"""Installing the shipped R server package and finding it without configuration."""

import pytest

from gateway.node import rpackage


def test_shipped_sources_are_in_the_python_package():
    assert (rpackage.SOURCE / "DESCRIPTION").is_file()
    assert "AggregateMethods" in (rpackage.SOURCE / "DESCRIPTION").read_text()


def test_default_library_prefers_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DSGATEWAY_R_LIB", "/opt/somewhere")
    assert rpackage.default_library() == "/opt/somewhere"


def test_default_library_is_the_user_library_only_once_installed(monkeypatch, tmp_path):
    monkeypatch.delenv("DSGATEWAY_R_LIB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert rpackage.default_library() is None
    (rpackage.user_library() / "dsGatewayBase").mkdir(parents=True)
    (rpackage.user_library() / "dsGatewayBase" / "DESCRIPTION").write_text("Package: x\n")
    assert rpackage.default_library() == str(tmp_path / "dsgateway" / "rlib")


@pytest.mark.slow
def test_install_into_a_fresh_library(tmp_path):
    library = tmp_path / "lib"
    assert not rpackage.is_installed(library)
    rpackage.install(library)
    assert rpackage.is_installed(library)
    assert rpackage.is_installed(f"/nonexistent:{library}")
