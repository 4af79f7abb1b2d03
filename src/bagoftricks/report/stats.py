"""Confidence intervals for a Δ between two rows of a sweep, over seeds, and what they say against the paper.

The cells of a sweep share their seeds: seed k of every row starts from the same seed-derived streams
(initialisation, data order, augmentation draws). So a Δ is estimated from the per-seed differences
d_k = x_k − y_k over the seeds both rows finished (paired), whose spread leaves out the part of the
seed-to-seed noise the two cells share: mean(d) ± t(0.975, n−1) · sd(d) / √n. Where fewer than two seeds
are shared, the two rows are treated as independent samples (Welch: t with the Welch–Satterthwaite degrees
of freedom). Student's t quantile is computed here (no SciPy): the t density integrated by Simpson's rule,
inverted by bisection.

An interval needs the seeds to show their spread. When they show none (every seed gave the same Δ, as
when two rows train the same cells or both saturate; both rows constant; or a single seed), sd = 0 would
give a zero-width interval that excludes 0 for any Δ ≠ 0, a certainty the seeds do not have: the noise
cannot be estimated from them. Such a Δ gets no interval (`estimable` False, shown as
"+0.40 [n/a: no spread over 3 seeds]" or "[n/a: 1 seed]"), is never bold, and reads "not estimable"
against the paper. Per-seed Δs that agree to 1e-9 points count as equal (float rounding of equal
accuracies).
"""
from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass

AGREES, OPPOSITE, NOISE = "agrees with the paper", "opposite and significant", "within noise"
SIGNIFICANT = "significant (no paper Δ)"
NOT_ESTIMABLE = "not estimable"
NO_SPREAD = 1e-9  # points: per-seed Δs closer than this are the same Δ (77.3 - 76.9 vs 78.1 - 77.7 in floats)


@dataclass(frozen=True)
class Interval:
    delta: float      # mean difference (paired) or difference of means (Welch)
    low: float
    high: float
    n: int            # seeds in the paired differences, or the smaller of the two samples (Welch)
    paired: bool
    estimable: bool = True  # False: the seeds show no spread, so there is no interval (low = high = delta)

    @property
    def excludes_zero(self) -> bool:
        return self.estimable and (self.low > 0 or self.high < 0)


def _t_density(x: float, df: float) -> float:
    c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(c - (df + 1) / 2 * math.log1p(x * x / df))


def t_cdf(t: float, df: float, intervals: int = 1000) -> float:
    """P(T <= t) for Student's t with df degrees of freedom (Simpson's rule from 0 to |t|)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    a = abs(t)
    h = a / intervals
    s = _t_density(0.0, df) + _t_density(a, df)
    s += sum((4 if i % 2 else 2) * _t_density(i * h, df) for i in range(1, intervals))
    half = s * h / 3
    return 0.5 + half if t >= 0 else 0.5 - half


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, for 0.5 <= p < 1 (bisection to 1e-8)."""
    if not 0.5 <= p < 1:
        raise ValueError(f"p must be in [0.5, 1), got {p}")
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-8:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def delta_interval(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> Interval | None:
    """The `level` interval of Δ = a − b from per-seed values {seed: value}: paired over the shared seeds
    when there are at least two (or one, and a side has no other), else Welch's; not estimable when the
    seeds show no spread (see the module's docstring); None when either side has no value."""
    if not a or not b:
        return None
    q = 0.5 + level / 2
    common = sorted(set(a) & set(b))
    xa, xb = list(a.values()), list(b.values())
    if len(common) >= 2 or (common and min(len(xa), len(xb)) < 2):
        d = [a[s] - b[s] for s in common]
        m, n = statistics.fmean(d), len(d)
        sd = statistics.stdev(d) if n >= 2 else 0.0
        if sd <= NO_SPREAD:
            return Interval(m, m, m, n, True, estimable=False)
        half = t_quantile(q, n - 1) * sd / math.sqrt(n)
        return Interval(m, m - half, m + half, n, True)
    m, n = statistics.fmean(xa) - statistics.fmean(xb), min(len(xa), len(xb))
    if n < 2 or max(statistics.stdev(xa), statistics.stdev(xb)) <= NO_SPREAD:
        return Interval(m, m, m, n, False, estimable=False)
    va, vb = statistics.variance(xa) / len(xa), statistics.variance(xb) / len(xb)
    df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    half = t_quantile(q, df) * math.sqrt(va + vb)
    return Interval(m, m - half, m + half, n, False)


def verdict(iv: Interval | None, paper_delta: float | None) -> str:
    """How a measured Δ reads against the paper's: significant with the paper's sign, significant with
    the opposite sign, an interval that contains 0, or no interval (the seeds show no spread)."""
    if iv is None:
        return "—"
    if not iv.estimable:
        return NOT_ESTIMABLE
    if not iv.excludes_zero:
        return NOISE
    if paper_delta is None or paper_delta == 0:
        return SIGNIFICANT
    return AGREES if (iv.delta > 0) == (paper_delta > 0) else OPPOSITE


def format_delta(d: float | None, iv: Interval | None = None) -> str:
    """Δ, and its 95 % interval in brackets; bold when the interval excludes 0; "n/a" and why in the
    brackets when the seeds show no spread. With an interval, the Δ shown is the interval's own (over the
    seeds both rows finished, when paired), so that it lies inside its brackets even while one row has
    fewer seeds than the other."""
    if d is None:
        return "—"
    if iv is None:
        return f"{d:+.2f}"
    d = iv.delta
    if not iv.estimable:
        return f"{d:+.2f} [n/a: {'1 seed' if iv.n < 2 else f'no spread over {iv.n} seeds'}]"
    mark = "**" if iv.excludes_zero else ""
    return f"{mark}{d:+.2f}{mark} [{iv.low:+.2f}, {iv.high:+.2f}]"
