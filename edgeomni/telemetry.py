"""Latency statistics shared by the runtime's end summary and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """n, p50, p95, p99 and max of a sample (linear interpolation, as numpy does)."""
    if not len(values):
        return {"n": 0}
    data = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(data, [50, 95, 99])
    return {"n": int(data.size), "p50": round(float(p50), 1), "p95": round(float(p95), 1),
            "p99": round(float(p99), 1), "max": round(float(data.max()), 1)}
