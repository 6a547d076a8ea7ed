"""What the demo prints and draws: tidy tables from the `algorithms` results, and a
forest plot of the odds ratios."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "categorical_table",
    "forest_plot",
    "format_tidy",
    "numeric_table",
    "tidy_glm",
    "with_percentages",
]


def numeric_table(summary: pd.DataFrame) -> pd.DataFrame:
    """From `algorithms.summary` of a numeric variable: n, missing (and %), mean, SD
    per station and combined (mean and SD are exact when combined)."""
    out = pd.DataFrame(
        {
            "n": summary["length"].astype(int),
            "missing": summary["n_missing"].astype(int),
            "% missing": (100 * summary["n_missing"] / summary["length"]).round(1),
            "mean": summary["mean"].astype(float),
            "sd": summary["sd"].astype(float),
        }
    )
    out.index.name = "station"
    return out


def categorical_table(summary: pd.DataFrame) -> pd.DataFrame:
    """From `algorithms.summary` of a factor: the count of every level (and <NA>) per
    station and combined."""
    counts = summary.drop(columns=["class", "length"]).astype(int)
    counts.index.name = "station"
    return counts


def with_percentages(counts: pd.DataFrame) -> pd.DataFrame:
    """'n (p%)' strings, row percentages: how the registry papers print Table 1."""
    totals = counts.sum(axis=1)
    return counts.apply(
        lambda col: [f"{n} ({100 * n / t:.0f}%)" for n, t in zip(col, totals, strict=True)]
    )


def tidy_glm(fit) -> pd.DataFrame:
    """A `GLMResult` as one row per term: estimate, SE, z, p, OR and its 95% CI."""
    coef = fit.coefficients
    ci = fit.conf_int(0.95)

    out = pd.DataFrame(
        {
            "estimate": coef.iloc[:, 0],
            "se": coef.iloc[:, 1],
            "z": coef.iloc[:, 2],
            "p": coef.iloc[:, 3],
            "OR": np.exp(coef.iloc[:, 0]),
            "OR 2.5%": np.exp(ci["lower"]),
            "OR 97.5%": np.exp(ci["upper"]),
        }
    )
    out.index.name = "term"
    return out


def format_tidy(tidy: pd.DataFrame) -> str:
    shown = tidy.copy()
    shown["p"] = [f"{p:.2e}" if p < 1e-4 else f"{p:.4f}" for p in tidy["p"]]
    return shown.to_string(
        float_format=lambda v: f"{v:.4f}",
        formatters={"p": str},
    )


def forest_plot(tidy: pd.DataFrame, path: Path, title: str) -> Path:
    """Odds ratios with their 95% CIs on a log axis, the intercept left out."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = tidy.drop(index=[t for t in tidy.index if t == "(Intercept)"])
    labels = [_readable(term) for term in rows.index][::-1]
    ors = rows["OR"].to_numpy()[::-1]
    low = rows["OR 2.5%"].to_numpy()[::-1]
    high = rows["OR 97.5%"].to_numpy()[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(labels) + 1.5))
    y = range(len(labels))
    ax.errorbar(ors, y, xerr=[ors - low, high - ors], fmt="s", color="#1f4e79", capsize=3)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([0.25, 0.5, 1, 2, 4])
    ax.set_yticks(list(y), labels)
    ax.set_xlabel("odds ratio of severe COVID-19 (95% CI, log scale)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _readable(term: str) -> str:
    """R's coefficient names as a reader of the plot wants them."""
    if term.startswith("dmt"):
        return f"{term[3:].replace('_', ' ')} vs no therapy"
    return {"age": "age (per year)", "sexmale": "male vs female", "edss": "EDSS (per point)"}.get(
        term, term
    )
