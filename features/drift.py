"""Has tonight's batch drifted from the training reference? Clinical covariates and face latents.

Pure functions over in-memory tables; the nightly flow loads the reference and the batch, calls
them and records the verdict. Drift marks the run, it never fails it: a model scoring patients
unlike those it was trained on should be looked at, not stopped.

    clin = clinical_drift(ref_df, new_df, numeric=["age", "bmi"], categorical=["sex", "cancer_type"])
    lat = latent_drift(ref_latents, new_latents, permutations=200, seed=0)     # (N, 512), (M, 512)
    drift_verdict(clin, lat, max_latent_shift_sd=0.5, mmd_alpha=0.01)
    # {"drift": True, "reasons": ["latent mean moved 0.84 reference SDs (threshold 0.5)", ...],
    #  "checked": ["clinical", "latent"]}

Clinical: per numeric feature a two-sample Kolmogorov-Smirnov test plus the standardized mean
difference; per categorical feature a chi-square test of the level counts plus the total
variation distance. Holm-Bonferroni over the tested features keeps the chance of any false alarm
at `alpha` however many covariates are watched.

Latent: how far the mean moved, in reference SDs along the direction it moved (a number a
reviewer can read), and a kernel two-sample test (MMD² with an RBF kernel and a permutation
p-value) that also sees changes in spread or shape that leave the mean in place.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ground.errors import DataError

_MIN_VALUES = 2  # per side: fewer leave the reference SD (SMD) or any test undefined


# ---------------------------------------------------------------------------------------------
# Multiple testing


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """(m,) p-values -> (m,) Holm-Bonferroni adjusted p-values, in the input order.

    Sorted ascending, the i-th (0-based) adjusted value is max_{j <= i} min(1, (m - j) p_(j));
    rejecting where adjusted <= alpha is Holm's step-down procedure at family-wise error alpha.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or not np.isfinite(p).all() or ((p < 0) | (p > 1)).any():
        raise DataError(f"holm_adjust: p-values must be a 1-D list of numbers in [0, 1], got {list(p_values)!r}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)  # step-down: never below an earlier, smaller p's
    return [float(a) for a in adjusted]


# ---------------------------------------------------------------------------------------------
# Clinical covariates


def _names(value: Any, what: str) -> list[str]:
    # A bare string is itself a Sequence[str]: "age" would silently mean columns a, g, e.
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise DataError(f"clinical_drift: {what} must be a list of column names, got {value!r}; "
                        f"e.g. {what}=[\"age\"]")
    return list(value)


def _label(v: Any) -> str:
    # A column of whole numbers turns float once a batch holds a missing value (pandas upcasts
    # int64 with NaN), so grade 1 must read "1" on both sides, not "1" against "1.0".
    if isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v).is_integer():
        return str(int(float(v)))
    return str(v)


