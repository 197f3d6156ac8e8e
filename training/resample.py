"""Bootstrap resamples of patients: the one way every confidence interval here draws them.

A resample is rng.integers(0, n, n); one without an event is skipped, since no survival
statistic is defined on it. Passing the same Generator to several calls continues one stream
(the per-group C-indices share one), passing a seed starts a fresh one (statistics that must be
paired, such as crossfit's, pass the same seed and so see the same resamples).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

Stat = dict[str, Any]  # {"value": float | None, "ci": [lo, hi] (floats or None), "resamples": int}


def resamples(event: np.ndarray, *, count: int, rng: np.random.Generator | int) -> Iterator[np.ndarray]:
    """Index arrays (length n = len(event)) of the `count` bootstrap resamples, less those without an event.

    A skipped resample still consumes its draw, so once the iterator is exhausted the state of a
    shared Generator does not depend on which resamples held events.
    """
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    event = np.asarray(event)
    n = len(event)
    for _ in range(count):
        b = gen.integers(0, n, n)
        if event[b].any():
            yield b


def percentile_stat(point: float, samples: list[float], bootstrap: int, level: float) -> Stat:
    """A statistic's value and percentile CI from its resampled values. The CI is None unless at
    least max(10, bootstrap/2) resamples define it, so every Stat in a report reads the same way."""
    value = point if math.isfinite(point) else None
    ok = value is not None and len(samples) >= max(10, bootstrap // 2)
    lo, hi = (np.percentile(samples, [50 * (1 - level), 50 * (1 + level)]) if ok else (None, None))
    return {"value": value, "ci": [None if lo is None else float(lo), None if hi is None else float(hi)],
            "resamples": len(samples)}
