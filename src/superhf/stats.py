"""Small statistics shared by evaluation and reward training (no heavy imports)."""

from __future__ import annotations

import math
import statistics


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (successes may be fractional: ties count half)."""
    if n == 0:
        return (math.nan, math.nan)
    z = statistics.NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact at the ends, no 1e-17
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return (low, high)
