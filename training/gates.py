"""Promotion gates: pure checks a challenger must pass before it may replace the champion.

    paired = PairedScores.from_json(...)               # recorded at training (training.record)
    results = run_gates(paired=paired, contracts=sources, policy=GatePolicy.from_params(params))
    all(r.passed for r in results)                     # the decision

Each gate takes arrays over the SAME test patients (the challenger's frozen split, on which the
champion was re-scored when the challenger was trained) and returns a GateResult. A gate never
raises on a valid comparison; bad shapes or options raise DataError (one line).

- delta_c: paired bootstrap of C(challenger) - C(champion): both models on the same resampled
  patients, so their shared noise (which patients were drawn) cancels; passes when the CI's
  lower bound is above `min_delta`. A point estimate that beats the champion is not enough.
- calibration: calibration-in-the-large at a horizon, |mean predicted S(h) - Kaplan-Meier S(h)|
  on the test patients. The challenger's error may exceed the champion's (same patients, same
  KM, so KM noise largely cancels) by at most `calibration_tolerance`, and the mean prediction
  must lie within `calibration_max_error` of the KM's CI (a gross miscalibration the test
  patients can show; with few patients the CI is wide and this is lenient on purpose).
- subgroups: Harrell's C per sex, age band and cancer type (groups with >= `subgroup_min_events`
  events): the challenger's may fall below the champion's by at most `subgroup_tolerance`.
- contracts: every source file of the training data passed its data contract; a table no
  contract checked passes only when `require_contracts` is false.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ground.errors import DataError
from training.resample import percentile_stat, resamples

NO_CHAMPION = "no champion"
PAIRED_SCORES_FORMAT = 1
PAIRED_SCORES_DIR = "promotion"                  # in the served model's training run
PAIRED_SCORES_FILE = "paired_scores.json"
PAIRED_SCORES_TAG = "promotion.paired_scores"    # version tag: run-relative artifact path; its sha256 beside it


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome: name, passed, a one-line detail and the figures behind it (JSON-able)."""

    name: str
    passed: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GatePolicy:
    """The gates' options (params.yaml `registry:`), see the module docstring."""

    bootstrap: int
    level: float
    min_delta: float
    calibration_tolerance: float
    calibration_max_error: float
    subgroup_tolerance: float
    subgroup_min_events: int
    require_contracts: bool
    seed: int

    @classmethod
    def from_params(cls, params: Any) -> GatePolicy:
        r = params.registry
        return cls(bootstrap=r.bootstrap, level=r.level, min_delta=r.min_delta,
                   calibration_tolerance=r.calibration_tolerance, calibration_max_error=r.calibration_max_error,
                   subgroup_tolerance=r.subgroup_tolerance, subgroup_min_events=r.subgroup_min_events,
                   require_contracts=r.require_contracts, seed=params.evaluation.seed)