def _numeric_values(series: pd.Series, feature: str, side: str) -> tuple[np.ndarray, int]:
    """(n,) column -> ((k,) float64 non-missing values, number missing)."""
    missing = series.isna().to_numpy()
    kept = series[~missing]
    values = pd.to_numeric(kept.astype(object) if kept.dtype == bool else kept, errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        raise DataError(f"clinical_drift: numeric feature {feature!r} has non-numeric values in the {side} "
                        f"(first: {kept[bad].iloc[0]!r}); convert the column or list it under categorical")
    arr = values.to_numpy(dtype=np.float64)
    if not np.isfinite(arr).all():
        raise DataError(f"clinical_drift: numeric feature {feature!r} has infinite values in the {side}; "
                        "replace them with a missing value or a real number")
    return arr, int(missing.sum())


def _untested(feature: str, kind: str, test: str, measure: str, counts: dict[str, int],
              missing: dict[str, int]) -> dict[str, Any]:
    short = [f"{s} has {counts[s]}" for s in ("reference", "current") if counts[s] < _MIN_VALUES]
    return {"feature": feature, "kind": kind, "test": test, "statistic": None, "p_value": None,
            "p_adjusted": None, "drifted": False, "effect": None, "effect_measure": measure,
            "n": counts, "missing": missing,
            "note": f"not tested: needs {_MIN_VALUES} non-missing values per side ({', '.join(short)})"}


def _numeric_row(feature: str, ref: pd.Series, cur: pd.Series) -> dict[str, Any]:
    a, miss_a = _numeric_values(ref, feature, "reference")
    b, miss_b = _numeric_values(cur, feature, "current")
    counts, missing = {"reference": len(a), "current": len(b)}, {"reference": miss_a, "current": miss_b}
    if min(len(a), len(b)) < _MIN_VALUES:
        return _untested(feature, "numeric", "ks", "smd", counts, missing)
    ks = stats.ks_2samp(a, b)
    sd = float(np.std(a, ddof=1))
    # SMD against the reference's SD (not a pooled one), so it reads "the batch mean sits this
    # many training-population SDs away"; undefined for a constant reference column.
    smd = float((b.mean() - a.mean()) / sd) if sd > 0 else None
    return {"feature": feature, "kind": "numeric", "test": "ks", "statistic": float(ks.statistic),
            "p_value": float(ks.pvalue), "p_adjusted": None, "drifted": False, "effect": smd,
            "effect_measure": "smd", "n": counts, "missing": missing, "note": None}


def _categorical_row(feature: str, ref: pd.Series, cur: pd.Series) -> dict[str, Any]:
    a = [_label(v) for v in ref[ref.notna()].astype(object)]
    b = [_label(v) for v in cur[cur.notna()].astype(object)]
    counts = {"reference": len(a), "current": len(b)}
    missing = {"reference": len(ref) - len(a), "current": len(cur) - len(b)}
    if min(len(a), len(b)) < _MIN_VALUES:
        return {**_untested(feature, "categorical", "chi2", "tvd", counts, missing), "unseen_levels": {}}
    ca, cb = pd.Series(a).value_counts(), pd.Series(b).value_counts()
    levels = sorted(set(ca.index) | set(cb.index))
    table = np.array([[ca.get(lv, 0) for lv in levels], [cb.get(lv, 0) for lv in levels]], dtype=np.float64)
    if len(levels) > 1:
        # No Yates correction: it applies only to 2x2 tables, and one statistic for every number
        # of levels keeps features comparable.
        chi = stats.chi2_contingency(table, correction=False)
        statistic, p = float(chi.statistic), float(chi.pvalue)
    else:  # one level on both sides: identical distributions, nothing to test
        statistic, p = 0.0, 1.0
    prop = table / table.sum(axis=1, keepdims=True)
    tvd = float(0.5 * np.abs(prop[0] - prop[1]).sum())
    unseen = {lv: int(cb[lv]) for lv in levels if lv not in ca.index}
    return {"feature": feature, "kind": "categorical", "test": "chi2", "statistic": statistic, "p_value": p,
            "p_adjusted": None, "drifted": False, "effect": tvd, "effect_measure": "tvd", "n": counts,
            "missing": missing, "note": None, "unseen_levels": unseen}


def clinical_drift(reference: pd.DataFrame, current: pd.DataFrame, *, numeric: Sequence[str],
                   categorical: Sequence[str], alpha: float = 0.01) -> dict[str, Any]:
    """Per-covariate drift of `current` (M rows) from `reference` (N rows), Holm-adjusted at alpha.

    numeric features: two-sample Kolmogorov-Smirnov (test "ks"; statistic D) and effect = the
    standardized mean difference (current mean - reference mean) / reference SD ("smd", None for
    a constant reference). categorical features: Pearson chi-square on the 2 x L table of level
    counts over the union of levels (test "chi2", no Yates correction) and effect = the total
    variation distance of the level proportions ("tvd", in [0, 1]); `unseen_levels` maps each
    level absent from the reference to its count in the batch. Labels compare as text, whole
    numbers without a decimal (1 and 1.0 are one level).

    Missing values are counted per side (`missing`) and left out of that feature's test (`n`
    counts the values used). A feature with fewer than 2 non-missing values on a side is not
    tested (p-values None, `note` says why) and is listed under "untested"; the others share
    one Holm-Bonferroni family, and a feature has drifted when p_adjusted <= alpha.

    Returns {"features": [{feature, kind, test, statistic, p_value, p_adjusted, drifted, effect,
    effect_measure, n, missing, note[, unseen_levels]}] in the order numeric then categorical,
    "drifted": [names], "untested": [names], "n_reference": N, "n_current": M, "alpha": alpha,
    "correction": "holm"}.
    Raises DataError for a non-frame, fewer than 2 rows, a feature absent from either frame, a
    feature listed twice, non-numeric or infinite values in a numeric feature, or alpha outside (0, 1).
    """
    for side, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"clinical_drift: {side} must be a pandas DataFrame, got {type(frame).__name__}")
        if len(frame) < 2:
            raise DataError(f"clinical_drift: {side} has {len(frame)} rows; drift needs at least 2 per side, "
                            "wait for a larger batch")
    num, cat = _names(numeric, "numeric"), _names(categorical, "categorical")
    every = num + cat
    if not every:
        raise DataError("clinical_drift: no features to check; name columns in numeric and/or categorical")
    twice = sorted({f for f in every if every.count(f) > 1})
    if twice:
        raise DataError(f"clinical_drift: features listed more than once: {', '.join(twice)}; "
                        "list each under numeric or categorical, once")
    for side, frame in (("reference", reference), ("current", current)):
        absent = [f for f in every if f not in frame.columns]
        if absent:
            raise DataError(f"clinical_drift: the {side} frame has no column {', '.join(map(repr, absent))}; "
                            "add it or drop it from the feature lists")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise DataError(f"clinical_drift: alpha must be in (0, 1), got {alpha!r}; e.g. alpha=0.01")

    rows = [_numeric_row(f, reference[f], current[f]) for f in num]
    rows += [_categorical_row(f, reference[f], current[f]) for f in cat]
    tested = [r for r in rows if r["p_value"] is not None]
    for r, adj in zip(tested, holm_adjust([r["p_value"] for r in tested]), strict=True):
        r["p_adjusted"], r["drifted"] = adj, adj <= alpha
    return {"features": rows, "drifted": [r["feature"] for r in rows if r["drifted"]],
            "untested": [r["feature"] for r in rows if r["p_value"] is None],
            "n_reference": len(reference), "n_current": len(current), "alpha": float(alpha),
            "correction": "holm"}


