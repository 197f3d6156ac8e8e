"""The attributes stage's report sections: rows and lines from its metrics (no computation here)."""

from __future__ import annotations

from typing import Any

from demo.report import stat_text
from training.subgroups import subgroup_text

SUBGROUP_MODELS = {"coxnet_latent": "embedding CoxPH", "coxph_clinical": "clinical CoxPH", "fusion": "fusion"}


def subgroup_section(rows: list[dict[str, Any]], min_events: int) -> dict[str, Any]:
    table = [[r["grouping"], str(r["group"]), SUBGROUP_MODELS.get(r["model"], r["model"]), str(r["n"]),
              str(r["events"]), subgroup_text(r)] for r in rows]
    return {"title": "Subgroups (the paper's Fig. 3): cross-fitted C-index per group (95% bootstrap CIs)",
            "header": ["grouping", "group", "model", "patients", "events", "C-index"], "rows": table,
            "lines": [f"A group with fewer than {min_events} events gets no C-index (attributes.min_subgroup_events)."]}


def fairness_section(fairness: dict[str, Any], alignment: dict[str, Any] | None) -> dict[str, Any]:
    by_group = {str(r["group"]): r for r in fairness.get("rows", [])}
    aligned = (alignment or {}).get("race_group", {})
    table = []
    for g in sorted(set(by_group) | set(aligned)):
        a, r = aligned.get(g, {}), by_group.get(g)
        rate = a.get("rate")
        table.append([g, str(a.get("photos", "—")), str(a.get("quarantined", "—")),
                      "n/a" if rate is None else f"{1 - rate:.1%}",
                      str(r["n"]) if r else "0", str(r["events"]) if r else "0", subgroup_text(r) if r else "no patients"])
    return {"title": "Fairness by UTKFace race group (an audit only: race group is never a model input)",
            "header": ["race group", "photos", "quarantined", "quarantine rate", "patients embedded", "events",
                       "embedding CoxPH C-index"], "rows": table,
            "lines": ["Face detectors are known to fail unequally across skin tones: the quarantine rate is the share "
                      "of each group's photos the aligner could not align (their patients have no latent)."]}


def attribute_section(m: dict[str, Any]) -> dict[str, Any]:
    h, age, est = m["health_attribute"], m["age_attribute"], m["age_estimator"]
    loop = h["edit_loop"]
    lines = [
        f"Health edit loop ({loop['patients']} held-out patients, β = {', '.join(f'{b:+g}' for b in loop['betas'])} "
        f"spreads): Spearman's ρ of the re-scored risk with β {stat_text(loop['rho'])}; share rising at every step "
        f"{stat_text(loop.get('monotone'), 2)}; share of the intended risk change that survives render and "
        f"re-projection {_num_text(loop.get('share_of_intended_change'))}.",
    ]
    if "cosine_with_true_direction" in h:
        lines.append(f"Cosine of the health direction with the planted (true) face direction: "
                     f"{stat_text(h['cosine_with_true_direction'])} (refits on {h['cosine_bootstrap']} resamples).")
    lines.append(f"Cosine of the health direction with the age direction (learned from "
                 f"{h['cosine_with_age_direction']['age_learned_from']}): "
                 f"{stat_text(h['cosine_with_age_direction'])}.")
    r2, sh = age.get("r2") or {}, age.get("shuffled") or {}
    lines.append(f"Age direction (ridge, learned from {age['learned_from']}): held-out R² {stat_text(r2)} against "
                 f"shuffled ages {_interval_text(sh)} (permutation p = {_num_text(sh.get('p_value'))}).")
    if est.get("available"):
        mae = est.get("mae_on_cohort_photos")
        if mae:
            lines.append(f"Independent age estimator ({est['model']}): MAE {stat_text(mae, 1)} years on {mae['n']} of the "
                         "cohort's aligned photos against their age labels.")
        renders = est.get("renders_along_age_direction") or {}
        lines.append(f"Its estimates of renders along the age direction: Spearman's ρ {stat_text(renders['rho'])}."
                     if "rho" in renders else f"Renders along the age direction: {renders.get('why')}.")
    else:
        lines.append(f"Independent age estimator: not available ({est.get('why')}).")
    return {"title": "Health and age attributes, measured", "header": [], "rows": [], "lines": lines}


def _num_text(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else f"{float(x):.{digits}f}"


def _interval_text(sh: dict[str, Any]) -> str:
    if sh.get("mean") is None:
        return "n/a"
    lo, hi = (sh.get("interval") or [None, None])[:2]
    return f"{sh['mean']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{sh['mean']:.3f}"
