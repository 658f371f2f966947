"""The one way the benchmarks summarise a list of measurements."""

from __future__ import annotations

import statistics


def spread(values: list[float], scale: float = 1.0) -> dict[str, float]:
    """Mean, median and 90th percentile, each multiplied by `scale`."""
    ordered = sorted(values)
    return {
        "mean": statistics.mean(ordered) * scale,
        "median": statistics.median(ordered) * scale,
        "p90": ordered[int(len(ordered) * 0.9)] * scale,
    }
