"""What a federated analysis over a `tests.functional.stack.Stack` must equal: the
stations' rows pooled in one place, and R's own fit on them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

__all__ = ["pooled_rows", "r_binomial_glm"]


def pooled_rows(stack) -> pd.DataFrame:
    """Every station's `demo/cohort/patients` rows in one frame."""
    return pd.concat(
        (
            pd.read_parquet(s.data_dir / "demo" / "cohort" / "patients.parquet")
            for s in stack.stations.values()
        ),
        ignore_index=True,
    )


def r_binomial_glm(pooled: pd.DataFrame, formula: str, workdir: Path) -> dict:
    """R's ``glm(formula, family = binomial, data = D)`` on the pooled outcome, age, bmi
    and smoker columns (as `D`), converged to 1e-14: the coefficients' ``names``,
    ``coef``, ``se``, ``z``, and ``deviance``, ``nobs``."""
    if shutil.which("Rscript") is None:
        pytest.fail("R is needed for the reference fit")
    csv = workdir / "pooled.csv"
    frame = pooled[["outcome", "age", "bmi", "smoker"]].copy()
    frame["smoker"] = frame["smoker"].map({True: "TRUE", False: "FALSE"})
    frame.to_csv(csv, index=False, na_rep="NA")
    script = f"""
    D <- read.csv({json.dumps(str(csv))})
    D$smoker <- as.logical(D$smoker)
    fit <- glm({formula}, family = binomial, data = D,
               control = glm.control(epsilon = 1e-14, maxit = 100))
    s <- summary(fit)$coefficients
    cat(jsonlite::toJSON(list(names = rownames(s), coef = unname(s[, 1]),
        se = unname(s[, 2]), z = unname(s[, 3]), deviance = fit$deviance,
        nobs = nobs(fit)), digits = NA, auto_unbox = TRUE))
    """
    done = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
