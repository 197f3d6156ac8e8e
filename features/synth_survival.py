"""Outcomes drawn from a known truth: a Weibull proportional-hazards model of a base
dataset's real outcome on its clinical covariates, and event and censoring times drawn
from it once each patient's face has been fixed.

    model = fit_weibull_ph(X, time, event, alpha=...)       # the clinical truth, LP_clin = X @ beta
    t, e = draw_outcomes(model, lp_total, censor_time, censor_event, rng=...)

The hazard is h(t | x) = shape · scale · t^(shape−1) · exp(LP) (t in years), so a patient's
event time is T = (−ln U / (scale · exp(LP)))^(1/shape). Censoring is independent of T: a
time drawn from the base's own censoring distribution (reverse Kaplan–Meier), stretched by
one factor chosen so that the drawn event rate equals the base's. Everything is pure: arrays
and a numpy Generator in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ground.errors import DataError
from ground.types import check_survival_target

DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class WeibullPH:
    """Fitted Weibull PH model: LP = X @ beta; cumulative hazard H(t) = scale · t_years^shape · exp(LP)."""

    beta: np.ndarray        # (p,)
    scale: float
    shape: float
    n: int
    events: int

    def linear_predictor(self, X: np.ndarray) -> np.ndarray:
        """X (n, p) -> (n,) float64."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.beta):
            raise DataError(f"design must be (n, {len(self.beta)}), got {X.shape}")
        return X @ self.beta

    def draw_times(self, lp: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Event times in days for log-hazard ratios lp (n,) and uniforms u (n,) in (0, 1)."""
        years = (-np.log(u) / (self.scale * np.exp(lp))) ** (1.0 / self.shape)
        return years * DAYS_PER_YEAR

    def describe(self) -> dict[str, str | float | int | list[float]]:
        return {"model": "weibull_ph", "scale_per_year": round(self.scale, 6), "shape": round(self.shape, 6),
                "beta": [round(float(b), 6) for b in self.beta], "n": self.n, "events": self.events}


def fit_weibull_ph(X: np.ndarray, time: np.ndarray, event: np.ndarray, *, alpha: float) -> WeibullPH:
    """Maximum-likelihood Weibull PH fit with a ridge penalty alpha·|beta|²/2.

    X (n, p) design (standardised columns), time (n,) days > 0, event (n,) bool.
    """
    from scipy.optimize import minimize

    time, event = check_survival_target(time, event, what="Weibull fit target")
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != len(time):
        raise DataError(f"design must be (n, p) with n = {len(time)} rows, got {X.shape}")
    if alpha < 0:
        raise DataError(f"ridge penalty alpha must be >= 0, got {alpha}")
    t = time / DAYS_PER_YEAR
    log_t = np.log(t)
    d = event.astype(np.float64)
    p = X.shape[1]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        log_scale, log_shape, beta = theta[0], theta[1], theta[2:]
        k = np.exp(log_shape)
        eta = log_scale + X @ beta
        cum = np.exp(eta + k * log_t)                       # H(t_i | x_i)
        ll = np.sum(d * (log_shape + eta + (k - 1.0) * log_t) - cum)
        nll = -ll + 0.5 * alpha * float(beta @ beta)
        resid = d - cum                                      # d ll / d eta
        grad = np.empty_like(theta)
        grad[0] = -resid.sum()
        grad[1] = -(np.sum(d * (1.0 + k * log_t)) - np.sum(cum * k * log_t))
        grad[2:] = -(X.T @ resid) + alpha * beta
        return float(nll), grad

    rate = max(d.sum(), 1.0) / t.sum()
    theta0 = np.concatenate([[np.log(rate), 0.0], np.zeros(p)])
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    if not np.all(np.isfinite(res.x)):
        raise DataError("the Weibull fit of the base's outcome did not converge; raise synth.cox_alpha")
    return WeibullPH(beta=res.x[2:].copy(), scale=float(np.exp(res.x[0])), shape=float(np.exp(res.x[1])),
                     n=len(time), events=int(event.sum()))


def censoring_sampler(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The base's censoring distribution as (times (m,), probabilities (m,)) for sampling.

    Reverse Kaplan–Meier: censoring is the 'event'. The mass the estimate leaves beyond the
    last follow-up goes to that last time (the study's administrative end).
    """
    time, event = check_survival_target(time, event, allow_all_censored=True, what="base follow-up")
    order = np.argsort(time, kind="stable")
    t, censored = time[order], ~event[order]
    at_risk = len(t) - np.arange(len(t))
    surv = np.cumprod(1.0 - censored / at_risk)
    mass = -np.diff(np.concatenate([[1.0], surv]))
    mass[-1] += surv[-1]
    keep = mass > 0
    return t[keep], mass[keep] / mass[keep].sum()


def calibrate_censoring(event_times: np.ndarray, censor_times: np.ndarray, *, target_event_rate: float,
                        lo: float = 1e-3, hi: float = 1e3) -> float:
    """Factor f such that mean(T <= f·C) is as close as possible to target_event_rate.

    The rate rises with f, so bisection on log f; (n,) arrays in, f out.
    """
    if not 0 < target_event_rate < 1:
        raise DataError(f"target event rate must be in (0, 1), got {target_event_rate}")

    def rate(f: float) -> float:
        return float(np.mean(event_times <= f * censor_times))

    if rate(hi) <= target_event_rate:
        return hi
    if rate(lo) >= target_event_rate:
        return lo
    a, b = np.log(lo), np.log(hi)
    for _ in range(60):
        m = 0.5 * (a + b)
        if rate(float(np.exp(m))) < target_event_rate:
            a = m
        else:
            b = m
    return float(np.exp(b))


def draw_outcomes(model: WeibullPH, lp_total: np.ndarray, *, censor_times: np.ndarray, censor_probs: np.ndarray,
                  target_event_rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Draw (time_days (n,), event (n,) bool, censoring factor) for log-hazards lp_total (n,).

    Event times come from the Weibull model, censoring times from the base's censoring
    distribution stretched to give `target_event_rate`. Times are whole days, at least 1.
    """
    lp_total = np.asarray(lp_total, dtype=np.float64)
    if lp_total.ndim != 1 or not np.isfinite(lp_total).all():
        raise DataError("log-hazards must be a finite 1-D array, one per patient")
    n = len(lp_total)
    u = rng.uniform(np.finfo(float).tiny, 1.0, size=n)
    t_event = model.draw_times(lp_total, u)
    c = rng.choice(censor_times, size=n, p=censor_probs)
    factor = calibrate_censoring(t_event, c, target_event_rate=target_event_rate)
    c = factor * c
    event = t_event <= c
    time = np.maximum(1.0, np.ceil(np.where(event, t_event, c)))
    return time, event, factor


def c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index (scikit-survival); higher risk should mean earlier events."""
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(np.asarray(event, bool), np.asarray(time, float),
                                            np.asarray(risk, float))[0])
