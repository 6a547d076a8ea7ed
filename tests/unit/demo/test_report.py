"""The demo's printed tables: the tidy regression table and Table 1 percentages."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gateway.demo import report


class _Fit:
    coefficients = pd.DataFrame(
        {
            "Estimate": [-2.0, 0.5],
            "Std. Error": [0.2, 0.25],
            "z value": [-10.0, 2.0],
            "Pr(>|z|)": [1.5e-23, 0.0455],
        },
        index=["(Intercept)", "dmtplatform"],
    )

    def conf_int(self, level):
        q = 1.959963984540054
        est, se = self.coefficients["Estimate"], self.coefficients["Std. Error"]
        return pd.DataFrame({"lower": est - q * se, "upper": est + q * se})


def test_tidy_glm_gives_odds_ratios_with_wald_intervals(tmp_path):
    tidy = report.tidy_glm(_Fit())
    row = tidy.loc["dmtplatform"]
    assert row["OR"] == math.exp(0.5)
    assert np.isclose(row["OR 2.5%"], math.exp(0.5 - 1.959963984540054 * 0.25))
    assert np.isclose(row["OR 97.5%"], math.exp(0.5 + 1.959963984540054 * 0.25))
    text = report.format_tidy(tidy)
    assert "1.50e-23" in text and "0.0455" in text
    plot = report.forest_plot(tidy, tmp_path / "f.png", "title")
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_percentages_are_of_each_station_row():
    counts = pd.DataFrame({"female": [3, 1], "male": [1, 1]}, index=["a", "b"])
    shown = report.with_percentages(counts)
    assert shown.loc["a", "female"] == "3 (75%)" and shown.loc["b", "male"] == "1 (50%)"
