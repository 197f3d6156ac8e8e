"""Cross-fitted evaluation: every patient scored by models that never saw them, with paired CIs.

A single 25% test split leaves a few dozen events to rank models by; cross-fitting scores
all patients instead. `cross_fit` splits the cohort into seeded, event-stratified folds and,
for each fold, fits every model (and the late fusion, built exactly as training.pipeline.train
builds it) on the other folds and predicts the held-out one. The result holds one
out-of-fold log-risk and one out-of-fold survival curve per patient and model.

    cf = cross_fit(df, training=params.training, numeric=numeric, categorical=categorical,
                   folds=5, seed=0, progress=print)
    out = cf.summary(bootstrap=200, seed=0, extra_risks={"ceiling_total": lp_total, ...},
                     derived=ceiling_formulas())

The statistics below are pure functions of (time, event, risks[, survival]). Every one of
them is computed on ONE set of bootstrap resamples of patients (drawn from `seed`), shared by
all models and derived quantities, so differences and ratios between models are paired.
"""

from __future__ import annotations

import logging
import math
import time as _time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ground.errors import ConfigError, DataError
from ground.types import check_survival_target
from training.base import SurvivalModel
from training.metrics import _surv, evaluation_grid
from training.models import MODEL_NAMES, factory, uses_latent
from training.preprocess import LATENT_COLUMN, Preprocessor
from training.resample import Stat, percentile_stat, resamples

log = logging.getLogger(__name__)

FUSION = "fusion"
# A derived statistic: the dict of (resampled) C-indices by risk name -> a number, or None
# when it is undefined on that resample (then that resample is dropped for it).
Formula = Callable[[Mapping[str, float]], "float | None"]


# ----------------------------------------------------------------------------------------
# cross-fitting
# ----------------------------------------------------------------------------------------
@dataclass
class CrossFit:
    """Out-of-fold predictions for every patient (rows in the order of the input frame).

    fold: (n,) int, the fold whose models did NOT see the patient (0..folds-1).
    risk: model -> (n,) out-of-fold log-risk (higher = worse).
    survival: model -> (n, g) out-of-fold survival probabilities on `grid` (days, ascending).
    grid: (g,) the cohort's evaluation grid (training.metrics.evaluation_grid over all
    patients) united with the horizons; time (n,) days, event (n,) bool; patient_id (n,).
    """

    patient_id: np.ndarray
    fold: np.ndarray
    risk: dict[str, np.ndarray]
    survival: dict[str, np.ndarray]
    grid: np.ndarray
    time: np.ndarray
    event: np.ndarray
    folds: int
    seed: int
    horizons: tuple[float, ...] = ()
    fold_seconds: list[float] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return list(self.risk)

    def summary(self, *, bootstrap: int, seed: int, extra_risks: Mapping[str, np.ndarray] | None = None,
                derived: Mapping[str, Formula] | None = None, level: float = 0.95) -> dict[str, Any]:
        """{"models": per-name C (and IBS for the fitted models), "derived": formulas}.

        `extra_risks` (e.g. the true linear predictors, "ceilings") are scored like the models
        (C only); everything shares one set of resamples. See bootstrap_summary.
        """
        risks = {**self.risk, **dict(extra_risks or {})}
        models, der = _bootstrap(self.time, self.event, risks, survival=self.survival, grid=self.grid,
                                 formulas=derived or {}, bootstrap=bootstrap, seed=seed, level=level)
        return {"models": models, "derived": der, "bootstrap": bootstrap, "seed": seed,
                "n": int(len(self.time)), "events": int(self.event.sum())}


def crossfit_grid(time: np.ndarray, horizons: Sequence[float] = ()) -> np.ndarray:
    """Days on which out-of-fold survival is predicted: evaluation_grid over all patients + horizons."""
    t = np.asarray(time, dtype=np.float64)
    return np.unique(np.concatenate([evaluation_grid(t, t), np.asarray(horizons, dtype=np.float64)]))


