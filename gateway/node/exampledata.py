"""Reproducible synthetic data: the example study for demos and tests, and the table
the load benchmark reads.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives the
same bytes of data (different seeds make different "nodes" of one federated study).
The people are invented; nothing here is real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

__all__ = ["EXAMPLE_TABLES", "generate_example_data", "write_benchmark_table"]

#: The tables generate_example_data writes, as project/folder/table names.
EXAMPLE_TABLES = ("demo/cohort/patients", "demo/cohort/labs")

REGIONS = ("north", "south", "east", "west", "centre")


def generate_example_data(data_dir: Path | str, seed: int = 1, n: int = 500) -> dict[str, Path]:
    """Write the example study under ``data_dir`` and return {table name: file path}.

    ``demo/cohort/patients`` (Parquet, n rows): ``id`` int32, ``age`` double,
    ``sex`` categorical (female/male), ``height`` and ``weight`` double, ``bmi`` double
    (about 5% missing), ``smoker`` bool (a few missing), ``visits`` int32 (a few
    missing), ``region`` text, ``enrolled`` date, ``outcome`` int32 0/1 (depends on
    age, bmi and smoking, so a logistic regression finds something).

    ``demo/cohort/labs`` (CSV, n rows, same ids): ``id``, ``glucose``, ``cholesterol``
    (some ``NA``), ``hdl``, ``ldl``, ``lab`` (text), ``sampled`` (date).
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = np.random.default_rng(seed)
    folder = Path(data_dir) / "demo" / "cohort"
    folder.mkdir(parents=True, exist_ok=True)

    ids = np.arange(1, n + 1, dtype=np.int32)
    age = np.round(rng.uniform(18, 90, n), 1)
    female = rng.random(n) < 0.52
    sex = np.where(female, "female", "male")
    height = np.round(np.where(female, rng.normal(165, 7, n), rng.normal(178, 7, n)), 1)
    bmi_true = np.clip(rng.normal(26 + 0.03 * (age - 50), 4.5, n), 15, 55)
    weight = np.round(bmi_true * (height / 100) ** 2, 1)
    bmi = np.round(weight / (height / 100) ** 2, 2)
    bmi_missing = rng.random(n) < 0.05
    smoker = rng.random(n) < 0.25
    smoker_missing = rng.random(n) < 0.02
    visits = rng.poisson(3 + 0.05 * (age - 18)).astype(np.int32)
    visits_missing = rng.random(n) < 0.01
    region = np.array(REGIONS)[rng.integers(0, len(REGIONS), n)]
    enrolled = np.datetime64("2015-01-01") + rng.integers(0, 6 * 365, n).astype("timedelta64[D]")
    logit = -6.0 + 0.05 * age + 0.08 * bmi_true + 0.9 * smoker
    outcome = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int32)

    patients = pa.table(
        {
            "id": pa.array(ids),
            "age": pa.array(age),
            "sex": pa.array(sex).dictionary_encode(),
            "height": pa.array(height),
            "weight": pa.array(weight),
            "bmi": pa.array(bmi, mask=bmi_missing),
            "smoker": pa.array(smoker, mask=smoker_missing),
            "visits": pa.array(visits, mask=visits_missing),
            "region": pa.array(region),
            "enrolled": pa.array(enrolled.astype("datetime64[D]"), type=pa.date32()),
            "outcome": pa.array(outcome),
        }
    )
    patients_path = folder / "patients.parquet"
    pq.write_table(patients, patients_path)

    chol_missing = rng.random(n) < 0.08
    hdl = np.round(np.clip(rng.normal(1.4, 0.35, n), 0.3, None), 2)
    ldl = np.round(np.clip(rng.normal(3.2, 0.8, n), 0.5, None), 2)
    labs = pa.table(
        {
            "id": pa.array(ids),
            "glucose": pa.array(np.round(rng.lognormal(1.65, 0.2, n), 2)),
            "cholesterol": pa.array(
                np.round(hdl + ldl + rng.normal(0.6, 0.2, n), 2), mask=chol_missing
            ),
            "hdl": pa.array(hdl),
            "ldl": pa.array(ldl),
            "lab": pa.array(np.array(["lab-a", "lab-b", "lab-c"])[rng.integers(0, 3, n)]),
            "sampled": pa.array(
                (enrolled + rng.integers(0, 30, n).astype("timedelta64[D]")).astype(
                    "datetime64[D]"
                ),
                type=pa.date32(),
            ),
        }
    )
    labs_path = folder / "labs.csv"
    # R's write.csv conventions: missing values as NA, text quoted.
    pacsv.write_csv(
        labs,
        labs_path,
        write_options=pacsv.WriteOptions(null_string="NA", quoting_style="needed"),
    )
    return {EXAMPLE_TABLES[0]: patients_path, EXAMPLE_TABLES[1]: labs_path}


def benchmark_table(rows: int = 1_000_000, seed: int = 1) -> pa.Table:
    """The load benchmark's table: 10 columns, numeric and categorical, some missing.

    ``x1``..``x4`` double (x1 5% and x3 1% null), ``n1`` int32 (2% null), ``n2`` int64
    (fits R's integer), ``f1`` text of 5 values (2% null), ``f2`` dictionary of 3,
    ``f3`` text of 200 values, ``b1`` bool (1% null).
    """
    rng = np.random.default_rng(seed)

    def nulls(p: float) -> np.ndarray:
        return rng.random(rows) < p

    f3_levels = np.array([f"code{i:03d}" for i in range(200)])
    return pa.table(
        {
            "x1": pa.array(rng.normal(50, 10, rows), mask=nulls(0.05)),
            "x2": pa.array(rng.normal(0, 1, rows)),
            "x3": pa.array(rng.gamma(2.0, 3.0, rows), mask=nulls(0.01)),
            "x4": pa.array(rng.uniform(0, 1000, rows)),
            "n1": pa.array(rng.integers(0, 100, rows, dtype=np.int32), mask=nulls(0.02)),
            "n2": pa.array(rng.integers(0, 10**6, rows, dtype=np.int64)),
            "f1": pa.array(
                np.array(REGIONS)[rng.integers(0, len(REGIONS), rows)], mask=nulls(0.02)
            ),
            "f2": pa.array(
                np.array(["low", "mid", "high"])[rng.integers(0, 3, rows)]
            ).dictionary_encode(),
            "f3": pa.array(f3_levels[rng.integers(0, len(f3_levels), rows)]),
            "b1": pa.array(rng.random(rows) < 0.3, mask=nulls(0.01)),
        }
    )


def write_benchmark_table(path: Path | str, rows: int = 1_000_000, seed: int = 1) -> Path:
    """Write ``benchmark_table(rows, seed)`` as Parquet at ``path``; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(benchmark_table(rows, seed), path)
    return path
