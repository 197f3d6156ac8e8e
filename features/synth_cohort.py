"""Semi-synthetic cohort: real clinical data, one rendered portrait per patient whose latent
carries a known prognostic signal.

Each patient's latent is a seeded draw (w = mapping(z) in the default space w) shifted
along a hidden unit direction d by

    strength × (standardised martingale residual of a clinical Cox fit) × (latent spread along d)

The martingale residual (event − expected cumulative hazard) is what the patient's real
outcome says beyond the clinical covariates, so the face carries information the clinical
model lacks. Sign: a positive residual (died earlier than the clinical model expects, i.e.
higher risk) moves the latent towards +d. The spread is the standard deviation of the
unshifted latents' components along d, so strength is in units of the natural variation
there; the unshifted component stays as noise a pixel-to-latent model must see through.

The generator and d come from the caller (the CLI composes embedding/ with this module);
nothing here reads or writes files except `write_synth_cohort`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facesurv.errors import DataError, FacesurvError
from facesurv.types import check_survival_target

COHORT_KIND = "facesurv-synth-cohort"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SynthCohort:
    """Everything a synth cohort writes.

    clinical: the import's rows for the chosen patients (same columns, same values).
    images: (N, R, R, 3) uint8 portraits, row i is clinical row i.
    truth: photo_id, patient_id, latent (D float32: the shifted latent in `space`),
        z (z_dim float32: the seeded draw; in space z it is the shifted latent), w (w_dim float32:
        the w that was rendered, one w for every layer), along_d, residual, shift.
    direction: (D,) float32 unit vector d in `space`.
    oracle: patient_id, photo_id, fold, along_d, residual, clinical_risk, oracle_risk
        (risks are out-of-fold Cox linear predictors: each patient scored by a model that
        did not see it).
    summary: figures (C-indexes, spread, counts).
    """

    clinical: pd.DataFrame
    images: np.ndarray
    truth: pd.DataFrame
    direction: np.ndarray
    oracle: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def select_patients(clinical: pd.DataFrame, patients: int, *, seed: int) -> pd.DataFrame:
    """Seeded subsample of `patients` rows stratified by event (0 = all), in import order."""
    n = len(clinical)
    if patients < 0:
        raise DataError(f"patients must be >= 0 (0 = every patient), got {patients}")
    if patients > n:
        raise DataError(f"asked for {patients} patients but the base dataset has only {n}; "
                        f"pass --patients {n} or fewer (0 = all)")
    if patients in (0, n):
        return clinical.reset_index(drop=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    event = clinical["event"].to_numpy().astype(bool)
    groups = [np.flatnonzero(event), np.flatnonzero(~event)]
    k_events = int(round(patients * len(groups[0]) / n))
    if patients >= 2 and len(groups[0]) and len(groups[1]):  # keep both classes present
        k_events = min(max(1, k_events), patients - 1)
    k_events = min(max(k_events, patients - len(groups[1])), len(groups[0]))
    want = [k_events, patients - k_events]
    chosen = np.concatenate([rng.choice(g, size=k, replace=False) for g, k in zip(groups, want, strict=True)])
    return clinical.iloc[np.sort(chosen)].reset_index(drop=True)


def clinical_design(clinical: pd.DataFrame, base: str) -> np.ndarray:
    """(N, p) float64 design of the clinical covariates: age and numeric covariates
    standardised, categoricals (with sex and cancer_type) one-hot without their first level;
    constant columns are dropped."""
    from features.cohort import covariate_columns

    numeric, categorical = covariate_columns(base)
    cols: list[np.ndarray] = []
    for name in ("age", *numeric):
        x = clinical[name].to_numpy(dtype=float)
        sd = x.std()
        if sd > 0:
            cols.append((x - x.mean()) / sd)
    for name in ("sex", "cancer_type", *categorical):
        x = clinical[name].astype(str).to_numpy()
        for level in sorted(set(x))[1:]:
            cols.append((x == level).astype(float))
    if not cols:
        raise DataError(f"{base}: no non-constant clinical covariate to fit a Cox model on")
    return np.column_stack(cols)


def _cox(alpha: float):
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    return CoxPHSurvivalAnalysis(alpha=alpha, ties="breslow", n_iter=200)


def _surv(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    from sksurv.util import Surv

    return Surv.from_arrays(event=event, time=time)


def martingale_residuals(X: np.ndarray, time: np.ndarray, event: np.ndarray, *, alpha: float) -> np.ndarray:
    """Martingale residuals event_i − Ĥ(t_i | x_i) of a Cox fit (Breslow baseline).

    X (N, p), time (N,) days, event (N,) bool -> (N,) float64, at most 1. Positive: the event
    came earlier than the covariates predict.
    """
    time, event = check_survival_target(time, event, what="synth cohort survival target")
    model = _cox(alpha).fit(X, _surv(time, event))
    base = model.cum_baseline_hazard_
    idx = np.searchsorted(base.x, time, side="right") - 1
    h0 = np.where(idx >= 0, base.y[np.clip(idx, 0, None)], 0.0)
    return event.astype(float) - h0 * np.exp(model.predict(X))


def standardise(x: np.ndarray) -> np.ndarray:
    """(x − mean) / sd; (N,) -> (N,)."""
    sd = float(np.std(x))
    if sd == 0:
        raise DataError("residuals have no spread: the clinical Cox model explains nothing to hide in the faces")
    return (x - np.mean(x)) / sd


def shift_along(latents: np.ndarray, direction: np.ndarray, scores: np.ndarray, *,
                strength: float) -> tuple[np.ndarray, float]:
    """latents (N, D) + strength × scores (N,) × spread × d -> (shifted (N, D) float32, spread).

    d is normalised to unit length; spread = sd of the unshifted latents' components along d.
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    lat = np.asarray(latents, dtype=np.float64)
    spread = float(np.std(lat @ d))
    shifted = lat + (strength * spread * np.asarray(scores, dtype=np.float64))[:, None] * d[None, :]
    return shifted.astype(np.float32), spread


