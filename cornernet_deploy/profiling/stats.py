"""Summary statistics of timing samples (milliseconds), and ratios against a baseline.

Percentile definition (documented, tested on hand-computed values): **linear interpolation
between closest ranks**, the default of ``numpy.percentile`` (Hyndman & Fan type 7). For the
sorted samples ``x[0] <= ... <= x[n-1]`` the ``p``-th percentile sits at position
``h = (n - 1) * p / 100`` and is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
So for ``[1, 2, ..., 10]``: median 5.5, p90 9.1, p99 9.91; for one sample every percentile is
that sample.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Mapping, Optional, Sequence

__all__ = ["PERCENTILE_METHOD", "STAT_KEYS", "percentile", "summarize", "ratio", "ratios_to_baseline"]

PERCENTILE_METHOD = "linear interpolation between closest ranks (numpy 'linear', Hyndman-Fan type 7)"
# The keys of every summary, in table order.
STAT_KEYS = ("mean", "median", "p90", "p99", "min", "max")


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``samples`` by the rule in the module docstring."""
    if not 0.0 <= float(p) <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {p}")
    xs = sorted(float(x) for x in samples)
    if not xs:
        raise ValueError("percentile of no samples")
    h = (len(xs) - 1) * float(p) / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def summarize(samples: Iterable[float]) -> Dict[str, float]:
    """``{"mean", "median", "p90", "p99", "min", "max", "n"}`` of timing samples in ms."""
    xs = [float(x) for x in samples]
    if not xs:
        raise ValueError("no timing samples to summarize")
    if any(not math.isfinite(x) for x in xs):
        raise ValueError("timing samples must be finite numbers")
    return {
        "mean": math.fsum(xs) / len(xs),
        "median": percentile(xs, 50),
        "p90": percentile(xs, 90),
        "p99": percentile(xs, 99),
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
    }


def ratio(value: Optional[float], baseline: Optional[float]) -> Optional[float]:
    """``value / baseline``; None when either is missing or the baseline is not positive."""
    if value is None or baseline is None:
        return None
    if not (baseline > 0) or not math.isfinite(baseline) or not math.isfinite(value):
        return None
    return float(value) / float(baseline)


def ratios_to_baseline(stages: Mapping[str, Optional[Mapping[str, float]]],
                       baseline: Mapping[str, Optional[Mapping[str, float]]],
                       key: str = "median") -> Dict[str, Optional[float]]:
    """Per stage, this row's ``key`` statistic divided by the baseline row's (None when absent).

    Latency ratios: below 1 means faster than the baseline.
    """
    out = {}
    for stage, summary in stages.items():
        base = baseline.get(stage)
        out[stage] = ratio(summary[key] if summary else None, base[key] if base else None)
    return out
