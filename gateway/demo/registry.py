"""Synthetic multiple-sclerosis registries with COVID-19 outcomes, one per station.

Modelled loosely on the multi-country registry studies of people with MS who had
COVID-19 (the Global Data Sharing Initiative, GDSI): age, sex, disease course,
disability (EDSS), disease-modifying therapy (DMT) and how severe COVID-19 was. The
three sites differ on purpose, as real registries do: size, age structure, the share
of progressive MS, the therapy mix, and how complete each variable is.

Everything is drawn from ``numpy.random.default_rng`` seeded by (seed, site number):
the same seed gives the same rows at every station, byte for byte. The people are
invented; nothing here is real data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "COURSES",
    "SEVERITIES",
    "SITES",
    "TABLE",
    "THERAPIES",
    "Site",
    "generate_registry",
    "pooled_registries",
    "write_registry",
]

#: The table every station serves, as project/folder/table.
TABLE = "ms/registry/covid19"

COURSES = ("CIS", "RRMS", "SPMS", "PPMS")
#: Therapy classes. "none" sorts first (R orders factor levels alphabetically; all
#: labels are lowercase so that every collation agrees), so it is the reference level
#: of the regression: each odds ratio compares a therapy class with no therapy.
THERAPIES = ("none", "other_high_efficacy", "platform", "rituximab_ocrelizumab", "s1p_modulator")
SEVERITIES = ("ambulatory", "hospitalised", "icu", "died")

# The true model the outcome is drawn from (log odds of hospitalisation or worse).
_INTERCEPT = -3.1
_AGE = 0.045  # per year over 45
_MALE = 0.35
_EDSS = 0.22  # per EDSS point
_THERAPY = {
    "none": 0.0,
    "other_high_efficacy": 0.05,
    "platform": -0.25,
    "rituximab_ocrelizumab": 0.85,
    "s1p_modulator": 0.1,
}


@dataclass(frozen=True)
class Site:
    """One station's registry: who it sees and how complete its records are."""

    name: str
    label: str
    n: int
    age_mean: float
    age_sd: float
    female: float  # share of women
    progressive: float  # share of SPMS + PPMS
    therapy_mix: tuple[float, ...]  # probabilities in THERAPIES order, relapsing MS
    missing: dict[str, float]  # column -> share missing
    site_effect: float  # log odds shift (care pathways, testing, period)


SITES: tuple[Site, ...] = (
    Site(
        name="station-a",
        label="national registry (large, platform therapies)",
        n=1400,
        age_mean=46,
        age_sd=12,
        female=0.71,
        progressive=0.18,
        therapy_mix=(0.22, 0.10, 0.40, 0.13, 0.15),
        missing={"age": 0.01, "edss": 0.12, "dmt": 0.02, "course": 0.03, "covid": 0.02},
        site_effect=0.0,
    ),
    Site(
        name="station-b",
        label="university MS centre (younger, many anti-CD20)",
        n=800,
        age_mean=41,
        age_sd=11,
        female=0.68,
        progressive=0.12,
        therapy_mix=(0.12, 0.14, 0.24, 0.34, 0.16),
        missing={"age": 0.0, "edss": 0.05, "dmt": 0.01, "course": 0.01, "covid": 0.01},
        site_effect=-0.2,
    ),
    Site(
        name="station-c",
        label="regional clinic (small, older, more progressive MS)",
        n=350,
        age_mean=52,
        age_sd=12,
        female=0.64,
        progressive=0.35,
        therapy_mix=(0.40, 0.06, 0.30, 0.14, 0.10),
        missing={"age": 0.02, "edss": 0.20, "dmt": 0.03, "course": 0.06, "covid": 0.04},
        site_effect=0.3,
    ),
)


def _course(rng: np.random.Generator, site: Site, age: np.ndarray) -> np.ndarray:
    n = len(age)
    # Progressive MS is commoner with age; the site sets the overall share.
    p_prog = np.clip(site.progressive * (1 + 0.05 * (age - site.age_mean)), 0.01, 0.9)
    progressive = rng.random(n) < p_prog
    ppms = rng.random(n) < 0.4  # of the progressive ones
    cis = rng.random(n) < 0.05  # of the relapsing ones
    return np.where(progressive, np.where(ppms, "PPMS", "SPMS"), np.where(cis, "CIS", "RRMS"))


def _edss(rng: np.random.Generator, course: np.ndarray, age: np.ndarray) -> np.ndarray:
    base = {"CIS": 1.0, "RRMS": 2.0, "SPMS": 5.5, "PPMS": 5.0}
    mean = np.array([base[c] for c in course]) + 0.03 * (age - 45)
    raw = rng.normal(mean, 1.3)
    return np.clip(np.round(raw * 2) / 2, 0.0, 9.5)  # 0 to 9.5 in steps of 0.5


