"""The histogram plot helper, drawn for real with matplotlib's Agg backend: the bars are
the combined counts (or densities) of the bins, and the PNG written is a real picture."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display: render to memory and files

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest

import algorithms as ds


@pytest.fixture
def histogram() -> ds.Histogram:
    breaks = np.linspace(20.0, 80.0, 7)
    per_node = {"node1": np.array([3, 10, 25, 18, 0, 4]), "node2": np.array([5, 12, 30, 22, 9, 0])}
    counts = per_node["node1"] + per_node["node2"]
    density = counts / (counts.sum() * np.diff(breaks))
    mids = (breaks[:-1] + breaks[1:]) / 2
    return ds.Histogram(
        "D$age", breaks, counts, density, mids, per_node, {"node1": 1, "node2": 0}, "smallCellsRule"
    )


def test_bars_are_the_combined_counts(histogram):
    ax = ds.plot_histogram(histogram)
    try:
        bars = ax.patches
        assert len(bars) == 6
        np.testing.assert_allclose([b.get_height() for b in bars], histogram.counts)
        np.testing.assert_allclose([b.get_x() for b in bars], histogram.breaks[:-1])
        np.testing.assert_allclose([b.get_width() for b in bars], np.diff(histogram.breaks))
        assert ax.get_xlabel() == "D$age" and ax.get_ylabel() == "count"
        assert ax.get_title() == "Histogram of D$age (smallCellsRule)"
    finally:
        plt.close(ax.figure)


def test_density_on_given_axes(histogram):
    fig, ax = plt.subplots()
    try:
        assert histogram.plot(ax=ax, density=True, color="tab:red") is ax
        np.testing.assert_allclose([b.get_height() for b in ax.patches], histogram.density)
        assert ax.get_ylabel() == "density"
        area = sum(b.get_height() * b.get_width() for b in ax.patches)
        assert area == pytest.approx(1.0)
    finally:
        plt.close(fig)


def test_png_is_a_real_picture(histogram, tmp_path):
    ax = ds.plot_histogram(histogram, color="#1f77b4")
    path = tmp_path / "age.png"
    try:
        ax.figure.savefig(path, dpi=80)
    finally:
        plt.close(ax.figure)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5_000
    image = mpimg.imread(path)
    height, width = image.shape[:2]
    assert (height, width) == (384, 512)  # 6.4 x 4.8 inches at 80 dpi
    colours = {tuple(np.round(p, 2)) for p in image.reshape(-1, image.shape[2])[::7]}
    assert len(colours) > 10  # axes, text, bars: not a blank canvas
    # the bars' blue covers a good part of the plot
    blue = np.array(matplotlib.colors.to_rgb("#1f77b4"))
    is_blue = np.all(np.abs(image[:, :, :3] - blue) < 0.02, axis=2)
    assert is_blue.mean() > 0.05
