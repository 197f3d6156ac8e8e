"""An age direction in latent space that says how well it holds up on patients it was not fitted on.

The least-squares fit of age on 512-d latents the demo used before had fewer patients than
dimensions: it interpolated any values, shuffled ages included (in-sample R^2 = 1), so its
direction carried no evidence of age at all. `age_direction` replaces it:

* direction: the ridge coefficients of values ~ latents (sklearn RidgeCV, alpha chosen by its
  efficient leave-one-out CV over `alphas`), fitted on centred, unscaled latents: on the raw
  latent scale, moving a latent by t * direction moves the predicted value by t * |direction|^2;
* held-out R^2: out-of-fold predictions of an outer K-fold (alpha re-chosen inside each
  training part: nested, nothing of a held-out patient reaches its own prediction), with a
  bootstrap 95% CI over patients;
* shuffled-label control: the same nested procedure on seeded permutations of the values: the
  R^2 a direction reaches when there is nothing to find, and a permutation p-value.

    result = age_direction(latents, ages)          # AgeDirection
    result.r2.value, result.r2.ci, result.shuffled.p_value, result.direction  # (D,) float32
    json.dumps(result.to_dict())
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ground.errors import DataError

DEFAULT_ALPHAS = np.logspace(-2, 4, 13)


@dataclasses.dataclass(frozen=True)
class HeldOutR2:
    """Out-of-fold R^2 (nested K-fold) and its bootstrap 95% CI over patients (NaN: no bootstrap)."""

    value: float
    ci: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class ShuffledControl:
    """Held-out R^2 of the same procedure on `len(r2s)` permutations of the values: mean, 95%
    interval (2.5th and 97.5th percentiles), and the permutation p-value of the real R^2,
    (1 + #{shuffled >= real}) / (1 + shuffles). No shuffles: mean and interval NaN, p 1."""

    mean: float
    interval: tuple[float, float]
    p_value: float
    r2s: tuple[float, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class AgeDirection:
    """direction (D,) float32 (raw latent scale); alpha: ridge penalty of the full fit;
    fold_alphas: the alpha each outer fold chose; r2: held-out R^2; shuffled: the control;
    n: patients; folds: outer folds."""

    direction: np.ndarray
    alpha: float
    fold_alphas: tuple[float, ...]
    r2: HeldOutR2
    shuffled: ShuffledControl
    n: int
    folds: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None); the direction as a list of floats."""
        return {
            "direction": [float(v) for v in self.direction],
            "direction_norm": _num(float(np.linalg.norm(self.direction.astype(np.float64)))),
            "alpha": _num(self.alpha),
            "fold_alphas": [_num(a) for a in self.fold_alphas],
            "r2": {"value": _num(self.r2.value), "ci": [_num(v) for v in self.r2.ci]},
            "shuffled": {"mean": _num(self.shuffled.mean), "interval": [_num(v) for v in self.shuffled.interval],
                         "p_value": _num(self.shuffled.p_value), "r2s": [_num(v) for v in self.shuffled.r2s]},
            "n": self.n,
            "folds": self.folds,
        }


def _num(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


def _check(latents: Any, values: Any, *, folds: int, alphas: Any, shuffles: int,
           bootstrap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
        raise DataError(f"folds must be an integer >= 2, got {folds!r}: use folds=5")
    if isinstance(shuffles, bool) or not isinstance(shuffles, int | np.integer) or shuffles < 0:
        raise DataError(f"shuffles must be an integer >= 0, got {shuffles!r}: use shuffles=20 (0 skips the control)")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) or bootstrap < 0:
        raise DataError(f"bootstrap must be an integer >= 0, got {bootstrap!r}: use bootstrap=200 (0 skips the CI)")
    a = np.asarray(alphas, dtype=np.float64).ravel()
    if a.size == 0 or not np.isfinite(a).all() or (a <= 0).any():
        raise DataError("alphas must be a non-empty list of finite positive ridge penalties: "
                        "use np.logspace(-2, 4, 13)")
    try:
        x = np.asarray(latents, dtype=np.float64)
        y = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"latents and values must be numeric arrays ({exc}): pass latents (N, D), values (N,)") from None
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[1] < 1:
        raise DataError(f"latents must be (N, D) and values (N,) with the same N, got {x.shape} and {y.shape}: "
                        "stack one latent per patient and pass one value per patient")
    n = x.shape[0]
    if n < 2 * folds:
        raise DataError(f"{n} patients are too few for {folds}-fold CV (need at least 2 x folds = {2 * folds}): "
                        "add patients or lower folds")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataError("latents and values must be finite (no NaN or infinity): drop or fix those patients")
    if np.ptp(y) == 0:
        raise DataError(f"values are constant ({y[0]:g} for all {n} patients): a direction needs values that vary")
    return x, y, a


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0.0:
        return float("nan")
    return 1.0 - float(((y - pred) ** 2).sum()) / total


def _nested_oof(x: np.ndarray, y: np.ndarray, *, folds: int, alphas: np.ndarray,
                seed: int) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold predictions (N,) of RidgeCV fitted on each outer training part, and each fold's alpha."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold

    pred = np.empty_like(y)
    chosen = []
    for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(x):
        model = RidgeCV(alphas=alphas).fit(x[train], y[train])
        pred[test] = model.predict(x[test])
        chosen.append(float(model.alpha_))
    return pred, chosen


def _bootstrap_ci(y: np.ndarray, pred: np.ndarray, *, bootstrap: int,
                  rng: np.random.Generator) -> tuple[float, float]:
    if bootstrap == 0:
        return (float("nan"), float("nan"))
    n = y.shape[0]
    stats = np.array([_r2(y[idx], pred[idx]) for idx in rng.integers(0, n, size=(bootstrap, n))])
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return (float(lo), float(hi))


def age_direction(latents: np.ndarray, values: np.ndarray, *, folds: int = 5,
                  alphas: np.ndarray | Any = DEFAULT_ALPHAS, shuffles: int = 20, bootstrap: int = 200,
                  seed: int = 0) -> AgeDirection:
    """The ridge direction of `values` (N,) in `latents` (N, D), with its held-out evidence.

    direction: RidgeCV (alpha by efficient leave-one-out CV over `alphas`) on all patients,
    coefficients on the raw latent scale (centred, unscaled), (D,) float32. r2: R^2 of the
    out-of-fold predictions of a seeded outer `folds`-fold CV, alpha re-chosen inside each
    training part, with a `bootstrap`-resample 95% CI over patients. shuffled: the same nested
    CV (same folds) on `shuffles` seeded permutations of the values.

    Raises DataError (one line, with the fix) for mismatched shapes, fewer than 2 x folds
    patients, non-finite entries, constant values, folds < 2, shuffles < 0, bootstrap < 0 or
    bad alphas. Deterministic for a given seed.
    """
    from sklearn.linear_model import RidgeCV

    x, y, a = _check(latents, values, folds=folds, alphas=alphas, shuffles=shuffles, bootstrap=bootstrap)
    folds, shuffles, bootstrap = int(folds), int(shuffles), int(bootstrap)
    boot_seq, perm_seq = np.random.SeedSequence(seed).spawn(2)

    full = RidgeCV(alphas=a).fit(x, y)
    pred, fold_alphas = _nested_oof(x, y, folds=folds, alphas=a, seed=seed)
    r2 = _r2(y, pred)
    ci = _bootstrap_ci(y, pred, bootstrap=bootstrap, rng=np.random.default_rng(boot_seq))

    perm_rng = np.random.default_rng(perm_seq)
    shuffled_r2s = []
    for _ in range(shuffles):
        y_perm = perm_rng.permutation(y)
        pred_perm, _ = _nested_oof(x, y_perm, folds=folds, alphas=a, seed=seed)
        shuffled_r2s.append(_r2(y_perm, pred_perm))
    s = np.asarray(shuffled_r2s, dtype=np.float64)
    if s.size:
        mean = float(s.mean())
        interval = (float(np.percentile(s, 2.5)), float(np.percentile(s, 97.5)))
    else:
        mean, interval = float("nan"), (float("nan"), float("nan"))
    p_value = (1.0 + float((s >= r2).sum())) / (1.0 + s.size)

    return AgeDirection(
        direction=np.asarray(full.coef_, dtype=np.float32),
        alpha=float(full.alpha_),
        fold_alphas=tuple(fold_alphas),
        r2=HeldOutR2(value=r2, ci=ci),
        shuffled=ShuffledControl(mean=mean, interval=interval, p_value=p_value,
                                 r2s=tuple(float(v) for v in s)),
        n=int(x.shape[0]),
        folds=folds,
    )
