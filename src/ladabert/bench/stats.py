"""The gate's statistics: an interval on how much slower the candidate is, and the decision it implies.

The quantity is the candidate / reference latency ratio. With both sides measured in the same rounds it
is the median of the per-round ratios, with the distribution-free interval of the sign test (order
statistics of the paired log ratios): a slow spell of the machine hits both calls of a round and cancels,
and the interval holds its level for any noise distribution, without resampling. Against a stored
baseline (no pairing) it is the Hodges-Lehmann shift of the log latencies with the Mann-Whitney interval.
No bootstrap of the ratio of medians: its standard error is unstable over the few dozen rounds of the
first looks, where its interval covers less than it claims.

The gate looks at the data several times and stops once every check is decided; each look uses
``(1 - confidence) / looks`` of the error (Bonferroni over the planned looks), so that stopping early does
not inflate the false-alarm rate above ``1 - confidence``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

GROWTH = 1.5  # each look waits for 50% more rounds than the last


def look_points(min_rounds: int, max_rounds: int) -> list[int]:
    """Round counts at which the gate looks at the data: ``min_rounds`` growing by half each time,
    ending at ``max_rounds``."""
    points, n = [], float(min_rounds)
    while round(n) < max_rounds:
        points.append(round(n))
        n *= GROWTH
    return points + [max_rounds]


def z_value(confidence: float, looks: int) -> float:
    """The two-sided normal quantile of one look when ``looks`` looks share ``1 - confidence``."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / looks / 2)


@dataclass
class Interval:
    """The candidate / reference ``ratio`` with its interval ``[low, high]``, and the standard error of the
    log ratio that the interval implies (half its log width over ``z``)."""

    ratio: float
    low: float
    high: float
    se_log: float


def _sign_test_rank(n: int, z: float) -> int:
    """The 0-based order statistic that bounds a two-sided sign-test interval on the median of ``n``
    paired values: the largest ``k`` with ``P(Binomial(n, 1/2) <= k) <= alpha / 2``, where ``z`` gives alpha."""
    tail = 1 - NormalDist().cdf(z)  # one side of the two-sided error
    cdf, k = 0.0, -1
    for i in range(n // 2 + 1):
        cdf += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2))
        if cdf > tail:
            break
        k = i
    return k


def ratio_interval(candidate: np.ndarray, reference: np.ndarray, z: float, paired: bool = True) -> Interval:
    """The candidate / reference ratio and its interval at normal quantile ``z``.

    ``paired``: the i-th samples of both sides come from the same round (sign-test interval on the median
    per-round ratio); otherwise (a stored reference) the Hodges-Lehmann ratio with the Mann-Whitney interval.
    Where there are too few samples for the level, the interval is unbounded on that side.
    """
    c, r = np.log(np.asarray(candidate, float)), np.log(np.asarray(reference, float))
    if paired:
        if len(c) != len(r):
            raise ValueError("paired samples need equal lengths")
        d = np.sort(c - r)
        k = _sign_test_rank(len(d), z)
    else:
        d = np.sort((c[:, None] - r[None, :]).ravel())
        nm = len(c) * len(r)
        k = math.floor(nm / 2 - z * math.sqrt(nm * (len(c) + len(r) + 1) / 12))
    center = float(np.median(d))
    lo = float(d[k]) if k >= 0 else -math.inf
    hi = float(d[len(d) - 1 - k]) if k >= 0 else math.inf
    se = (hi - lo) / 2 / z if math.isfinite(hi - lo) else math.inf
    return Interval(math.exp(center), math.exp(lo), math.exp(hi), se)


def decide(iv: Interval, limit: float) -> str | None:
    """``regression`` when the whole interval lies above ``limit``, ``pass`` when it lies below, else None."""
    if iv.low > limit:
        return "regression"
    if iv.high <= limit:
        return "pass"
    return None


def rounds_to_decide(iv: Interval, limit: float, z: float, rounds: int) -> int | None:
    """About how many rounds in all would decide: the standard error shrinks as ``1/sqrt(rounds)``, and the
    interval must shrink to the distance between the ratio and the limit. None when the ratio sits on it."""
    gap = abs(math.log(iv.ratio) - math.log(limit))
    if gap == 0 or iv.se_log == 0 or not math.isfinite(iv.se_log):
        return None
    return max(rounds + 1, math.ceil(rounds * (z * iv.se_log / gap) ** 2))
