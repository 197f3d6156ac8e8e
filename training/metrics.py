"""Evaluation of a survival model on a test set, with bootstrap 95% confidence intervals.

Harrell's C, Uno's C (IPCW, truncated at the training follow-up), the integrated Brier
score over the test follow-up, Brier scores and cumulative/dynamic AUC at the configured
horizons, calibration at a horizon, Kaplan-Meier curves by predicted-risk tertile, and
Harrell's C per cancer type. The censoring distribution for IPCW comes from the training
set, as scikit-survival requires. A metric that the follow-up cannot support (a horizon
beyond the last test time) is NaN, never an extrapolation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ground.types import check_survival_target
from training.resample import resamples


@dataclass
class Evaluation:
    point: dict[str, float]
    lower: dict[str, float]
    upper: dict[str, float]
    n_test: int
    n_events: int
    subgroups: pd.DataFrame = field(default_factory=pd.DataFrame)
    calibration: pd.DataFrame = field(default_factory=pd.DataFrame)
    calibration_horizon: float = float("nan")

    def flat(self) -> dict[str, float]:
        """metric, metric_lo, metric_hi for every metric (NaN where undefined)."""
        out: dict[str, float] = {}
        for k, v in self.point.items():
            out[k] = v
            out[f"{k}_lo"] = self.lower.get(k, float("nan"))
            out[f"{k}_hi"] = self.upper.get(k, float("nan"))
        return out


def _surv(time: np.ndarray, event: np.ndarray):
    from sksurv.util import Surv

    return Surv.from_arrays(event, time)


def evaluation_grid(train_time: np.ndarray, test_time: np.ndarray, n: int = 30) -> np.ndarray:
    """Days on which the integrated Brier score is computed: inside both follow-ups."""
    hi = min(np.percentile(test_time, 90), train_time.max()) * 0.999
    lo = np.percentile(test_time, 5)
    if not hi > lo:
        return np.array([])
    return np.unique(np.linspace(lo, hi, n))


def point_metrics(train_y, time: np.ndarray, event: np.ndarray, risk: np.ndarray, surv_grid: np.ndarray,
                  grid: np.ndarray, surv_h: np.ndarray, horizons: Sequence[float], tau: float) -> dict[str, float]:
    """All scalar metrics for one (possibly resampled) test set; NaN where undefined.

    Brier scores on the grid and at the horizons come from one brier_score call (one
    censoring fit); the integrated Brier score is their trapezoidal mean over the grid,
    as scikit-survival's integrated_brier_score computes it.
    """
    from sksurv.metrics import (
        brier_score,
        concordance_index_censored,
        concordance_index_ipcw,
        cumulative_dynamic_auc,
    )

    nan = float("nan")
    m: dict[str, float] = {}
    y = _surv(time, event)
    has_pairs = event.any() and np.ptp(time) > 0
    m["c_index"] = float(concordance_index_censored(event, time, risk)[0]) if has_pairs else nan
    try:
        m["uno_c"] = float(concordance_index_ipcw(train_y, y, risk, tau=tau)[0])
    except (ValueError, ZeroDivisionError):
        m["uno_c"] = nan
    in_range = (grid >= time.min()) & (grid < time.max())
    ok_grid = grid[in_range]
    h_ok = [j for j, h in enumerate(horizons) if time.min() <= h < min(time.max(), tau)]
    h_days = np.asarray([horizons[j] for j in h_ok], dtype=np.float64)
    times = np.concatenate([ok_grid, h_days])
    probs = np.hstack([surv_grid[:, in_range], surv_h[:, h_ok]])
    scores = np.full(len(times), nan)
    if len(times):
        # brier_score sorts and de-duplicates its times, so hand it sorted unique ones and map back
        uniq, first = np.unique(times, return_index=True)
        try:
            su = np.asarray(brier_score(train_y, y, probs[:, first], uniq)[1], dtype=np.float64)
            scores = su[np.searchsorted(uniq, times)]
        except ValueError:
            pass
    g = len(ok_grid)
    m["ibs"] = float(np.trapezoid(scores[:g], ok_grid) / (ok_grid[-1] - ok_grid[0])) if g >= 2 else nan
    aucs = np.full(len(h_ok), nan)
    if len(h_ok):
        try:
            aucs = np.asarray(cumulative_dynamic_auc(train_y, y, risk, h_days)[0], dtype=np.float64)
        except (ValueError, ZeroDivisionError):
            pass
    for j, h in enumerate(horizons):
        key = f"{int(h)}d"
        m[f"brier_{key}"] = float(scores[g + h_ok.index(j)]) if j in h_ok else nan
        m[f"auc_{key}"] = float(aucs[h_ok.index(j)]) if j in h_ok else nan
    try:
        ok = ok_grid[ok_grid < tau]
        m["auc_mean"] = float(cumulative_dynamic_auc(train_y, y, risk, ok)[1]) if len(ok) >= 2 else nan
    except (ValueError, ZeroDivisionError):
        m["auc_mean"] = nan
    return m


def subgroup_c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray, groups: np.ndarray, *,
                     bootstrap: int, seed: int) -> pd.DataFrame:
    """Harrell's C per group (the paper's Fig. 3), with bootstrap CIs; NaN for groups without pairs."""
    from sksurv.metrics import concordance_index_censored

    rows = []
    rng = np.random.default_rng(seed)  # one stream across the groups, in sorted group order
    for g in sorted(pd.unique(groups.astype(str))):
        idx = np.flatnonzero(groups.astype(str) == g)
        t, e, r = time[idx], event[idx], risk[idx]
        c = float(concordance_index_censored(e, t, r)[0]) if e.any() and len(idx) >= 2 else float("nan")
        boots = []
        for b in resamples(e, count=bootstrap if np.isfinite(c) else 0, rng=rng):
            try:
                boots.append(concordance_index_censored(e[b], t[b], r[b])[0])
            except ValueError:
                pass
        lo, hi = (np.percentile(boots, [2.5, 97.5]) if len(boots) >= 10 else (float("nan"), float("nan")))
        rows.append({"group": g, "n": int(len(idx)), "events": int(e.sum()), "c_index": c,
                     "c_index_lo": float(lo), "c_index_hi": float(hi)})
    return pd.DataFrame(rows)


def calibration_table(time: np.ndarray, event: np.ndarray, surv_at_h: np.ndarray, horizon: float,
                      *, bins: int = 5) -> pd.DataFrame:
    """Predicted vs Kaplan-Meier observed survival at `horizon` in quantile groups of prediction."""
    from sksurv.nonparametric import kaplan_meier_estimator

    bins = max(1, min(bins, len(time) // 10 or 1))
    order = np.argsort(surv_at_h, kind="mergesort")
    rows = []
    for k, idx in enumerate(np.array_split(order, bins)):
        if len(idx) == 0 or not event[idx].any():
            obs, lo, hi = 1.0, float("nan"), float("nan")
            if len(idx):
                rows.append({"bin": k, "n": len(idx), "predicted": float(surv_at_h[idx].mean()),
                             "observed": obs, "observed_lo": lo, "observed_hi": hi})
            continue
        x, s, ci = kaplan_meier_estimator(event[idx], time[idx], conf_type="log-log")
        j = np.searchsorted(x, horizon, side="right") - 1
        obs = 1.0 if j < 0 else float(s[j])
        lo, hi = (float("nan"), float("nan")) if j < 0 else (float(ci[0][j]), float(ci[1][j]))
        rows.append({"bin": k, "n": int(len(idx)), "predicted": float(surv_at_h[idx].mean()),
                     "observed": obs, "observed_lo": lo, "observed_hi": hi})
    return pd.DataFrame(rows)


def risk_tertiles(risk: np.ndarray, cut_reference: np.ndarray | None = None) -> np.ndarray:
    """0/1/2 = low/mid/high predicted risk; cut points from `cut_reference` (e.g. training risks)."""
    ref = risk if cut_reference is None else cut_reference
    cuts = np.quantile(ref, [1 / 3, 2 / 3])
    return np.searchsorted(cuts, risk, side="right")


def evaluate(*, train_time: np.ndarray, train_event: np.ndarray, time: np.ndarray, event: np.ndarray,
             risk: np.ndarray, survival: Callable[[np.ndarray], np.ndarray], horizons: Sequence[float],
             groups: np.ndarray | None = None, bootstrap: int, seed: int) -> Evaluation:
    """Evaluate one model's test predictions.

    Args:
        train_time, train_event: (m,) training follow-up (censoring weights, grid bounds).
        time, event: (n,) test target; risk: (n,) predicted log-risk (higher = worse).
        survival: days (k,) -> (n, k) predicted survival probabilities of the test patients.
        horizons: days for Brier/AUC; groups: (n,) labels for per-group C-index.
        bootstrap: resamples for the 95% percentile CIs (0: none); seed: their RNG seed.
    """
    train_time, train_event = check_survival_target(train_time, train_event, what="training target")
    time, event = check_survival_target(time, event, what="test target")
    risk = np.asarray(risk, dtype=np.float64)
    train_y = _surv(train_time, train_event)
    tau = float(train_time.max())
    grid = evaluation_grid(train_time, time)
    horizons = [float(h) for h in horizons]
    surv_grid = survival(grid) if len(grid) else np.zeros((len(time), 0))
    surv_h = survival(np.asarray(horizons))
    point = point_metrics(train_y, time, event, risk, surv_grid, grid, surv_h, horizons, tau)

    samples: dict[str, list[float]] = {k: [] for k in point}
    for b in resamples(event, count=bootstrap, rng=seed):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            # a resample can lack cases before a horizon; that metric is then NaN and skipped
            warnings.simplefilter("ignore", RuntimeWarning)
            m = point_metrics(train_y, time[b], event[b], risk[b], surv_grid[b], grid, surv_h[b], horizons, tau)
        for k, v in m.items():
            if np.isfinite(v):
                samples[k].append(v)
    lower, upper = {}, {}
    for k, vals in samples.items():
        ok = np.isfinite(point[k]) and len(vals) >= max(10, bootstrap // 2)
        lower[k], upper[k] = ((float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))) if ok
                              else (float("nan"), float("nan")))

    sub = (subgroup_c_index(time, event, risk, np.asarray(groups), bootstrap=bootstrap, seed=seed)
           if groups is not None else pd.DataFrame())
    valid_h = [h for h in horizons if time.min() <= h < min(time.max(), tau)]
    h_cal = valid_h[len(valid_h) // 2] if valid_h else float(np.median(time))
    cal = calibration_table(time, event, survival(np.array([h_cal]))[:, 0], h_cal)
    return Evaluation(point, lower, upper, int(len(time)), int(event.sum()), sub, cal, h_cal)
