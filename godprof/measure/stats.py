"""Timing statistics: median and p10/p90 of repeated measurements. Pure Python (no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks.

    Same definition as ``numpy.percentile(..., method="linear")``: the value at rank q/100 x (n - 1)
    of the sorted samples, interpolated between its two neighbours.
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    xs = sorted(samples)
    rank = q / 100 * (len(xs) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


@dataclass(frozen=True)
class TimingStats:
    """Summary of ``n`` timings in seconds. ``p10 <= median <= p90`` by construction."""

    n: int
    median_s: float
    p10_s: float
    p90_s: float
    mean_s: float
    min_s: float
    max_s: float

    @classmethod
    def of(cls, samples_s: Sequence[float]) -> TimingStats:
        if not samples_s:
            raise ValueError("no timing samples (was --iters 0?)")
        if any(not math.isfinite(x) or x < 0 for x in samples_s):
            raise ValueError(f"timings must be finite and non-negative, got {list(samples_s)}")
        return cls(
            n=len(samples_s),
            median_s=percentile(samples_s, 50),
            p10_s=percentile(samples_s, 10),
            p90_s=percentile(samples_s, 90),
            mean_s=sum(samples_s) / len(samples_s),
            min_s=min(samples_s),
            max_s=max(samples_s),
        )

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: the relative width of the middle 80% of samples."""
        return (self.p90_s - self.p10_s) / self.median_s if self.median_s > 0 else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "median_s": self.median_s,
            "p10_s": self.p10_s,
            "p90_s": self.p90_s,
            "mean_s": self.mean_s,
            "min_s": self.min_s,
            "max_s": self.max_s,
        }