def fold_assignment(event: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """(n,) fold index per patient: seeded StratifiedKFold by event (shuffled)."""
    from sklearn.model_selection import StratifiedKFold

    event = np.asarray(event).astype(int)
    out = np.full(len(event), -1, dtype=int)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # fewer censored patients than folds: some folds then hold only events, which is fine
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for k, (_, held_out) in enumerate(skf.split(np.zeros(len(event)), event)):
            out[held_out] = k
    return out


def _check_folds(folds: object, n_events: int, what: str) -> int:
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer):
        raise DataError(f"{what}: folds must be an integer >= 2, got {folds!r}; use e.g. folds=5")
    if folds < 2:
        raise DataError(f"{what}: folds must be >= 2, got {folds}; use e.g. folds=5")
    if folds > n_events:
        raise DataError(f"{what}: {folds} folds need at least {folds} events, the data has {n_events}; "
                        f"lower folds to at most {n_events} or add patients")
    return int(folds)


def _model_plan(training: Any, models: Sequence[str] | None, latent: bool) -> tuple[list[str], list[str]]:
    """(models to report except the fusion, fusion members or [] for no fusion)."""
    explicit = models is not None
    requested = list(models) if models is not None else [*training.models, *([FUSION] if training.fusion_members else [])]
    if explicit and not requested:
        raise DataError("cross_fit: models is empty; pass None (training.models and the fusion) or model names")
    known = (*MODEL_NAMES, FUSION)
    for name in requested:
        if name not in known:
            raise ConfigError(f"cross_fit: unknown model {name!r}; choose from {', '.join(known)}")
    if len(set(requested)) != len(requested):
        raise DataError(f"cross_fit: models lists a name twice ({requested}); list each model once")
    if explicit and not latent:
        bad = [m for m in requested if uses_latent(m)]
        if bad:
            raise DataError(f"cross_fit: {bad} need a `latent` column, which the data lacks; "
                            "project the photos or drop the latent models")
    names = [m for m in requested if m != FUSION and (latent or not uses_latent(m))]
    members: list[str] = []
    if FUSION in requested:
        members = [m for m in training.fusion_members if latent or not uses_latent(m)]
        if not members and explicit:
            raise DataError("cross_fit: the fusion has no usable member (training.fusion_members lists only latent "
                            "models and the data has no `latent` column); drop 'fusion' from models")
    if not names and not members:
        raise DataError("cross_fit: no model can be fitted: training.models lists only latent models and the data "
                        "has no `latent` column; add clinical models or project the photos")
    return names, members


