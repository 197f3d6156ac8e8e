"""Bootstrap resamples of patients: the one way every confidence interval here draws them.

A resample is rng.integers(0, n, n); one without an event is skipped, since no survival
statistic is defined on it. Passing the same Generator to several calls continues one stream
(the per-group C-indices share one), passing a seed starts a fresh one (statistics that must be
paired, such as crossfit's, pass the same seed and so see the same resamples).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


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
