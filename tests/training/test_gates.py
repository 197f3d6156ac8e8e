"""Promotion gates (training/gates.py): each gate pure, on constructed test patients."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ground.errors import DataError
from training.gates import (
    GatePolicy,
    PairedScores,
    calibration_gate,
    contracts_gate,
    delta_c_gate,
    delta_c_index,
    run_gates,
    subgroup_gate,
)

POLICY = GatePolicy(bootstrap=300, level=0.95, min_delta=0.0, calibration_tolerance=0.03, calibration_max_error=0.05,
                    subgroup_tolerance=0.05, subgroup_min_events=10, require_contracts=True, seed=0)
PASSED = [{"kind": "clinical", "name": "a1", "sha256": "0" * 64, "rows": 10, "failing": 0, "passed": True}]


def cohort(n: int = 400, seed: int = 0):
    """Exponential survival with hazard exp(lp)/500 per day, uniform censoring; S(h) of the true model."""
    rng = np.random.default_rng(seed)
    lp = rng.normal(size=n)
    t = rng.exponential(500.0 * np.exp(-lp))
    c = rng.uniform(100, 1500, n)
    time, event = np.maximum(np.minimum(t, c), 1.0), t <= c
    surv = lambda h, r=lp: np.exp(-h / 500.0 * np.exp(r))  # noqa: E731 - the true survival at h
    return rng, lp, time, event, surv


def paired(time, event, challenger, champion, *, surv_chal, surv_champ, groups=None, h=365.0) -> PairedScores:
    return PairedScores(time=time, event=event, horizon_days=h, challenger_risk=challenger,
                        challenger_survival=surv_chal, champion_risk=champion,
                        champion_survival=surv_champ, groups=groups or {})


def test_delta_c_passes_for_a_clearly_better_challenger_and_fails_otherwise():
    rng, lp, time, event, surv = cohort()
    weak = lp + rng.normal(scale=3.0, size=len(lp))
    good = delta_c_gate(paired(time, event, lp, weak, surv_chal=surv(365), surv_champ=surv(365)),
                        bootstrap=100, level=0.95, min_delta=0.0, seed=0)
    assert good.passed and good.figures["ci_lo"] > 0 and "lower bound above 0" in good.detail
    worse = delta_c_gate(paired(time, event, weak, lp, surv_chal=surv(365), surv_champ=surv(365)),
                         bootstrap=100, level=0.95, min_delta=0.0, seed=0)
    assert not worse.passed and worse.figures["delta"] < 0
    # the same challenger against a margin it cannot clear
    assert not delta_c_gate(paired(time, event, lp, weak, surv_chal=surv(365), surv_champ=surv(365)),
                            bootstrap=100, level=0.95, min_delta=0.5, seed=0).passed


def test_without_a_champion_every_comparison_passes_as_no_champion():
    _, lp, time, event, surv = cohort()
    p = PairedScores(time=time, event=event, horizon_days=365.0, challenger_risk=lp, challenger_survival=surv(365),
                     groups={"sex": np.where(lp > 0, "f", "m")})
    results = run_gates(paired=p, contracts=PASSED, policy=POLICY)
    assert [r.name for r in results] == ["delta_c", "calibration", "subgroups", "contracts"]
    assert all(r.passed for r in results)
    assert results[0].detail == "no champion" and results[2].detail == "no champion"
    assert results[1].detail.startswith("no champion;")  # calibration still checks the absolute bound


def test_paired_bootstrap_ci_is_narrower_than_unpaired_on_correlated_risks():
    rng, lp, time, event, _ = cohort()
    champion = lp + rng.normal(scale=1.0, size=len(lp))
    challenger = champion + rng.normal(scale=0.2, size=len(lp))  # nearly the same model
    kw = dict(bootstrap=300, level=0.95, seed=1)
    p = delta_c_index(time, event, challenger, champion, paired=True, **kw)
    u = delta_c_index(time, event, challenger, champion, paired=False, **kw)
    assert p["value"] == u["value"]
    width = lambda s: s["ci"][1] - s["ci"][0]  # noqa: E731
    assert width(p) < 0.5 * width(u)


def test_a_better_point_estimate_without_a_paired_ci_above_zero_is_not_promoted():
    rng, lp, time, event, surv = cohort(n=150, seed=3)
    champion = lp + rng.normal(scale=1.5, size=len(lp))
    challenger = champion + rng.normal(scale=0.3, size=len(lp))
    # pick the first small perturbation whose point estimate beats the champion
    for seed in range(50):
        challenger = champion + np.random.default_rng(seed).normal(scale=0.3, size=len(lp))
        if delta_c_index(time, event, challenger, champion, bootstrap=10, level=0.95, seed=0)["value"] > 0:
            break
    p = paired(time, event, challenger, champion, surv_chal=surv(365), surv_champ=surv(365))
    results = run_gates(paired=p, contracts=PASSED, policy=POLICY)
    delta = results[0]
    assert delta.figures["delta"] > 0 and delta.figures["ci_lo"] <= 0
    assert not delta.passed and not all(r.passed for r in results)  # the decision: kept


def test_calibration_gate_relative_and_absolute():
    _, lp, time, event, surv = cohort()
    s = surv(365.0)
    ok = calibration_gate(paired(time, event, lp, lp, surv_chal=s, surv_champ=s), tolerance=0.03, max_error=0.05,
                          level=0.95)
    assert ok.passed and abs(ok.figures["challenger_error"] - ok.figures["champion_error"]) < 1e-12
    # too pessimistic by 0.15 everywhere: well outside the KM CI, and worse than the champion
    off = np.clip(s - 0.15, 0, 1)
    bad = calibration_gate(paired(time, event, lp, lp, surv_chal=off, surv_champ=s), tolerance=0.03, max_error=0.05,
                           level=0.95)
    assert not bad.passed and "worse than" in bad.detail and "outside the KM CI" in bad.detail
    # no absolute bound to speak of: the relative rule alone still fails it
    assert not calibration_gate(paired(time, event, lp, lp, surv_chal=off, surv_champ=s), tolerance=0.03,
                                max_error=1.0, level=0.95).passed
    # and a champion as far off lets it through the relative rule
    assert calibration_gate(paired(time, event, lp, lp, surv_chal=off, surv_champ=off), tolerance=0.03,
                            max_error=1.0, level=0.95).passed
    # a horizon past the follow-up cannot be checked: the gate fails, saying so
    late = calibration_gate(paired(time, event, lp, lp, surv_chal=s, surv_champ=s, h=1e6), tolerance=0.03,
                            max_error=0.05, level=0.95)
    assert not late.passed and "does not reach the horizon" in late.detail


def test_subgroup_gate_fails_when_one_group_drops():
    rng, lp, time, event, surv = cohort(n=600)
    sex = np.where(rng.random(len(lp)) < 0.5, "female", "male")
    age = rng.uniform(30, 90, len(lp))
    from training.subgroups import age_bands

    groups = {"sex": sex, "age": np.asarray(age_bands(age).astype(object))}
    same = subgroup_gate(paired(time, event, lp, lp, surv_chal=surv(365), surv_champ=surv(365), groups=groups),
                         tolerance=0.05, min_events=10)
    assert same.passed and len(same.figures["groups"]) >= 4
    broken = np.where(sex == "male", rng.normal(size=len(lp)), lp)  # random within men only
    drop = subgroup_gate(paired(time, event, broken, lp, surv_chal=surv(365), surv_champ=surv(365), groups=groups),
                         tolerance=0.05, min_events=10)
    assert not drop.passed and "sex=male" in drop.detail
    # groups below min_events are not compared
    few = subgroup_gate(paired(time, event, broken, lp, surv_chal=surv(365), surv_champ=surv(365), groups=groups),
                        tolerance=0.05, min_events=10_000)
    assert few.passed and few.figures["groups"] == [] and few.figures["skipped"] >= 4


def test_contracts_gate():
    assert contracts_gate(PASSED, require=True).passed
    failed = [*PASSED, {"name": "b2", "passed": False}]
    res = contracts_gate(failed, require=True)
    assert not res.passed and "1 of 2" in res.detail and "b2" in res.detail
    assert not contracts_gate(None, require=True).passed
    assert contracts_gate(None, require=False).passed
    assert not contracts_gate([], require=True).passed


def test_paired_scores_round_trip_and_bad_shapes():
    _, lp, time, event, surv = cohort(n=50)
    p = paired(time, event, lp, lp * 0.5, surv_chal=surv(365), surv_champ=surv(365),
               groups={"sex": np.array(["f", None] * 25, dtype=object)})
    back = PairedScores.from_json(p.to_json())
    np.testing.assert_allclose(back.champion_risk, p.champion_risk)
    assert list(back.groups["sex"][:2]) == ["f", None] and back.horizon_days == 365.0
    with pytest.raises(DataError, match="challenger_risk has 49 values for 50 patients"):
        dataclasses.replace(p, challenger_risk=lp[:49])
    with pytest.raises(DataError, match="the champion needs both risks and survival"):
        dataclasses.replace(p, champion_survival=None)
    with pytest.raises(DataError, match="not a paired-scores record"):
        PairedScores.from_json('{"format": 1}')
    with pytest.raises(DataError, match="bootstrap must be an integer >= 10"):
        delta_c_index(time, event, lp, lp, bootstrap=3, level=0.95, seed=0)
    with pytest.raises(DataError, match=r"level must be in \(0, 1\)"):
        delta_c_index(time, event, lp, lp, bootstrap=100, level=1.5, seed=0)


def test_gate_params_are_validated(params):
    from ground.config import with_overrides
    from ground.errors import ConfigError

    assert GatePolicy.from_params(params).bootstrap == params.registry.bootstrap
    with pytest.raises(ConfigError, match=r"registry.level must be in \(0, 1\)"):
        with_overrides(params, registry={"level": 1.2})
    with pytest.raises(ConfigError, match="registry.bootstrap must be >= 10"):
        with_overrides(params, registry={"bootstrap": 5})
    with pytest.raises(ConfigError, match=r"registry.subgroup_tolerance must be in \[0, 1\]"):
        with_overrides(params, registry={"subgroup_tolerance": -0.1})