def fold_ids(event: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """(N,) fold index per patient, stratified by event, seeded."""
    from sklearn.model_selection import StratifiedKFold

    out = np.empty(len(event), dtype=int)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(skf.split(np.zeros(len(event)), event.astype(int))):
        out[test] = k
    return out


def out_of_fold_risk(X: np.ndarray, time: np.ndarray, event: np.ndarray, fold: np.ndarray, *,
                     alpha: float) -> np.ndarray:
    """Cox linear predictor for each patient from a model fit on the other folds; (N,)."""
    risk = np.empty(len(time))
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        model = _cox(alpha).fit(X[train], _surv(time[train], event[train]))
        risk[test] = model.predict(X[test])
    return risk


def c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index (scikit-survival); higher risk should mean earlier events."""
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(event.astype(bool), time, risk)[0])


def render_ws(G: Any, ws: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """ws (N, w_dim) -> (N, R, R, 3) uint8, one w for every layer, constant noise."""
    import torch

    device = next(iter(G.parameters())).device
    chunks = []
    with torch.no_grad():
        for start in range(0, len(ws), batch_size):
            w = torch.from_numpy(np.ascontiguousarray(ws[start:start + batch_size])).to(device)
            img = G.synthesis(w.unsqueeze(1).expand(-1, G.num_ws, -1), noise_mode="const")
            img = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            chunks.append(img.cpu().numpy())
    return np.concatenate(chunks, axis=0)


def map_z(G: Any, z: np.ndarray, *, truncation_psi: float, batch_size: int = 256) -> np.ndarray:
    """z (N, z_dim) -> w (N, w_dim) float32 through the mapping network."""
    import torch

    device = next(iter(G.parameters())).device
    out = []
    with torch.no_grad():
        for start in range(0, len(z), batch_size):
            zz = torch.from_numpy(np.ascontiguousarray(z[start:start + batch_size])).to(device)
            out.append(G.mapping(zz, truncation_psi=truncation_psi)[:, 0, :].float().cpu().numpy())
    return np.concatenate(out, axis=0)


def synthesize_cohort(
    clinical: pd.DataFrame,
    *,
    base: str,
    G: Any,
    direction: np.ndarray,
    patients: int,
    strength: float,
    space: str,
    seed: int,
    cox_alpha: float,
    oracle_folds: int,
    truncation_psi: float,
) -> SynthCohort:
    """Build the semi-synthetic cohort from an imported clinical table.

    Args:
        clinical: `features.cohort.import_cohort(base, ...)` output (all patients).
        G: a StyleGAN2 generator (mapping, synthesis, num_ws, z_dim, w_dim).
        direction: (D,) hidden direction in `space` (D = w_dim for "w", z_dim for "z").
        patients: how many to keep (stratified by event, seeded); 0 = all.
        strength: s >= 0, the shift in units of the latent spread along d per residual sd.
        space: "w" (shift w = mapping(z), render w) or "z" (shift z, render mapping(z)).
        seed: seeds the subsample, the latent draws and the oracle's folds.

    Returns:
        SynthCohort (see its docstring); deterministic for a seed on a given machine.
    """
    if strength < 0:
        raise DataError(f"strength must be >= 0, got {strength}")
    if space not in ("z", "w"):
        raise DataError(f"space must be 'z' or 'w', got {space!r}")
    dim = G.w_dim if space == "w" else G.z_dim
    d = np.asarray(direction, dtype=np.float32).reshape(-1)
    if d.shape != (dim,) or not np.isfinite(d).all() or np.linalg.norm(d) == 0:
        raise DataError(f"direction must be a finite non-zero vector of length {dim} for space {space}")
    d = (d / np.linalg.norm(d)).astype(np.float32)

    chosen = select_patients(clinical, patients, seed=seed)
    n = len(chosen)
    time, event = check_survival_target(chosen["time_days"].to_numpy(), chosen["event"].to_numpy(),
                                        what=f"{base} survival target")
    if event.sum() < 2 or (~event).sum() < 1:
        raise DataError(f"{n} patients with {int(event.sum())} events are too few for a Cox fit; "
                        "pass more --patients")
    X = clinical_design(chosen, base)
    residual = standardise(martingale_residuals(X, time, event, alpha=cox_alpha))

    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    z = rng.standard_normal((n, G.z_dim)).astype(np.float32)
    if space == "w":
        base_latent = map_z(G, z, truncation_psi=truncation_psi)
        latent, spread = shift_along(base_latent, d, residual, strength=strength)
        w = latent
        z_out = z
    else:
        latent, spread = shift_along(z, d, residual, strength=strength)
        w = map_z(G, latent, truncation_psi=truncation_psi)
        z_out = latent
    images = render_ws(G, w)
    along_d = latent.astype(np.float64) @ d.astype(np.float64)
    shift = (strength * spread) * residual

    fold = fold_ids(event, folds=oracle_folds, seed=seed)
    clinical_risk = out_of_fold_risk(X, time, event, fold, alpha=cox_alpha)
    oracle_risk = out_of_fold_risk(np.column_stack([X, (along_d - along_d.mean()) / along_d.std()]),
                                   time, event, fold, alpha=cox_alpha)
    ids = chosen["photo_id"].astype(str).tolist()
    pids = chosen["patient_id"].astype(str).tolist()
    truth = pd.DataFrame({
        "photo_id": ids,
        "patient_id": pids,
        "latent": list(latent),
        "z": list(z_out),
        "w": list(w.astype(np.float32)),
        "along_d": along_d,
        "residual": residual,
        "shift": shift,
    })
    oracle = pd.DataFrame({
        "patient_id": pids,
        "photo_id": ids,
        "fold": fold,
        "along_d": along_d,
        "residual": residual,
        "clinical_risk": clinical_risk,
        "oracle_risk": oracle_risk,
    })
    per_fold = [(c_index(time[fold == k], event[fold == k], clinical_risk[fold == k]),
                 c_index(time[fold == k], event[fold == k], oracle_risk[fold == k]))
                for k in range(oracle_folds)]
    summary = {
        "patients": n,
        "events": int(event.sum()),
        "space": space,
        "strength": strength,
        "spread_along_d": spread,
        "sign_convention": "positive residual (event earlier than the clinical Cox model expects) -> +d",
        "oracle_folds": oracle_folds,
        "c_index": {
            # pooled out-of-fold predictions, every patient held out once
            "clinical_cox": round(c_index(time, event, clinical_risk), 4),
            "oracle_cox": round(c_index(time, event, oracle_risk), 4),
            # the true component along d alone as the risk score (no model)
            "latent_along_d": round(c_index(time, event, along_d), 4),
            "clinical_cox_fold_mean": round(float(np.mean([a for a, _ in per_fold])), 4),
            "oracle_cox_fold_mean": round(float(np.mean([b for _, b in per_fold])), 4),
        },
    }
    return SynthCohort(clinical=chosen, images=images, truth=truth, direction=d, oracle=oracle, summary=summary)


def _latents_table(truth: pd.DataFrame, space: str):
    import pyarrow as pa

    def vec(col: str) -> pa.Array:
        arr = np.stack(truth[col].to_list()).astype(np.float32)
        return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), pa.float32()), arr.shape[1])

    return pa.table({
        "photo_id": pa.array(truth["photo_id"].tolist(), pa.string()),
        "patient_id": pa.array(truth["patient_id"].tolist(), pa.string()),
        "latent": vec("latent"),
        "z": vec("z"),
        "w": vec("w"),
        "space": pa.array([space] * len(truth), pa.string()),
        "along_d": pa.array(truth["along_d"].to_numpy(), pa.float64()),
        "residual": pa.array(truth["residual"].to_numpy(), pa.float64()),
        "shift": pa.array(truth["shift"].to_numpy(), pa.float64()),
    })


def _is_synth_dir(path: Path) -> bool:
    try:
        return json.loads((path / "cohort.json").read_text(encoding="utf-8")).get("kind") == COHORT_KIND
    except (OSError, ValueError, AttributeError):
        return False


def check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a directory that is neither empty nor an earlier synth cohort."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FacesurvError(f"{out_dir}: exists and is not a directory; choose another --out")
        if any(out_dir.iterdir()) and not _is_synth_dir(out_dir):
            raise FacesurvError(f"{out_dir}: not empty and not a synth cohort; choose an empty or new --out "
                                "(an earlier synth cohort there would be replaced)")


def generator_statement(generator: dict[str, Any]) -> str:
    if generator.get("is_random_init"):
        return ("STAND-IN GENERATOR: these portraits come from a randomly initialised StyleGAN2, not "
                "FFHQ-trained weights; they do not look like faces. "
                + str(generator.get("description", "")))
    return f"Generator: {generator.get('description') or generator.get('source')}"


def write_synth_cohort(cohort: SynthCohort, out_dir: Path, *, base: str, seed: int,
                       generator: dict[str, Any]) -> Path:
    """Write DIR/photos/<photo_id>.png, DIR/clinical.csv, DIR/cohort.json and DIR/truth/
    (latents.parquet, direction.npy, oracle.csv, summary.json, README.md), atomically:
    everything goes into a temporary sibling directory renamed to DIR at the end.

    `generator` holds the GeneratorInfo fields (source, sha256, is_random_init, config,
    description). Returns DIR.
    """
    import pyarrow.parquet as pq
    from PIL import Image, PngImagePlugin

    from facesurv.atomic import atomic_dir

    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    stand_in = bool(generator.get("is_random_init"))
    statement = generator_statement(generator)
    with atomic_dir(out_dir) as tmp:
        photos = tmp / "photos"
        photos.mkdir()
        meta = PngImagePlugin.PngInfo()
        meta.add_text("Software", "facesurv cohort synth")
        meta.add_text("Comment", statement)
        meta.add_text("facesurv:generator_sha256", str(generator.get("sha256", "")))
        for photo_id, img in zip(cohort.truth["photo_id"], cohort.images, strict=True):
            Image.fromarray(img, mode="RGB").save(photos / f"{photo_id}.png", format="PNG", pnginfo=meta)
        cohort.clinical.to_csv(tmp / "clinical.csv", index=False)

        info = {
            "kind": COHORT_KIND,
            "format_version": FORMAT_VERSION,
            "base": base,
            "seed": seed,
            "patients": int(len(cohort.clinical)),
            "events": int(cohort.clinical["event"].sum()),
            "resolution": int(cohort.images.shape[1]),
            "generator": generator,
            "generator_is_random_init": stand_in,
            "statement": statement,
            "files": {"photos": "photos/<photo_id>.png", "clinical": "clinical.csv",
                      "truth": "truth/ (never read by the pipeline)"},
        }
        (tmp / "cohort.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")

        truth = tmp / "truth"
        truth.mkdir()
        pq.write_table(_latents_table(cohort.truth, cohort.summary["space"]), truth / "latents.parquet")
        np.save(truth / "direction.npy", cohort.direction.astype(np.float32))
        cohort.oracle.to_csv(truth / "oracle.csv", index=False)
        summary = {**cohort.summary, "generator_is_random_init": stand_in, "statement": statement}
        (truth / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (truth / "README.md").write_text(_truth_readme(cohort.summary, statement), encoding="utf-8")
    return out_dir


def _truth_readme(summary: dict[str, Any], statement: str) -> str:
    c = summary["c_index"]
    return f"""# Ground truth of this semi-synthetic cohort (the pipeline never reads this folder)

{statement}

Each patient's latent in space `{summary['space']}` was shifted along the hidden unit direction d
(direction.npy) by strength × standardised martingale residual × spread along d
(strength {summary['strength']}, spread {summary['spread_along_d']:.6g}). A positive residual (an event
earlier than a clinical Cox model expects: higher risk) moves the latent towards +d.

- latents.parquet: photo_id, patient_id, latent (true latent in space {summary['space']}), z (the seeded
  draw; in space z the shifted latent), w (the rendered w, one for every layer), along_d, residual, shift
- oracle.csv: out-of-fold ({summary['oracle_folds']} folds) Cox risks on clinical covariates alone and on
  clinical + the true component along d
- summary.json: the figures below and the settings

C-index (pooled out-of-fold): clinical Cox {c['clinical_cox']}, oracle Cox {c['oracle_cox']};
the true component along d alone {c['latent_along_d']}.
"""