def cross_fit(df: pd.DataFrame, *, training: Any, numeric: Sequence[str], categorical: Sequence[str],
              folds: int, seed: int, models: Sequence[str] | None = None,
              progress: Callable[[str], None] | None = None) -> CrossFit:
    """Out-of-fold risks and survival curves of every model for every patient.

    Args:
        df: one row per patient: clinical covariates (`numeric`, `categorical`), optionally
            `latent` (arrays of equal length), time_days, event; patient_id if present.
        training: ground.config.TrainingParams (model settings, fusion members/folds,
            min_events_per_feature, horizons_days; its seed seeds the models).
        folds, seed: number of outer folds and their seed (event-stratified StratifiedKFold
            over all patients).
        models: names from training.models' vocabulary plus "fusion"; None = training.models
            and the fusion (if training.fusion_members), latent models skipped without a
            `latent` column (naming one explicitly then is an error).
        progress: called with one line at the start and end of each fold (default: logging).

    In each fold every model is fitted on the other folds exactly as training.pipeline.train
    fits it; the fusion's members are fitted on that training part and its second stage on
    out_of_fold_risks of the training part (training.fusion_folds, training.seed), so no
    model, member or stage ever sees the held-out fold.

    Raises:
        DataError (one line): bad target, folds < 2 or more folds than events, missing
            columns, latent models without latents; ConfigError: an unknown model name.
    """
    from training.fusion import FusionModel, out_of_fold_risks

    say = progress or log.info
    if not isinstance(df, pd.DataFrame) or len(df) == 0:
        raise DataError("cross_fit: the data is empty (0 rows); pass one row per patient")
    for col in ("time_days", "event"):
        if col not in df.columns:
            raise DataError(f"cross_fit: the data lacks the column {col!r}; it needs time_days and event")
    df = df.reset_index(drop=True)
    time, event = check_survival_target(df["time_days"].to_numpy(), df["event"].to_numpy(), what="cross_fit target")
    if "patient_id" in df.columns:
        pid = df["patient_id"].to_numpy()
        dup = pd.Index(pid).duplicated()
        if dup.any():
            raise DataError(f"cross_fit: patient_id {pid[int(np.flatnonzero(dup)[0])]!r} appears more than once; "
                            "pass one row per patient")
    else:
        pid = np.arange(len(df))
    k = _check_folds(folds, int(event.sum()), "cross_fit")
    latent = LATENT_COLUMN in df.columns and bool(df[LATENT_COLUMN].notna().any())
    names, members = _model_plan(training, models, latent)
    numeric, categorical = tuple(numeric), tuple(categorical)
    Preprocessor(numeric, categorical, use_latent=latent and any(uses_latent(m) for m in {*names, *members})
                 ).fit(df, what="cross_fit data")  # covariate problems surface here, one line, before any fit

    t = training
    mepf = float(t.min_events_per_feature)
    factories = {m: factory(m, t, numeric=numeric, categorical=categorical) for m in {*names, *members}}
    horizons = tuple(float(h) for h in t.horizons_days)
    grid = crossfit_grid(time, horizons)
    fold = fold_assignment(event, folds=k, seed=seed)
    reported = [*names, *([FUSION] if members else [])]
    risk = {m: np.full(len(df), np.nan) for m in reported}
    survival = {m: np.full((len(df), len(grid)), np.nan) for m in reported}
    seconds: list[float] = []
    for j in range(k):
        start = _time.perf_counter()
        tr, va = np.flatnonzero(fold != j), np.flatnonzero(fold == j)
        train_df, test_df = df.iloc[tr].reset_index(drop=True), df.iloc[va].reset_index(drop=True)
        say(f"cross-fit fold {j + 1}/{k}: fitting {', '.join(reported)} on {len(tr)} patients "
            f"({int(event[tr].sum())} events), predicting {len(va)}")
        check_survival_target(time[tr], event[tr], what=f"cross_fit fold {j + 1} training part")
        fitted: dict[str, SurvivalModel] = {}
        for name in [*names, *[m for m in members if m not in names]]:
            fitted[name] = factories[name]().fit(train_df, min_events_per_feature=mepf)
        predictors: dict[str, SurvivalModel] = {m: fitted[m] for m in names}
        if members:
            oof = out_of_fold_risks(train_df, {m: factories[m] for m in members}, folds=t.fusion_folds,
                                    seed=t.seed, min_events_per_feature=mepf)
            fusion = FusionModel({m: fitted[m] for m in members}, alpha=t.coxph_alpha, seed=t.seed)
            fusion.fit_stage2(oof, time[tr], event[tr], min_events_per_feature=mepf)
            predictors[FUSION] = fusion
        for name, model in predictors.items():
            r = np.asarray(model.predict_risk(test_df), dtype=np.float64)
            risk[name][va] = r
            survival[name][va] = model.survival_from_risk(r, grid)
        seconds.append(_time.perf_counter() - start)
        say(f"cross-fit fold {j + 1}/{k} done in {seconds[-1]:.1f} s")
    for name in reported:
        if not np.isfinite(risk[name]).all():
            bad = int(np.flatnonzero(~np.isfinite(risk[name]))[0])
            raise DataError(f"cross_fit: {name} predicted a non-finite risk (first at row {bad}); "
                            "check that model's settings (e.g. lower training.deepsurv_lr)")
    return CrossFit(patient_id=pid, fold=fold, risk=risk, survival=survival, grid=grid, time=time, event=event,
                    folds=k, seed=seed, horizons=horizons, fold_seconds=seconds)