@dataclass(frozen=True)
class PairedScores:
    """Both models' predictions on the same n test patients (what training records for promotion).

    time, event: (n,); challenger_risk, challenger_survival: (n,) log-risk and predicted S(horizon);
    champion_risk, champion_survival: (n,) or None without a champion; groups: grouping name ->
    (n,) labels (sex, age band, cancer type).
    """

    time: np.ndarray
    event: np.ndarray
    horizon_days: float
    challenger_risk: np.ndarray
    challenger_survival: np.ndarray
    champion_risk: np.ndarray | None = None
    champion_survival: np.ndarray | None = None
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    patient_ids: tuple[str, ...] = ()
    champion_version: str | None = None

    def __post_init__(self) -> None:
        n = len(self.time)
        arrays = {"event": self.event, "challenger_risk": self.challenger_risk,
                  "challenger_survival": self.challenger_survival, "champion_risk": self.champion_risk,
                  "champion_survival": self.champion_survival, **{f"groups[{k}]": v for k, v in self.groups.items()}}
        for name, a in arrays.items():
            if a is not None and len(a) != n:
                raise DataError(f"paired scores: {name} has {len(a)} values for {n} patients; "
                                "record both models on the same test patients")
        if (self.champion_risk is None) != (self.champion_survival is None):
            raise DataError("paired scores: the champion needs both risks and survival, or neither")

    @property
    def has_champion(self) -> bool:
        return self.champion_risk is not None

    def to_json(self) -> str:
        def arr(a: np.ndarray | None) -> list[float] | None:
            return None if a is None else [float(x) for x in a]

        return json.dumps({
            "format": PAIRED_SCORES_FORMAT, "horizon_days": float(self.horizon_days),
            "champion_version": self.champion_version, "patient_id": list(self.patient_ids),
            "time_days": arr(self.time), "event": [int(e) for e in self.event],
            "challenger_risk": arr(self.challenger_risk), "challenger_survival": arr(self.challenger_survival),
            "champion_risk": arr(self.champion_risk), "champion_survival": arr(self.champion_survival),
            "groups": {k: [None if pd.isna(x) else str(x) for x in v] for k, v in self.groups.items()},
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PairedScores:
        try:
            d = json.loads(text)
            if d.get("format") != PAIRED_SCORES_FORMAT:
                raise DataError(f"paired scores: format {d.get('format')!r}, expected {PAIRED_SCORES_FORMAT}; retrain")

            def arr(key: str) -> np.ndarray | None:
                return None if d.get(key) is None else np.asarray(d[key], dtype=np.float64)

            return cls(time=np.asarray(d["time_days"], dtype=np.float64), event=np.asarray(d["event"], dtype=bool),
                       horizon_days=float(d["horizon_days"]), challenger_risk=np.asarray(d["challenger_risk"], float),
                       challenger_survival=np.asarray(d["challenger_survival"], float),
                       champion_risk=arr("champion_risk"), champion_survival=arr("champion_survival"),
                       groups={k: np.asarray(v, dtype=object) for k, v in (d.get("groups") or {}).items()},
                       patient_ids=tuple(d.get("patient_id") or ()), champion_version=d.get("champion_version"))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"paired scores: not a paired-scores record ({type(exc).__name__}: {exc}); retrain") from None


def _check_options(*, bootstrap: int, level: float) -> None:
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) or bootstrap < 10:
        raise DataError(f"gates: bootstrap must be an integer >= 10 (resamples), got {bootstrap!r}; use e.g. 1000")
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise DataError(f"gates: level must be in (0, 1), got {level!r}; use 0.95")