def _therapy(rng: np.random.Generator, site: Site, course: np.ndarray) -> np.ndarray:
    n = len(course)
    mix = np.array(site.therapy_mix, dtype=float)
    mix = mix / mix.sum()
    chosen = np.array(THERAPIES)[rng.choice(len(THERAPIES), size=n, p=mix)]
    # Progressive MS: mostly no therapy, else ocrelizumab (PPMS) or siponimod (SPMS).
    prog_pick = rng.random(n)
    prog = np.where(
        prog_pick < 0.55,
        "none",
        np.where(prog_pick < 0.85, "rituximab_ocrelizumab", "s1p_modulator"),
    )
    return np.where(np.isin(course, ("SPMS", "PPMS")), prog, chosen)


def _severity(rng: np.random.Generator, site: Site, age, male, edss, therapy) -> np.ndarray:
    effect = np.array([_THERAPY[t] for t in therapy])
    logit = _INTERCEPT + site.site_effect + _AGE * (age - 45) + _MALE * male + _EDSS * edss
    logit = logit + effect
    severe = rng.random(len(age)) < 1 / (1 + np.exp(-logit))
    # Among the severe: ICU and death commoner with age and disability.
    worse = rng.random(len(age))
    p_icu = np.clip(0.15 + 0.004 * (age - 45) + 0.02 * edss, 0.02, 0.6)
    p_died = np.clip(0.05 + 0.006 * (age - 45) + 0.02 * edss, 0.01, 0.5)
    level = np.where(
        worse < p_died, "died", np.where(worse < p_died + p_icu, "icu", "hospitalised")
    )
    return np.where(severe, level, "ambulatory")


def generate_registry(site: Site | int, seed: int = 2020) -> pd.DataFrame:
    """One station's registry as a DataFrame (missing values as NA).

    Columns: ``id`` (int), ``age`` (years, float), ``sex`` (female/male), ``course``
    (CIS/RRMS/SPMS/PPMS), ``edss`` (0-9.5 by 0.5), ``dmt`` (one of THERAPIES),
    ``covid_severity`` (ambulatory/hospitalised/icu/died) and ``severe`` (1 if
    hospitalised, in intensive care or died; 0 if ambulatory; NA if unknown).
    """
    if isinstance(site, int):
        site_number, site = site, SITES[site]
    else:
        site_number = SITES.index(site)
    rng = np.random.default_rng([seed, site_number])
    n = site.n
    age = np.round(np.clip(rng.normal(site.age_mean, site.age_sd, n), 18, 90), 1)
    male = (rng.random(n) >= site.female).astype(int)
    course = _course(rng, site, age)
    edss = _edss(rng, course, age)
    therapy = _therapy(rng, site, course)
    severity = _severity(rng, site, age, male, edss, therapy)

    frame = pd.DataFrame(
        {
            "id": np.arange(1, n + 1, dtype=np.int32),
            "age": age,
            "sex": np.where(male == 1, "male", "female"),
            "course": course,
            "edss": edss,
            "dmt": therapy,
            "covid_severity": severity,
        }
    )
    # Missing values: drawn after the outcome, so the data are missing at random.
    for column, share in site.missing.items():
        gone = rng.random(n) < share
        targets = ["covid_severity"] if column == "covid" else [column]
        for target in targets:
            frame[target] = frame[target].astype(object).where(~gone, None)
    frame["age"] = frame["age"].astype("Float64")
    frame["edss"] = frame["edss"].astype("Float64")
    severe = frame["covid_severity"].map(lambda s: None if s is None else int(s != "ambulatory"))
    frame["severe"] = severe.astype("Int32")
    return frame


def _arrow(frame: pd.DataFrame) -> pa.Table:
    columns = {
        "id": pa.array(frame["id"].to_numpy(), type=pa.int32()),
        "age": pa.array(frame["age"], type=pa.float64(), from_pandas=True),
        "edss": pa.array(frame["edss"], type=pa.float64(), from_pandas=True),
        "severe": pa.array(frame["severe"], type=pa.int32(), from_pandas=True),
    }
    # Categories as dictionary-encoded text: the gateway makes them R factors.
    for name in ("sex", "course", "dmt", "covid_severity"):
        columns[name] = pa.array(
            frame[name], type=pa.string(), from_pandas=True
        ).dictionary_encode()
    order = ["id", "age", "sex", "course", "edss", "dmt", "covid_severity", "severe"]
    return pa.table({name: columns[name] for name in order})


def write_registry(data_dir: Path | str, site: Site | int, seed: int = 2020) -> Path:
    """Write one station's registry as ``data_dir/ms/registry/covid19.parquet``."""
    path = Path(data_dir).joinpath(*TABLE.split("/")).with_suffix(".parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(_arrow(generate_registry(site, seed)), path)
    return path


def pooled_registries(seed: int = 2020) -> pd.DataFrame:
    """All stations' rows in one frame with a ``station`` column: what a pooled
    analysis (which the federation never does) would see."""
    frames = [generate_registry(i, seed).assign(station=s.name) for i, s in enumerate(SITES)]
    return pd.concat(frames, ignore_index=True)
