"""Statistics of the health attribute's edit loop: does moving a face along the direction move its risk?

The loop (embedding.editing.edit_and_reproject): each patient's latent is moved by β along the
embedding Cox model's coefficient direction, rendered, projected back, and re-scored. If the
direction is a property of faces, the re-scored risk rises with β for (nearly) every patient.

    lat = edit_and_reproject(G, latents, b, betas, space="w", project_fn=...)   # (n, k, D)
    risk = lat @ b                                                              # (n, k)
    out = edit_loop_stats(risk, betas, bootstrap=200, seed=0)

and, for the direction's stability, `cosine_with_ci` refits two directions (e.g. the Cox model
on two halves of the features, or two penalties) on the same bootstrap resamples of patients.
Bootstrap conventions are training.crossfit's: resamples of patients drawn by
training.resample.resamples, a percentile CI, Stat = {"value", "ci", "resamples"}.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ground.errors import DataError
from training.resample import Stat, percentile_stat, resamples

MIN_BETAS = 3  # two points always "rise" or "fall"; a rank correlation needs three to mean anything


def _check_bootstrap(bootstrap: object, level: object, what: str) -> None:
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) or bootstrap < 0:
        raise DataError(f"{what}: bootstrap must be an integer >= 0 (resamples), got {bootstrap!r}; use e.g. 200")
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise DataError(f"{what}: level must be in (0, 1), got {level!r}; use 0.95")


def patient_spearman(risk: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """(n, k) risks, (k,) strictly increasing betas -> (n,) Spearman ρ of each row with β.

    Ties in a row get average ranks (scipy.stats.rankdata), as spearmanr does. A row whose risk
    does not change at all has no defined ρ; it counts as 0 (the edit moved nothing), never as
    NaN that a mean would skip.
    """
    from scipy.stats import rankdata

    k = risk.shape[1]
    ranks = rankdata(risk, axis=1)
    ranks = ranks - ranks.mean(axis=1, keepdims=True)
    ref = np.arange(k, dtype=np.float64) - (k - 1) / 2  # betas are strictly increasing: ranks 0..k-1
    num = ranks @ ref
    den = np.sqrt((ranks**2).sum(axis=1) * (ref**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(rho, -1.0, 1.0)


def _check_loop(risk: object, betas: object) -> tuple[np.ndarray, np.ndarray]:
    try:
        b = np.asarray(betas, dtype=np.float64)
        r = np.asarray(risk, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("edit loop: risk and betas must be numeric arrays") from None
    if b.ndim != 1 or len(b) < MIN_BETAS:
        raise DataError(f"edit loop: betas must be 1-D with at least {MIN_BETAS} values, got shape {b.shape}; "
                        "edit along e.g. betas=(-2, -1, 0, 1, 2) latent SDs")
    if not np.isfinite(b).all() or not (np.diff(b) > 0).all():
        raise DataError(f"edit loop: betas must be finite and strictly increasing, got {b.tolist()}; sort them")
    if r.ndim != 2 or r.shape[1] != len(b):
        raise DataError(f"edit loop: risk must be (patients, {len(b)}) (one column per beta), got shape {r.shape}")
    if r.shape[0] < 1:
        raise DataError("edit loop: risk has no patients; pass at least one row")
    bad = ~np.isfinite(r)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise DataError(f"edit loop: risk has {int(bad.sum())} NaN or infinite values (first in row {row}); "
                        "re-score the re-projected latents with finite coefficients")
    return r, b


def edit_loop_stats(risk: np.ndarray, betas: np.ndarray, *, bootstrap: int = 200, seed: int = 0,
                    level: float = 0.95) -> dict[str, Any]:
    """How the re-scored risk follows the edit amount, patient by patient.

    Args:
        risk: (n, k) the model's risk of patient i's face edited by betas[j] and re-projected.
        betas: (k,) strictly increasing edit amounts, k >= 3.
        bootstrap: resamples of patients for the CIs (0: none); seed: their RNG seed;
            level: CI coverage.

    Returns:
        {"rho": Stat, the mean over patients of each patient's Spearman ρ(β, risk) (a constant
            row counts as 0), with a percentile CI over bootstrap resamples of patients;
         "monotone": Stat, the share of patients whose risk rises monotonically with β:
            non-decreasing from each β to the next AND higher at the largest β than at the
            smallest (a flat row does not "rise"), same resamples;
         "monotone_share": float, that share (= monotone["value"]);
         "rho_per_patient": (n,) list; "mean_risk": (k,) list, the mean risk at each β;
         "betas": (k,) list; "n", "k", "bootstrap", "seed", "level"}.

    Raises:
        DataError: shapes that do not match, fewer than 3 betas, betas not strictly
            increasing, NaN or infinite risks, a bad bootstrap or level.
    """
    r, b = _check_loop(risk, betas)
    _check_bootstrap(bootstrap, level, "edit loop")
    n, k = r.shape
    rho = patient_spearman(r, b)
    rises = (np.diff(r, axis=1) >= 0).all(axis=1) & (r[:, -1] > r[:, 0])
    rho_s: list[float] = []
    mono_s: list[float] = []
    # every patient "has an event" here: resamples keeps its one way of drawing patients
    for idx in resamples(np.ones(n, dtype=bool), count=int(bootstrap), rng=seed):
        rho_s.append(float(rho[idx].mean()))
        mono_s.append(float(rises[idx].mean()))
    share = float(rises.mean())
    return {
        "rho": percentile_stat(float(rho.mean()), rho_s, int(bootstrap), float(level)),
        "monotone": percentile_stat(share, mono_s, int(bootstrap), float(level)),
        "monotone_share": share,
        "rho_per_patient": [float(x) for x in rho],
        "mean_risk": [float(x) for x in r.mean(axis=0)],
        "betas": [float(x) for x in b],
        "n": int(n), "k": int(k), "bootstrap": int(bootstrap), "seed": int(seed), "level": float(level),
    }


def _vector(x: object, what: str) -> np.ndarray:
    try:
        v = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a numeric vector") from None
    if v.ndim != 1 or len(v) < 1:
        raise DataError(f"{what} must be a 1-D vector (D,), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise DataError(f"{what} has NaN or infinite entries; refit it or drop the non-finite coefficients")
    return v


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return float("nan")
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


def direction_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Signed cosine of two directions (D,), (D,) in [-1, 1].

    Signed on purpose: a health direction's sign says which way is sicker, so a refit that
    flips it (cosine near -1) must read as disagreement, not as |cos| = 1.
    Raises DataError for different lengths, non-finite entries or a zero vector.
    """
    va, vb = _vector(a, "direction_cosine: a"), _vector(b, "direction_cosine: b")
    if va.shape != vb.shape:
        raise DataError(f"direction_cosine: a has {len(va)} entries but b has {len(vb)}; "
                        "compare directions in the same latent space")
    c = _cosine(va, vb)
    if not math.isfinite(c):
        raise DataError("direction_cosine: a direction is the zero vector; it has no direction to compare")
    return c


