"""p values without scipy, against R's pt() and pnorm()."""

import math

import pytest

from algorithms._distributions import normal_quantile, normal_two_sided_p, t_two_sided_p

# (t, df, 2 * pt(-|t|, df)) from R 4.x
T_CASES = [
    (0.5, 3, 0.65144796484815104),
    (1.96, 10, 0.07843624024769974),
    (-2.5, 1, 0.24223788318168671),
    (4, 1390, 6.6676535958209274e-05),
    (10, 2, 0.0098524570233256923),
    (0.001, 50, 0.99920609477550171),
    (3, 0.5, 0.36730815598594352),
    (25, 7, 4.179697117659438e-08),
]
# (z, 2 * pnorm(-|z|))
Z_CASES = [
    (0, 1.0),
    (1.96, 0.049995790296440856),
    (-3, 0.0026997960632601892),
    (8, 1.244192114854357e-15),
    (13.87, 9.6276797407769888e-44),
]


@pytest.mark.parametrize(("t", "df", "expected"), T_CASES)
def test_t_p_values_match_r(t, df, expected):
    assert t_two_sided_p(t, df) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("z", "expected"), Z_CASES)
def test_normal_p_values_match_r(z, expected):
    assert normal_two_sided_p(z) == pytest.approx(expected, rel=1e-12)


def test_edges():
    assert t_two_sided_p(0.0, 5) == pytest.approx(1.0)
    assert t_two_sided_p(math.inf, 5) == 0.0
    assert t_two_sided_p(67.8, 1390) == 0.0  # R underflows to 0 as well
    assert math.isnan(t_two_sided_p(math.nan, 5))
    assert math.isnan(t_two_sided_p(1.0, 0))
    assert math.isnan(normal_two_sided_p(math.nan))
    assert normal_quantile(0.975) == pytest.approx(1.959963984540054, rel=1e-12)