# ----------------------------------------------------------------------------------------
# paired bootstrap statistics
# ----------------------------------------------------------------------------------------
def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C (sksurv concordance_index_censored); NaN without a comparable pair."""
    from sksurv.metrics import concordance_index_censored

    if not event.any():
        return float("nan")
    try:
        return float(concordance_index_censored(event, time, risk)[0])
    except (ValueError, ZeroDivisionError):
        return float("nan")


def brier_terms(time: np.ndarray, event: np.ndarray, surv: np.ndarray, days: np.ndarray) -> np.ndarray:
    """(n, len(days)) per-patient IPCW Brier terms; their column means are the Brier scores.

    The same terms as sksurv.metrics.brier_score with the censoring distribution estimated
    from these patients (all of them: the predictions are out-of-fold), so the Brier score
    of a resample is the mean of the resampled rows under that one censoring fit.
    """
    from sksurv.nonparametric import CensoringDistributionEstimator

    cens = CensoringDistributionEstimator().fit(_surv(time, event))
    g_t = np.asarray(cens.predict_proba(days), dtype=np.float64)
    g_y = np.asarray(cens.predict_proba(time), dtype=np.float64)
    g_t[g_t == 0] = np.inf
    g_y[g_y == 0] = np.inf
    case = (time[:, None] <= days[None, :]) & event[:, None]
    control = time[:, None] > days[None, :]
    return np.square(surv) * case / g_y[:, None] + np.square(1.0 - surv) * control / g_t[None, :]


def ibs_columns(time: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(g,) bool: the grid days the integrated Brier score runs over.

    The days of the cohort's evaluation grid (training.metrics.evaluation_grid over all
    patients, as training.metrics integrates the IBS) where the grid holds at least two of
    them (a crossfit_grid holds all); otherwise every grid day inside that grid's window.
    """
    window = evaluation_grid(time, time)
    grid = np.asarray(grid, dtype=np.float64)
    if len(window) < 2 or len(grid) == 0:
        return np.zeros(len(grid), dtype=bool)
    tol = 1e-9 * max(1.0, float(window[-1]))
    on_grid = np.abs(grid[:, None] - window[None, :]).min(axis=1) <= tol
    if on_grid.sum() >= 2:
        return on_grid
    return (grid >= window[0] - tol) & (grid <= window[-1] + tol)


def _ibs(brier: np.ndarray, days: np.ndarray) -> float:
    return float(np.trapezoid(brier, days) / (days[-1] - days[0]))