def cosine_with_ci(fit_a: Callable[[np.ndarray], np.ndarray], fit_b: Callable[[np.ndarray], np.ndarray], n: int, *,
                   bootstrap: int = 100, seed: int = 0, level: float = 0.95,
                   event: np.ndarray | None = None) -> Stat:
    """Signed cosine between two refitted directions, with a bootstrap CI over patients.

    Args:
        fit_a, fit_b: idx (m,) int patient indices (with repeats) -> (D,) direction fitted on
            those patients. Both are refitted on the SAME resample, so the CI is of the paired
            agreement, not of two independent fits' noise.
        n: number of patients; the point estimate fits both on np.arange(n).
        bootstrap: resamples (0: no CI); seed: their RNG seed; level: CI coverage.
        event: optional (n,) event indicators: then resamples without an event are skipped
            (training.resample.resamples), as a Cox fit needs one.

    Returns:
        Stat {"value": signed cosine on all patients, "ci": [lo, hi] or [None, None],
        "resamples": resamples kept}. A resample where either fit returns a zero vector is
        dropped (its cosine is undefined); one returning NaN or the wrong length raises.
        The cosine is signed, never |cos|: see direction_cosine.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise DataError(f"cosine_with_ci: n must be an integer >= 2 (patients), got {n!r}")
    _check_bootstrap(bootstrap, level, "cosine_with_ci")
    if not callable(fit_a) or not callable(fit_b):
        raise DataError("cosine_with_ci: fit_a and fit_b must be callables idx -> (D,) direction")
    if event is None:
        ev = np.ones(int(n), dtype=bool)
    else:
        ev = np.asarray(event).astype(bool)
        if ev.shape != (n,):
            raise DataError(f"cosine_with_ci: event has shape {ev.shape} but n is {n}; pass one indicator per patient")

    def pair(idx: np.ndarray) -> float:
        a = _vector(fit_a(idx), "cosine_with_ci: fit_a's direction")
        b = _vector(fit_b(idx), "cosine_with_ci: fit_b's direction")
        if a.shape != b.shape:
            raise DataError(f"cosine_with_ci: fit_a returned {len(a)} entries but fit_b {len(b)}; "
                            "fit both in the same latent space")
        return _cosine(a, b)

    point = pair(np.arange(int(n)))
    samples = [c for idx in resamples(ev, count=int(bootstrap), rng=seed) if math.isfinite(c := pair(idx))]
    return percentile_stat(point, samples, int(bootstrap), float(level))
