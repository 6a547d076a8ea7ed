"""The demo's stations set `datashield.seed` (launcher.station_profiles), which
ds.histogram needs: a real gateway (R, dsGatewayBase) over one demo station's registry
with the demo's profile, and our Python `algorithms.histogram` through it, against
pandas on the station's rows; the same profile without the seed refuses, as the demo's
stations did before."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from datashield import DSLoginBuilder, DSSession
from werkzeug.security import generate_password_hash

import algorithms as ds
from algorithms.errors import NodeError
from gateway.demo.launcher import station_profiles
from gateway.demo.registry import SITES, TABLE, generate_registry, write_registry

pytestmark = [pytest.mark.slow, pytest.mark.r]

PASSWORD = "steward-test-pw"
NFILTER_TAB = 3  # dsGatewayBase's default.nfilter.tab
SITE = 0


@pytest.fixture(scope="module")
def station(tmp_path_factory, r_lib):
    from gateway.node.app import close_services, create_app
    from gateway.node.config import NodeConfig
    from gateway.node.server import BackgroundServer

    work = tmp_path_factory.mktemp("station")
    write_registry(work / "data", SITE, seed=2020)
    profiles = station_profiles(123457)
    # the same profile, as the demo's stations had it: no seed
    profiles["noseed"] = {"packages": profiles["default"]["packages"]}
    config = NodeConfig.from_dict(
        {
            "data_dir": str(work / "data"),
            "state_dir": str(work / "var"),
            "r_lib": r_lib,
            "users": {
                "alice": {
                    "password_hash": generate_password_hash(PASSWORD, method="scrypt:1024:8:1"),
                    "projects": [TABLE.split("/")[0]],
                }
            },
            "profiles": profiles,
            "limits": {"warm_workers": 1},
        }
    )
    app = create_app(config)
    server = BackgroundServer(app).start()
    try:
        yield server.url
    finally:
        server.stop()
        close_services(app.extensions["dsgateway"])


def _session(url: str, profile: str) -> DSSession:
    builder = DSLoginBuilder()
    builder.add(
        "station_a",
        url,
        "alice",
        PASSWORD,
        profile=profile,
        driver="gateway.client.ArmadilloDriver",
    )
    session = DSSession(builder.build())
    session.open()
    session.assign_table("D", TABLE)
    return session


def test_the_demo_profile_sets_a_seed():
    profile = station_profiles(42)["default"]
    assert profile["options"] == {"datashield.seed": 42}
    assert profile["packages"] == ["dsGatewayBase"]


def test_histogram_with_the_demos_seed_equals_pandas(station):
    session = _session(station, "default")
    try:
        h = ds.histogram(session, "D$age", 10)
        again = ds.histogram(session, "D$age", 10)
    finally:
        session.close()
    age = generate_registry(SITE, 2020)["age"].dropna().astype(float)
    assert SITES[SITE].name == "station-a"
    # the blurred range holds every value, and the seed makes it the same each time
    assert h.breaks[0] < age.min() and h.breaks[-1] > age.max()
    np.testing.assert_array_equal(h.breaks, again.breaks)
    # R's hist(): right-closed bins, the first closed on both sides
    counts = pd.cut(age, h.breaks, right=True, include_lowest=True).value_counts(sort=False)
    expected = counts.to_numpy().copy()
    small = (expected > 0) & (expected < NFILTER_TAB)
    expected[small] = 0  # the small-cells rule
    np.testing.assert_array_equal(h.counts, expected)
    assert h.invalid_cells == {"station_a": int(small.sum())}


def test_without_the_seed_the_histogram_is_refused(station):
    session = _session(station, "noseed")
    try:
        with pytest.raises(NodeError, match=r"datashield\.seed") as refused:
            ds.histogram(session, "D$age", 10)
    finally:
        session.close()
    assert "histogramDS1" in str(refused.value)