def _as_float(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v if math.isfinite(v) else float("nan")


def _check_inputs(time, event, risks, survival, grid, bootstrap, level):
    time, event = check_survival_target(time, event, what="bootstrap target")
    n = len(time)
    if not isinstance(risks, Mapping) or not risks:
        raise DataError("bootstrap: risks must be a non-empty dict {name: (n,) log-risk}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) or bootstrap < 0:
        raise DataError(f"bootstrap: the number of resamples must be an integer >= 0, got {bootstrap!r}")
    if not 0 < level < 1:
        raise DataError(f"bootstrap: level must be in (0, 1), got {level!r}; use 0.95")
    out: dict[str, np.ndarray] = {}
    for name, r in risks.items():
        a = np.asarray(r, dtype=np.float64) if np.ndim(r) else np.asarray([r], dtype=np.float64)
        if a.ndim != 1 or len(a) != n:
            raise DataError(f"bootstrap: risk {name!r} has shape {a.shape} but there are {n} patients; "
                            "pass one risk per patient")
        bad = ~np.isfinite(a)
        if bad.any():
            raise DataError(f"bootstrap: risk {name!r} has {int(bad.sum())} NaN or infinite values "
                            f"(first at row {int(np.flatnonzero(bad)[0])}); pass finite risks")
        out[name] = a
    surv: dict[str, np.ndarray] = {}
    g = None
    if survival:
        if grid is None:
            raise DataError("bootstrap: survival was given without grid; pass the days of its columns as grid")
        g = np.asarray(grid, dtype=np.float64)
        if g.ndim != 1 or not np.isfinite(g).all() or (len(g) > 1 and not (np.diff(g) > 0).all()):
            raise DataError("bootstrap: grid must be a 1-D array of finite, strictly increasing days")
        for name, s in survival.items():
            if name not in out:
                raise DataError(f"bootstrap: survival for {name!r} has no risk; pass its risk in risks too")
            a = np.asarray(s, dtype=np.float64)
            if a.shape != (n, len(g)):
                raise DataError(f"bootstrap: survival {name!r} has shape {a.shape}, expected {(n, len(g))} "
                                "(patients x grid days)")
            if not np.isfinite(a).all() or (a < -1e-9).any() or (a > 1 + 1e-9).any():
                raise DataError(f"bootstrap: survival {name!r} must hold probabilities in [0, 1] (no NaN)")
            surv[name] = a
    return time, event, out, surv, g


def _bootstrap(time, event, risks, *, survival, grid, formulas, bootstrap, seed, level
               ) -> tuple[dict[str, dict[str, Stat]], dict[str, Stat]]:
    time, event, risks, survival, grid = _check_inputs(time, event, risks, survival, grid, bootstrap, level)
    names = list(risks)
    point_c = {m: harrell_c(time, event, risks[m]) for m in names}
    point_d: dict[str, float] = {}
    for d, f in formulas.items():
        try:
            point_d[d] = _as_float(f(point_c))
        except KeyError as exc:
            raise DataError(f"bootstrap: derived statistic {d!r} needs the risk {exc.args[0]!r}; pass it in risks "
                            f"(have: {', '.join(names)})") from None
    terms: dict[str, np.ndarray] = {}
    days = np.zeros(0)
    if survival and grid is not None:
        cols = ibs_columns(time, grid)
        days = grid[cols]
        if len(days) >= 2:
            terms = {m: brier_terms(time, event, s[:, cols], days) for m, s in survival.items()}
    point_ibs = {m: _ibs(tm.mean(axis=0), days) for m, tm in terms.items()}

    c_samples: dict[str, list[float]] = {m: [] for m in names}
    ibs_samples: dict[str, list[float]] = {m: [] for m in terms}
    d_samples: dict[str, list[float]] = {d: [] for d in formulas}
    for b in resamples(event, count=bootstrap, rng=seed):  # one set, shared by every statistic
        tb, eb = time[b], event[b]
        cb = {m: harrell_c(tb, eb, risks[m][b]) for m in names}
        for m, v in cb.items():
            if math.isfinite(v):
                c_samples[m].append(v)
        for m, tm in terms.items():
            ibs_samples[m].append(_ibs(tm[b].mean(axis=0), days))
        for d, f in formulas.items():
            v = _as_float(f(cb))
            if math.isfinite(v):
                d_samples[d].append(v)
    models: dict[str, dict[str, Stat]] = {}
    for m in names:
        models[m] = {"c_index": percentile_stat(point_c[m], c_samples[m], bootstrap, level)}
        if m in survival:
            models[m]["ibs"] = (percentile_stat(point_ibs[m], ibs_samples[m], bootstrap, level) if m in terms
                                else {"value": None, "ci": [None, None], "resamples": 0})
    derived = {d: percentile_stat(point_d[d], d_samples[d], bootstrap, level) for d in formulas}
    return models, derived


def bootstrap_summary(time: np.ndarray, event: np.ndarray, risks: Mapping[str, np.ndarray], *,
                      survival: Mapping[str, np.ndarray] | None = None, grid: np.ndarray | None = None,
                      bootstrap: int, seed: int, level: float = 0.95) -> dict[str, dict[str, Stat]]:
    """Harrell's C (and IBS where survival is given) per risk name, with paired percentile CIs.

    Args:
        time, event: (n,) follow-up days and event indicators.
        risks: name -> (n,) log-risk (higher = worse); models' out-of-fold risks and plain
            arrays such as the true linear predictor are treated alike.
        survival: name -> (n, g) survival probabilities on `grid` (g days, increasing).
        bootstrap: resamples (0: no CIs); seed: their RNG seed; level: CI coverage.

    Returns:
        {name: {"c_index": Stat, "ibs": Stat (names in survival only)}}, Stat being
        {"value": float | None, "ci": [lo, hi], "resamples": k}. value is None where the
        statistic is undefined; the CI is None where fewer than max(10, bootstrap/2) resamples
        define it. IBS integrates the Brier score (censoring from all these patients) over the
        grid days of the cohort's evaluation grid (see ibs_columns), trapezoidally, as
        sksurv's integrated_brier_score does.

    Every statistic uses the same resamples (training.resample.resamples with this seed), so
    with equal arguments bootstrap_derived sees exactly these resamples too.
    """
    models, _ = _bootstrap(time, event, risks, survival=survival or {}, grid=grid, formulas={},
                           bootstrap=bootstrap, seed=seed, level=level)
    return models


def bootstrap_derived(time: np.ndarray, event: np.ndarray, risks: Mapping[str, np.ndarray],
                      formulas: Mapping[str, Formula], *, bootstrap: int, seed: int, level: float = 0.95
                      ) -> dict[str, Stat]:
    """Statistics derived from the C-indices of several risks, with paired percentile CIs.

    Each formula gets the dict {risk name: Harrell's C} (on the full data for the value, on
    each resample for the CI; all formulas share the resamples of bootstrap_summary with the
    same seed) and returns a number, or None/NaN where it is undefined. A resample on which a
    formula is undefined (e.g. a ratio() whose denominator is <= 0 there) is dropped for that
    formula only; its value is None when it is undefined on the full data (e.g. a point
    denominator <= 0). The CI is None where fewer than max(10, bootstrap/2) resamples remain.

    Returns {name: {"value": float | None, "ci": [lo, hi], "resamples": k}}.
    Raises DataError naming a risk a formula needs but `risks` lacks.
    """
    if not isinstance(formulas, Mapping) or not formulas:
        raise DataError("bootstrap: formulas must be a non-empty dict {name: callable on the C-indices}")
    for d, f in formulas.items():
        if not callable(f):
            raise DataError(f"bootstrap: formula {d!r} is not callable; pass a function of the dict of C-indices")
    _, derived = _bootstrap(time, event, risks, survival={}, grid=None, formulas=formulas, bootstrap=bootstrap,
                            seed=seed, level=level)
    return derived


# ----------------------------------------------------------------------------------------
# formula builders
# ----------------------------------------------------------------------------------------
def c_of(name: str) -> Formula:
    """C of one risk."""
    return lambda c: c[name]


def difference(a: str, b: str) -> Formula:
    """C_a - C_b (paired)."""
    return lambda c: c[a] - c[b]


def above_chance(name: str) -> Formula:
    """C - 0.5."""
    return lambda c: c[name] - 0.5


def ratio(numerator: Formula, denominator: Formula) -> Formula:
    """numerator / denominator; undefined (None) where the denominator is <= 0 (or NaN)."""
    def f(c: Mapping[str, float]) -> float | None:
        den = _as_float(denominator(c))
        if not den > 0:
            return None
        return _as_float(numerator(c)) / den
    return f


def ceiling_formulas(*, fusion: str = FUSION, clinical: str = "coxph_clinical", embedding: str = "coxnet_latent",
                     ceiling_total: str = "ceiling_total", ceiling_clinical: str = "ceiling_clinical",
                     ceiling_face: str = "ceiling_face") -> dict[str, Formula]:
    """The report's comparisons with the Bayes ceiling (the true linear predictors):

    fusion_gain    = C_fusion - C_clinical
    ceiling_gain   = C_ceiling_total - C_ceiling_clinical
    retention      = fusion_gain / ceiling_gain            (None where ceiling_gain <= 0)
    retention_face = (C_embedding - 0.5) / (C_ceiling_face - 0.5)   (None where C_ceiling_face <= 0.5)
    """
    return {
        "fusion_gain": difference(fusion, clinical),
        "ceiling_gain": difference(ceiling_total, ceiling_clinical),
        "retention": ratio(difference(fusion, clinical), difference(ceiling_total, ceiling_clinical)),
        "retention_face": ratio(above_chance(embedding), above_chance(ceiling_face)),
    }
