"""The demo's synthetic registries: reproducible from the seed, realistic in range and
structure, different between sites, with missing values, and written as the gateway
reads them."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from gateway.demo.registry import (
    COURSES,
    SEVERITIES,
    SITES,
    TABLE,
    THERAPIES,
    generate_registry,
    pooled_registries,
    write_registry,
)


@pytest.fixture(scope="module")
def pooled() -> pd.DataFrame:
    return pooled_registries(2020)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_seed_reproduces_the_data_exactly(tmp_path):
    for site in range(len(SITES)):
        first = write_registry(tmp_path / "one", site, seed=7)
        again = write_registry(tmp_path / "two", site, seed=7)
        assert _digest(first) == _digest(again)
        pd.testing.assert_frame_equal(generate_registry(site, 7), generate_registry(site, 7))
    other = write_registry(tmp_path / "three", 0, seed=8)
    assert _digest(other) != _digest(tmp_path / "one" / "ms" / "registry" / "covid19.parquet")


def test_values_are_in_range_and_coded(pooled):
    assert set(pooled["sex"].dropna()) == {"female", "male"}
    assert set(pooled["course"].dropna()) == set(COURSES)
    assert set(pooled["dmt"].dropna()) == set(THERAPIES)
    assert set(pooled["covid_severity"].dropna()) == set(SEVERITIES)
    edss = pooled["edss"].dropna().astype(float)
    assert edss.between(0, 9.5).all()
    assert ((edss * 2) % 1 == 0).all()  # steps of 0.5
    assert pooled["age"].dropna().astype(float).between(18, 90).all()
    severe = pooled.dropna(subset=["covid_severity"])
    assert (severe["severe"] == (severe["covid_severity"] != "ambulatory").astype(int)).all()
    assert pooled.loc[pooled["covid_severity"].isna(), "severe"].isna().all()
    # Progressive MS is older and more disabled, as in the registries.
    by_course = pooled.groupby("course")[["age", "edss"]].mean()
    assert by_course.loc["SPMS", "edss"] > by_course.loc["RRMS", "edss"] + 2
    assert by_course.loc["SPMS", "age"] > by_course.loc["RRMS", "age"]


def test_sites_differ_and_have_missing_values(pooled):
    by_site = pooled.groupby("station")
    assert list(by_site.size()) == [s.n for s in SITES]
    ages = by_site["age"].mean()
    assert ages["station-c"] > ages["station-a"] > ages["station-b"]
    anti_cd20 = by_site["dmt"].apply(lambda d: (d == "rituximab_ocrelizumab").mean())
    assert anti_cd20["station-b"] > 2 * anti_cd20["station-a"] - 0.05
    missing = by_site["edss"].apply(lambda e: e.isna().mean())
    assert missing["station-c"] > missing["station-b"] and missing.min() > 0
    for column in ("age", "edss", "dmt", "course", "covid_severity"):
        assert pooled[column].isna().any(), column


def test_the_outcome_depends_on_therapy_and_disability(pooled):
    known = pooled.dropna(subset=["severe", "dmt", "edss"])
    rate = known.groupby("dmt")["severe"].mean()
    assert rate["rituximab_ocrelizumab"] > rate["platform"]
    high = known[known["edss"].astype(float) >= 6]["severe"].mean()
    low = known[known["edss"].astype(float) <= 2]["severe"].mean()
    assert high > 2 * low


def test_the_small_site_has_a_small_cell_with_the_default_seed(pooled):
    """What the demo's contingency table shows: with seed 2020 the small station has a
    therapy with 1 or 2 severe cases, so its gateway refuses that table."""
    c = pooled[pooled["station"] == "station-c"].dropna(subset=["dmt", "severe"])
    counts = pd.crosstab(c["dmt"], c["severe"]).to_numpy()
    assert ((counts > 0) & (counts < 3)).any()


def test_the_parquet_file_is_what_the_gateway_reads(tmp_path):
    path = write_registry(tmp_path, 2, seed=2020)
    assert path == tmp_path.joinpath(*TABLE.split("/")).with_suffix(".parquet")
    table = pq.read_table(path)
    assert table.column_names == [
        "id",
        "age",
        "sex",
        "course",
        "edss",
        "dmt",
        "covid_severity",
        "severe",
    ]
    assert str(table.schema.field("dmt").type).startswith("dictionary")
    assert str(table.schema.field("severe").type) == "int32"
    frame = generate_registry(2, 2020)
    read = table.to_pandas()
    assert np.array_equal(read["age"].isna(), frame["age"].isna())
    assert read["edss"].sum() == pytest.approx(frame["edss"].astype(float).sum())
    # "none" sorts first in every collation, so it is the regression's reference level.
    assert sorted(THERAPIES) == list(THERAPIES) == sorted(THERAPIES, key=str.lower)
