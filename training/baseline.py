"""Breslow baseline hazard shared by every Cox-type model here, so survival curves of the
linear Cox, Coxnet, DeepSurv and the fusion are computed one way."""

from __future__ import annotations

import numpy as np


def breslow(time: np.ndarray, event: np.ndarray, log_risk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breslow estimate of the baseline cumulative hazard.

    Args:
        time: (n,) follow-up in days; event: (n,) bool; log_risk: (n,) linear predictor.
    Returns:
        (times, cumhaz): (m,) distinct event times ascending and H0 at each (non-decreasing).
    """
    lr = log_risk - np.max(log_risk)  # scale-free shift avoids overflow; H0 absorbs it
    w = np.exp(lr)
    order = np.argsort(time, kind="mergesort")
    t, e, w = time[order], event[order], w[order]
    uniq, first = np.unique(t, return_index=True)
    at_risk = np.cumsum(w[::-1])[::-1][first]
    deaths = np.add.reduceat(e.astype(np.float64), first)
    keep = deaths > 0
    h = deaths[keep] / at_risk[keep]
    return uniq[keep], np.cumsum(h) * np.exp(-np.max(log_risk))


def survival_at(times: np.ndarray, cumhaz: np.ndarray, log_risk: np.ndarray, at: np.ndarray) -> np.ndarray:
    """S(t | x) = exp(-H0(t) exp(log_risk)) at the requested days; (n, len(at)).

    H0 is a right-continuous step function, zero before the first event and carried forward
    past the last one.
    """
    at = np.atleast_1d(np.asarray(at, dtype=np.float64))
    idx = np.searchsorted(times, at, side="right") - 1
    h0 = np.where(idx >= 0, cumhaz[np.clip(idx, 0, None)] if len(cumhaz) else 0.0, 0.0)
    return np.exp(-np.outer(np.exp(log_risk), h0))
