"""The 95 % interval of a Δ over seeds, against cases computed by hand, and its reading against the paper."""
import math

import pytest

from bagoftricks.report import stats
from bagoftricks.report.stats import Interval, delta_interval, t_cdf, t_quantile, verdict


@pytest.mark.parametrize("df, t", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantile_matches_the_printed_table(df, t):
    assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-4)
    assert t_cdf(t_quantile(0.975, df), df) == pytest.approx(0.975, abs=1e-9)


def test_paired_interval_by_hand():
    # per-seed differences 0.5, 1.5, 1.0: mean 1.0, sd 0.5, n 3, se 0.5/sqrt(3) = 0.288675;
    # t(0.975, 2) = 4.302653 -> half-width 1.242069: [-0.242, 2.242], which contains 0.
    a, b = {0: 76.5, 1: 77.5, 2: 77.0}, {0: 76.0, 1: 76.0, 2: 76.0}
    iv = delta_interval(a, b)
    assert iv.paired and iv.n == 3 and iv.delta == pytest.approx(1.0)
    assert iv.low == pytest.approx(1.0 - 1.242069, abs=1e-5) and iv.high == pytest.approx(2.242069, abs=1e-5)
    assert not iv.excludes_zero
    # differences 0.9, 1.1, 1.0 (sd 0.1): half-width 4.302653 * 0.1 / sqrt(3) = 0.248414, excludes 0
    iv = delta_interval({0: 76.9, 1: 77.1, 2: 77.0}, b)
    assert (iv.low, iv.high) == (pytest.approx(0.751586, abs=1e-5), pytest.approx(1.248414, abs=1e-5))
    assert iv.excludes_zero


def test_pairing_removes_the_shared_seed_noise():
    # seed noise of ±2 points shared by both rows, a constant +0.3 effect: paired sees it, unpaired cannot
    base = {0: 74.0, 1: 78.0, 2: 76.0, 3: 72.0}
    row = {s: v + 0.3 + 0.01 * s for s, v in base.items()}
    assert delta_interval(row, base).excludes_zero
    unpaired = delta_interval({s + 10: v for s, v in row.items()}, base)
    assert not unpaired.paired and not unpaired.excludes_zero


def test_welch_interval_by_hand():
    # x = 1, 2, 3 (var 1), y = 4, 6, 8 (var 4), no shared seeds: se^2 = 1/3 + 4/3 = 5/3,
    # df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 25/9 / (17/18) = 2.941176
    iv = delta_interval({0: 1.0, 1: 2.0, 2: 3.0}, {5: 4.0, 6: 6.0, 7: 8.0})
    half = t_quantile(0.975, 50 / 17) * math.sqrt(5 / 3)
    assert not iv.paired and iv.delta == pytest.approx(-4.0)
    assert (iv.low, iv.high) == (pytest.approx(-4.0 - half), pytest.approx(-4.0 + half))
    assert 3.18 < t_quantile(0.975, 50 / 17) < 3.25   # between t(3) = 3.182 and t(2.9) ~ 3.21


def test_too_few_seeds_give_no_interval():
    # one seed cannot show the seed-to-seed spread: a Δ without an interval (never significant)
    for iv in (delta_interval({0: 1.0}, {0: 2.0}), delta_interval({0: 1.0, 1: 2.0}, {5: 2.0})):
        assert not iv.estimable and not iv.excludes_zero and iv.n == 1 and iv.low == iv.high == iv.delta
        assert stats.format_delta(iv.delta, iv) == f"{iv.delta:+.2f} [n/a: 1 seed]"
        assert verdict(iv, 0.5) == stats.NOT_ESTIMABLE
    assert delta_interval({0: 1.0}, {0: 2.0}).delta == -1.0 and delta_interval({0: 1.0, 1: 2.0}, {5: 2.0}).delta == -0.5
    assert delta_interval({}, {0: 2.0}) is None and delta_interval({0: 1.0}, {}) is None


@pytest.mark.parametrize("a, b", [
    ({0: 76.5, 1: 77.5, 2: 77.0}, {0: 76.0, 1: 77.0, 2: 76.5}),   # every seed +0.5: sd 0
    ({0: 77.3, 1: 78.1, 2: 76.9}, {0: 76.9, 1: 77.7, 2: 76.5}),   # every seed +0.4, up to float rounding
    ({0: 77.0, 1: 77.0}, {5: 76.0, 6: 76.0}),                     # no shared seed, both rows constant (Welch)
])
def test_a_delta_without_spread_over_seeds_has_no_interval_and_is_never_significant(a, b):
    """sd 0 would make the interval zero-wide, excluding 0 for any Δ: bold, and "agrees" or "opposite"
    against the paper. The seeds cannot estimate their noise then: no interval, never bold."""
    iv = delta_interval(a, b)
    assert not iv.estimable and not iv.excludes_zero and iv.low == iv.high == iv.delta
    text = stats.format_delta(iv.delta, iv)
    assert text == f"{iv.delta:+.2f} [n/a: no spread over {iv.n} seeds]" and "**" not in text
    assert verdict(iv, 1.0) == verdict(iv, -1.0) == verdict(iv, None) == stats.NOT_ESTIMABLE


def test_a_small_spread_still_gives_an_interval():
    iv = delta_interval({0: 76.5, 1: 77.5, 2: 77.01}, {0: 76.0, 1: 77.0, 2: 76.5})  # +0.5, +0.5, +0.51
    assert iv.estimable and iv.excludes_zero and iv.low < iv.delta < iv.high
    assert stats.format_delta(iv.delta, iv).startswith("**+0.50**")


@pytest.mark.parametrize("low, high, paper, want", [
    (0.2, 1.0, 0.76, stats.AGREES), (-1.0, -0.2, -0.03, stats.AGREES), (-3.0, -0.5, 0.44, stats.OPPOSITE),
    (-0.5, 1.0, 0.76, stats.NOISE), (0.1, 0.4, None, stats.SIGNIFICANT)])
def test_verdict(low, high, paper, want):
    assert verdict(Interval((low + high) / 2, low, high, 3, True), paper) == want