# ---------------------------------------------------------------------------------------------
# Latents


def _latents(x: Any, name: str) -> np.ndarray:
    """numbers -> validated (n, D) float64 array."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"latent_drift: {name} must be an (n, D) array of numbers, got {type(x).__name__}; "
                        "stack the latent column with np.stack") from None
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise DataError(f"latent_drift: {name} must be 2-D (n, D), got shape {arr.shape}; one latent per row")
    if arr.shape[0] < 2:
        raise DataError(f"latent_drift: {name} has {arr.shape[0]} rows; drift needs at least 2 per side, "
                        "wait for a larger batch")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise DataError(f"latent_drift: {name} has {int(bad.sum())} rows with NaN or infinite values "
                        f"(first at row {int(np.flatnonzero(bad)[0])}); drop or re-project those photos")
    return arr


def _count(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise DataError(f"latent_drift: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _mean_shift(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """(N, D), (M, D) -> (debiased, plug-in) mean shift in reference SDs along the moved direction."""
    diff = cur.mean(axis=0) - ref.mean(axis=0)
    norm2 = float(diff @ diff)
    if norm2 == 0.0:
        return 0.0, 0.0
    u = diff / math.sqrt(norm2)
    sd = float(np.std(ref @ u, ddof=1))
    # Even two samples of one distribution have means apart: E||diff||^2 = ||delta||^2 +
    # tr(S_ref)/N + tr(S_cur)/M. In 512-d with a 300-photo batch that noise alone reads ~1.3 SD
    # for isotropic latents, so the plug-in norm would flag every night; subtracting the
    # (unbiased) noise term leaves an estimate of the true shift's squared length.
    noise = float(ref.var(axis=0, ddof=1).sum()) / len(ref) + float(cur.var(axis=0, ddof=1).sum()) / len(cur)
    if sd == 0.0:  # the reference does not vary along the moved direction: any move is unbounded
        return math.inf, math.inf
    return math.sqrt(max(norm2 - noise, 0.0)) / sd, math.sqrt(norm2) / sd


def _mmd2_batch(k0: np.ndarray, in_x: np.ndarray) -> np.ndarray:
    """Unbiased MMD² for P labellings at once.

    k0: (n+m, n+m) kernel matrix with a zero diagonal (the unbiased estimator leaves out
    k(z_i, z_i)). in_x: (n+m, P) 0/1, column p marks which n pooled rows are "reference" in
    labelling p. Returns (P,). One (n+m)^2 x P product replaces P re-indexings of the kernel.
    """
    a = in_x.astype(np.float64)
    n = int(a[:, 0].sum())
    m = a.shape[0] - n
    ka = k0 @ a
    xx = (a * ka).sum(axis=0)                 # sum over i != j both in X
    row = k0.sum(axis=1)
    xy = a.T @ row - xx                       # sum over i in X, j in Y
    yy = float(row.sum()) - 2.0 * (a.T @ row) + xx
    return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (n * m)


def latent_drift(reference: np.ndarray, current: np.ndarray, *, permutations: int = 200, seed: int = 0,
                 max_rows: int = 2000) -> dict[str, Any]:
    """Drift of the batch's latents `current` (M, D) from the reference latents `reference` (N, D).

    mean_shift_sd: ||mean_cur - mean_ref|| / SD of the reference projected on the direction the
        mean moved, i.e. how many reference SDs the mean moved along that direction; the squared
        length has the sampling noise tr(S_ref)/N + tr(S_cur)/M taken off (floored at 0), so two
        samples of one distribution read ~0 rather than ~sqrt(D/M). mean_shift_sd_raw is the
        plug-in value without that correction. Both on all rows.
    mmd2: unbiased MMD² (k(z_i, z_i) left out, so it can be slightly < 0) with the RBF kernel
        k(x, y) = exp(-||x - y||² / (2 bandwidth²)); bandwidth: the median heuristic, the median
        pairwise Euclidean distance over the pooled (subsampled) rows.
    mmd_p_value: (1 + #{permuted MMD² >= observed}) / (1 + permutations) over random relabellings
        of the pooled rows, None when permutations is 0; never below 1 / (1 + permutations).

    The MMD uses at most max_rows rows per side, drawn without replacement by
    np.random.default_rng(seed) (then the permutations from the same stream), so results are
    deterministic for a seed. Cost: O((N + M) D) for the mean shift, O(R² (D + permutations))
    time and a few R x R float64 matrices (8 R² bytes each) for the kernel, R = min(N, max_rows)
    + min(M, max_rows). A 13,503 x 512 reference against 300 new latents with the defaults
    (R = 2,300, 42 MiB a matrix, 200 permutations) took 0.4-0.7 s on 2 CPU cores, 395 MiB peak
    RSS for the whole process; max_rows trades that quadratic cost for the MMD test's power.

    Returns {"mean_shift_sd", "mean_shift_sd_raw", "mmd2", "mmd_p_value", "bandwidth",
    "n_reference": N, "n_current": M, "rows_used": {"reference", "current"}, "permutations", "seed"}.
    Raises DataError for non-numeric input, a shape other than (n, D), different D, fewer than 2
    rows per side, NaN or infinite values, or bad options.
    """
    ref, cur = _latents(reference, "reference"), _latents(current, "current")
    if ref.shape[1] != cur.shape[1]:
        raise DataError(f"latent_drift: reference has D = {ref.shape[1]} but current has D = {cur.shape[1]}; "
                        "compare latents from the same generator space")
    permutations = _count(permutations, "permutations", 0)
    seed = _count(seed, "seed", 0)
    max_rows = _count(max_rows, "max_rows", 2)

    shift, shift_raw = _mean_shift(ref, cur)

    rng = np.random.default_rng(seed)
    x = ref[np.sort(rng.choice(len(ref), max_rows, replace=False))] if len(ref) > max_rows else ref
    y = cur[np.sort(rng.choice(len(cur), max_rows, replace=False))] if len(cur) > max_rows else cur
    z = np.concatenate([x, y])
    n, total = len(x), len(z)
    sq = (z * z).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)  # rounding can dip below 0
    np.fill_diagonal(d2, 0.0)
    dist = np.sqrt(d2[np.triu_indices(total, k=1)])
    bandwidth = float(np.median(dist))
    if bandwidth == 0.0:  # over half the pairs are duplicates: the median of the distinct ones
        positive = dist[dist > 0]
        bandwidth = float(np.median(positive)) if positive.size else 1.0  # all equal: MMD² is 0 anyway
    del dist
    k0 = np.exp(d2 / (-2.0 * bandwidth**2))
    del d2
    np.fill_diagonal(k0, 0.0)

    observed_labels = np.zeros((total, 1), dtype=bool)
    observed_labels[:n] = True
    mmd2 = float(_mmd2_batch(k0, observed_labels)[0])
    p_value = None
    if permutations:
        labels = np.zeros((total, permutations), dtype=bool)
        for p in range(permutations):
            labels[rng.permutation(total)[:n], p] = True
        null = _mmd2_batch(k0, labels)
        # A small tolerance so a relabelling equal to the observed one (up to the order of
        # summation) counts as >=, as the exact test would.
        p_value = float((1 + int((null >= mmd2 - 1e-12 * max(1.0, abs(mmd2))).sum())) / (1 + permutations))
    return {"mean_shift_sd": shift, "mean_shift_sd_raw": shift_raw, "mmd2": mmd2, "mmd_p_value": p_value,
            "bandwidth": bandwidth, "n_reference": len(ref), "n_current": len(cur),
            "rows_used": {"reference": n, "current": total - n}, "permutations": permutations, "seed": seed}


# ---------------------------------------------------------------------------------------------
# Verdict


def _require(result: Any, keys: Sequence[str], name: str, source: str) -> Mapping[str, Any]:
    if not isinstance(result, Mapping) or any(k not in result for k in keys):
        lacking = [k for k in keys if not isinstance(result, Mapping) or k not in result]
        raise DataError(f"drift_verdict: {name} lacks {', '.join(lacking)}; pass {source}'s result or None")
    return result


def drift_verdict(clinical: dict[str, Any] | None, latent: dict[str, Any] | None, *,
                  max_latent_shift_sd: float, mmd_alpha: float) -> dict[str, Any]:
    """One verdict from clinical_drift's and latent_drift's results (either None when not run).

    Drift when a clinical feature drifted (Holm-adjusted), a categorical feature has levels the
    reference never had (a model has no coefficient for them, whatever the test says), a
    feature could not be tested (a column emptied in the batch is itself a change), the latent
    mean moved more than max_latent_shift_sd reference SDs, or the MMD permutation p-value is
    <= mmd_alpha. Returns {"drift": bool, "reasons": [one line each], "checked": [which ran]};
    the caller marks the run, it does not fail it.
    Raises DataError for a threshold out of range, a result missing its keys, or an mmd_alpha
    below the smallest p-value the permutations can give.
    """
    bad_shift = (isinstance(max_latent_shift_sd, bool) or not isinstance(max_latent_shift_sd, numbers.Real)
                 or not math.isfinite(max_latent_shift_sd) or max_latent_shift_sd <= 0)
    if bad_shift:
        raise DataError(f"drift_verdict: max_latent_shift_sd must be a finite number > 0, "
                        f"got {max_latent_shift_sd!r}; e.g. 0.5")
    if isinstance(mmd_alpha, bool) or not isinstance(mmd_alpha, numbers.Real) or not 0 < mmd_alpha < 1:
        raise DataError(f"drift_verdict: mmd_alpha must be in (0, 1), got {mmd_alpha!r}; e.g. 0.01")
    reasons: list[str] = []
    checked: list[str] = []
    if clinical is not None:
        clin = _require(clinical, ("features",), "clinical", "clinical_drift")
        checked.append("clinical")
        for f in clin["features"]:
            name = f["feature"]
            if f.get("drifted"):
                effect = "" if f.get("effect") is None else f", {f['effect_measure']} {f['effect']:.2f}"
                reasons.append(f"clinical: {name} drifted ({f['test'].upper()} p_adj {f['p_adjusted']:.2g}{effect})")
            if f.get("unseen_levels"):
                shown = ", ".join(f"{lv} ({k})" for lv, k in f["unseen_levels"].items())
                reasons.append(f"clinical: {name} has levels unseen in the reference: {shown}")
            if f.get("p_value") is None:
                reasons.append(f"clinical: {name} {f.get('note') or 'not tested'}")
    if latent is not None:
        lat = _require(latent, ("mean_shift_sd", "mmd2", "mmd_p_value", "permutations"), "latent", "latent_drift")
        checked.append("latent")
        if lat["permutations"] and permutations_floor(lat["permutations"]) > mmd_alpha:
            raise DataError(f"drift_verdict: mmd_alpha {mmd_alpha:g} is below the smallest p-value "
                            f"{permutations_floor(lat['permutations']):.3g} that {lat['permutations']} permutations "
                            f"can give; run latent_drift with permutations >= {math.ceil(1 / mmd_alpha) - 1}")
        if lat["mean_shift_sd"] > max_latent_shift_sd:
            reasons.append(f"latent mean moved {lat['mean_shift_sd']:.2f} reference SDs "
                           f"(threshold {max_latent_shift_sd:g})")
        p = lat["mmd_p_value"]
        if p is not None and p <= mmd_alpha:
            reasons.append(f"latent distribution differs (MMD² {lat['mmd2']:.3g}, permutation p {p:.3g} "
                           f"<= {mmd_alpha:g})")
    return {"drift": bool(reasons), "reasons": reasons, "checked": checked}


def permutations_floor(permutations: int) -> float:
    """The smallest permutation p-value `permutations` relabellings can give: 1 / (1 + permutations)."""
    return 1.0 / (1 + permutations)