def _harrell(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    from training.crossfit import harrell_c

    return harrell_c(time, event, risk)


def delta_c_index(time: np.ndarray, event: np.ndarray, challenger: np.ndarray, champion: np.ndarray, *,
                  bootstrap: int, level: float, seed: int, paired: bool = True) -> dict[str, Any]:
    """C(challenger) - C(champion) with a percentile bootstrap CI.

    Args:
        time, event: (n,) test follow-up and events; challenger, champion: (n,) log-risks.
        paired: True resamples patients once for both models (the gate's rule); False draws each
            model's resamples independently (the naive comparison, kept to show what pairing buys).

    Returns: {"value", "ci": [lo, hi], "resamples"} (training.resample.Stat), plus "challenger" and
        "champion" (the point C-indices).
    """
    _check_options(bootstrap=bootstrap, level=level)
    time, event = np.asarray(time, dtype=np.float64), np.asarray(event, dtype=bool)
    a, b = np.asarray(challenger, dtype=np.float64), np.asarray(champion, dtype=np.float64)
    ca, cb = _harrell(time, event, a), _harrell(time, event, b)
    samples: list[float] = []
    if paired:
        for idx in resamples(event, count=bootstrap, rng=seed):
            d = _harrell(time[idx], event[idx], a[idx]) - _harrell(time[idx], event[idx], b[idx])
            if math.isfinite(d):
                samples.append(d)
    else:
        gen = np.random.default_rng(seed)
        first = [_harrell(time[i], event[i], a[i]) for i in resamples(event, count=bootstrap, rng=gen)]
        second = [_harrell(time[i], event[i], b[i]) for i in resamples(event, count=bootstrap, rng=gen)]
        samples = [x - y for x, y in zip(first, second, strict=False) if math.isfinite(x - y)]
    stat = percentile_stat(ca - cb, samples, bootstrap, level)
    return {**stat, "challenger": ca, "champion": cb}


def delta_c_gate(paired: PairedScores, *, bootstrap: int, level: float, min_delta: float, seed: int) -> GateResult:
    """Pass when the lower bound of the paired CI of C(challenger) - C(champion) exceeds min_delta."""
    if not paired.has_champion:
        return GateResult("delta_c", True, NO_CHAMPION, {"challenger_c_index": _harrell(
            paired.time, paired.event, paired.challenger_risk)})
    assert paired.champion_risk is not None
    s = delta_c_index(paired.time, paired.event, paired.challenger_risk, paired.champion_risk,
                      bootstrap=bootstrap, level=level, seed=seed)
    lo, hi = s["ci"]
    figures = {"challenger_c_index": s["challenger"], "champion_c_index": s["champion"], "delta": s["value"],
               "ci_lo": lo, "ci_hi": hi, "level": level, "resamples": s["resamples"], "min_delta": min_delta}
    if lo is None:
        return GateResult("delta_c", False, f"delta C {s['value']} has no CI ({s['resamples']} usable resamples of "
                          f"{bootstrap}): too few test events to compare", figures)
    passed = lo > min_delta
    text = (f"delta C {s['value']:+.4f} ({s['challenger']:.4f} vs {s['champion']:.4f}), paired {level:.0%} CI "
            f"[{lo:+.4f}, {hi:+.4f}]: lower bound {'above' if passed else 'not above'} {min_delta:g}")
    return GateResult("delta_c", passed, text, figures)


def _km_at(time: np.ndarray, event: np.ndarray, horizon: float, level: float) -> tuple[float, float, float]:
    """Kaplan-Meier S(horizon) and its log-log CI."""
    from sksurv.nonparametric import kaplan_meier_estimator

    x, s, ci = kaplan_meier_estimator(event, time, conf_type="log-log", conf_level=level)
    j = np.searchsorted(x, horizon, side="right") - 1
    if j < 0:
        return 1.0, 1.0, 1.0
    return float(s[j]), float(ci[0][j]), float(ci[1][j])


def calibration_gate(paired: PairedScores, *, tolerance: float, max_error: float, level: float) -> GateResult:
    """Calibration-in-the-large at paired.horizon_days (module docstring): passes when the challenger's
    mean predicted survival lies within max_error of the KM CI, and its error exceeds the champion's
    by at most `tolerance`."""
    h = paired.horizon_days
    if not (paired.time.min() <= h < paired.time.max()) or not paired.event.any():
        return GateResult("calibration", False, f"the test follow-up does not reach the horizon {h:g} days: "
                          "calibration cannot be checked", {"horizon_days": h})
    km, lo, hi = _km_at(paired.time, paired.event, h, level)
    pred = float(np.mean(paired.challenger_survival))
    err = abs(pred - km)
    outside = max(lo - pred, pred - hi, 0.0)  # distance from the KM CI
    figures: dict[str, Any] = {"horizon_days": h, "km": km, "km_lo": lo, "km_hi": hi, "challenger_mean": pred,
                               "challenger_error": err, "challenger_outside_ci": outside, "max_error": max_error,
                               "tolerance": tolerance}
    absolute_ok = outside <= max_error
    text = (f"at {h:g} d mean predicted S {pred:.3f} vs KM {km:.3f} [{lo:.3f}, {hi:.3f}] (error {err:.3f}"
            + (f", {outside:.3f} outside the KM CI > {max_error:g})" if not absolute_ok else ")"))
    if not paired.has_champion:
        return GateResult("calibration", absolute_ok, f"{NO_CHAMPION}; {text}", figures)
    assert paired.champion_survival is not None
    c_pred = float(np.mean(paired.champion_survival))
    c_err = abs(c_pred - km)
    figures.update(champion_mean=c_pred, champion_error=c_err)
    relative_ok = err <= c_err + tolerance
    text += (f"; champion error {c_err:.3f}: challenger "
             f"{'within' if relative_ok else 'worse than'} it + {tolerance:g}")
    return GateResult("calibration", absolute_ok and relative_ok, text, figures)


def subgroup_gate(paired: PairedScores, *, tolerance: float, min_events: int) -> GateResult:
    """Every subgroup with >= min_events events: C(challenger) >= C(champion) - tolerance."""
    from training.subgroups import subgroup_c_index_table

    if not paired.has_champion:
        return GateResult("subgroups", True, NO_CHAMPION, {})
    if not paired.groups:
        return GateResult("subgroups", True, "no subgroup columns in the test patients", {})
    assert paired.champion_risk is not None
    rows = subgroup_c_index_table(paired.time, paired.event.astype(int),
                                  {"challenger": paired.challenger_risk, "champion": paired.champion_risk},
                                  paired.groups, min_events=min_events, bootstrap=0)
    checked: list[dict[str, Any]] = []
    skipped = 0
    by_group: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        by_group.setdefault((r["grouping"], r["group"]), {"events": r["events"]})[r["model"]] = (
            None if r["c_index"] is None else r["c_index"]["value"])
    for (grouping, group), v in by_group.items():
        if v.get("challenger") is None or v.get("champion") is None:
            skipped += 1
            continue
        checked.append({"grouping": grouping, "group": group, "events": v["events"], "challenger": v["challenger"],
                        "champion": v["champion"], "passed": v["challenger"] >= v["champion"] - tolerance})
    failing = [c for c in checked if not c["passed"]]
    figures = {"groups": checked, "skipped": skipped, "tolerance": tolerance, "min_events": min_events}
    if failing:
        worst = min(failing, key=lambda c: c["challenger"] - c["champion"])
        return GateResult("subgroups", False, f"{len(failing)} of {len(checked)} subgroups fall more than {tolerance:g} "
                          f"below the champion (worst {worst['grouping']}={worst['group']}: {worst['challenger']:.3f} vs "
                          f"{worst['champion']:.3f})", figures)
    return GateResult("subgroups", True, f"{len(checked)} subgroups within {tolerance:g} of the champion "
                      f"({skipped} with fewer than {min_events} events not compared)", figures)


def contracts_gate(sources: Sequence[Mapping[str, Any]] | None, *, require: bool) -> GateResult:
    """sources: one dict per source file of the training data ({"name", "sha256", "passed", ...}) as
    recorded at training; None: the data came from a table no contract checked."""
    if sources is None:
        return GateResult("contracts", not require, "the training table was not checked by the data contracts "
                          f"(trained outside the flows){'' if require else '; registry.require_contracts is false'}",
                          {"sources": None})
    if not sources:
        return GateResult("contracts", False, "no source file recorded for the training data", {"sources": []})
    failed = [dict(s) for s in sources if not s.get("passed")]
    figures = {"sources": [dict(s) for s in sources]}
    if failed:
        names = ", ".join(str(s.get("name")) for s in failed[:3])
        return GateResult("contracts", False, f"{len(failed)} of {len(sources)} source file(s) did not pass their "
                          f"contract ({names})", figures)
    return GateResult("contracts", True, f"all {len(sources)} source file(s) passed their contracts", figures)


def run_gates(*, paired: PairedScores, contracts: Sequence[Mapping[str, Any]] | None,
              policy: GatePolicy) -> list[GateResult]:
    """Every gate, in a fixed order (delta_c, calibration, subgroups, contracts)."""
    p = policy
    return [delta_c_gate(paired, bootstrap=p.bootstrap, level=p.level, min_delta=p.min_delta, seed=p.seed),
            calibration_gate(paired, tolerance=p.calibration_tolerance, max_error=p.calibration_max_error,
                             level=p.level),
            subgroup_gate(paired, tolerance=p.subgroup_tolerance, min_events=p.subgroup_min_events),
            contracts_gate(contracts, require=p.require_contracts)]


def calibration_horizon(horizons: Sequence[float], *, test_time: np.ndarray, train_time: np.ndarray) -> float:
    """The horizon training.metrics.evaluate calibrates at: the middle one the follow-ups support."""
    tau = float(np.max(train_time))
    valid = [float(h) for h in horizons if np.min(test_time) <= h < min(np.max(test_time), tau)]
    return valid[len(valid) // 2] if valid else float(np.median(test_time))
