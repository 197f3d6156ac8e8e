"""Semi-synthetic cohorts whose outcome is drawn from a known truth: face first, outcome second.

1. Patients: a seeded random subsample of a base dataset's real clinical rows (no outcome
   is looked at).
2. Faces: each patient gets a face carrying a log-hazard contribution LP_face, decided by
   `seed` alone:
   - real faces (`real_faces`): a labelled photo of the patient's sex whose age differs from
     the clinical age by an apparent-age gap g ~ N(0, σ²); LP_face = ln(HR) · g / 10;
   - rendered faces (`rendered_faces`): a latent drawn from the generator's prior, rendered
     with per-image seeded noise; LP_face = s · (the latent's standardised coordinate along a
     unit direction d).
3. Outcomes (`draw_outcomes_for`): a Weibull PH model of the base's real outcome on its
   clinical covariates gives LP_clin and the baseline hazard; each patient's event time is
   drawn from h0(t) · exp(LP_clin + LP_face) and an independent censoring time from the base's
   censoring distribution, calibrated to the base's event rate, with `survival_seed`.
   The drawn (time_days, event) replace the real ones.

The ceiling of any learner on this cohort is the C-index of the true log-hazards (no model):
`ceiling_c_index`. The generator, the direction and the face folder come from the caller
(demo/cohort.py composes them); nothing here reads files except `write_synth_cohort`
and the face labels.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.synth_faces import FaceLabels, assign_faces, face_log_hazard
from features.synth_survival import (
    WeibullPH,
    c_index,
    censoring_sampler,
    draw_outcomes,
    fit_weibull_ph,
)
from ground.errors import DataError, FacesurvError

COHORT_KIND = "facesurv-synth-cohort"
FORMAT_VERSION = 2
KINDS = ("real", "rendered")
DIRECTIONS = ("random", "visible")
PRIOR_SAMPLES = 10_000     # prior latents that fix the coordinate's mean and sd along d in w


@dataclass(frozen=True)
class Faces:
    """One face per patient, decided before any outcome exists.

    table: photo_id, patient_id, lp_face, and per kind
        real: gap (realised g, years), gap_drawn, photo_file, photo_age, photo_sex, race_group
        rendered: coordinate (along d), latent (D float32, in `space`), z, w (rendered w)
    images: (N, R, R, 3) uint8 for rendered faces, None for real ones (their files are copied).
    direction: (D,) unit d for rendered faces, None for real ones.
    summary: how the faces were made.
    """

    kind: str
    table: pd.DataFrame
    images: np.ndarray | None = None
    direction: np.ndarray | None = None
    source_dir: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SynthCohort:
    """Everything a synth cohort writes: the clinical table (real covariates, drawn outcome),
    the faces, the truth per patient (outcome: patient_id, photo_id, lp_clin, lp_face,
    lp_total, time_days, event) and a summary with the ceilings."""

    clinical: pd.DataFrame
    faces: Faces
    outcome: pd.DataFrame
    clinical_model: dict[str, Any]
    summary: dict[str, Any]


# --- patients and the clinical truth --------------------------------------------------------------

def select_patients(clinical: pd.DataFrame, patients: int, *, seed: int) -> pd.DataFrame:
    """Seeded random subsample of `patients` rows (0 = all), in import order. It never looks
    at the outcome, which the cohort redraws anyway."""
    n = len(clinical)
    if patients < 0:
        raise DataError(f"patients must be >= 0 (0 = every patient), got {patients}")
    if patients > n:
        raise DataError(f"asked for {patients} patients but the base dataset has only {n}; "
                        f"pass --patients {n} or fewer (0 = all)")
    if patients in (0, n):
        return clinical.reset_index(drop=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    chosen = np.sort(rng.choice(n, size=patients, replace=False))
    return clinical.iloc[chosen].reset_index(drop=True)


def clinical_design(clinical: pd.DataFrame, base: str, *, reference: pd.DataFrame | None = None) -> np.ndarray:
    """(N, p) float64 design of the clinical covariates: age and numeric covariates
    standardised (by `reference`'s mean and sd, default the table itself), categoricals (with
    sex and cancer_type) one-hot without their first level; columns constant in the
    reference are dropped."""
    from features.cohort import covariate_columns

    ref = clinical if reference is None else reference
    numeric, categorical = covariate_columns(base)
    cols: list[np.ndarray] = []
    for name in ("age", *numeric):
        r = ref[name].to_numpy(dtype=float)
        sd = r.std()
        if sd > 0:
            cols.append((clinical[name].to_numpy(dtype=float) - r.mean()) / sd)
    for name in ("sex", "cancer_type", *categorical):
        x = clinical[name].astype(str).to_numpy()
        for level in sorted(set(ref[name].astype(str)))[1:]:
            cols.append((x == level).astype(float))
    if not cols:
        raise DataError(f"{base}: no non-constant clinical covariate to fit a survival model on")
    return np.column_stack(cols)


def clinical_truth(base_table: pd.DataFrame, base: str, *, alpha: float) -> WeibullPH:
    """Weibull PH fit of the base dataset's REAL outcome on its clinical covariates (all its
    patients): the truth the cohort's clinical log-hazards come from."""
    X = clinical_design(base_table, base)
    return fit_weibull_ph(X, base_table["time_days"].to_numpy(), base_table["event"].to_numpy().astype(bool),
                          alpha=alpha)


# --- faces ---------------------------------------------------------------------------------------

def real_faces(chosen: pd.DataFrame, labels: FaceLabels, *, gap_sd: float, hr_per_decade: float,
               seed: int) -> Faces:
    """A labelled photo per patient (see features.synth_faces); depends on seed, ages and sexes only."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    match = assign_faces(chosen["age"].to_numpy(dtype=float), chosen["sex"].astype(str).to_numpy(), labels,
                         gap_sd=gap_sd, rng=rng)
    lp_face = face_log_hazard(match.gap, hr_per_decade=hr_per_decade)
    table = pd.DataFrame({
        "photo_id": chosen["photo_id"].astype(str).to_numpy(),
        "patient_id": chosen["patient_id"].astype(str).to_numpy(),
        "lp_face": lp_face,
        "gap": match.gap,
        "gap_drawn": match.gap_drawn,
        "photo_file": labels.file[match.index],
        "photo_age": labels.age[match.index],
        "photo_sex": labels.sex[match.index],
        "race_group": labels.group[match.index],
    })
    summary = {"gap_sd": gap_sd, "hr_per_decade": hr_per_decade,
               "gap_realised_mean": round(float(match.gap.mean()), 3),
               "gap_realised_sd": round(float(match.gap.std()), 3),
               "lp_face_sd": round(float(lp_face.std()), 4)}
    return Faces("real", table, source_dir=labels.root, summary=summary)


def random_direction(dim: int, *, seed: int) -> np.ndarray:
    """A seeded uniformly random unit vector (dim,) float32."""
    v = np.random.default_rng(np.random.SeedSequence([seed, 4])).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def rendered_faces(n: int, *, G: Any, direction: np.ndarray, space: str, strength: float, seed: int,
                   truncation_psi: float, photo_ids: list[str], patient_ids: list[str]) -> Faces:
    """Latents drawn from the generator's prior and rendered with seeded per-image noise.

    LP_face = strength · (c − μ) / σ with c = latent · d and μ, σ the prior's mean and sd of c
    (in z, exactly 0 and 1; in w, from PRIOR_SAMPLES seeded draws).
    """
    if strength < 0:
        raise DataError(f"strength must be >= 0, got {strength}")
    if space not in ("z", "w"):
        raise DataError(f"space must be 'z' or 'w', got {space!r}")
    dim = G.w_dim if space == "w" else G.z_dim
    d = np.asarray(direction, dtype=np.float64).reshape(-1)
    if d.shape != (dim,) or not np.isfinite(d).all() or np.linalg.norm(d) == 0:
        raise DataError(f"direction must be a finite non-zero vector of length {dim} for space {space}")
    d = d / np.linalg.norm(d)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    z = rng.standard_normal((n, G.z_dim)).astype(np.float32)
    w = map_z(G, z, truncation_psi=truncation_psi)
    latent = w if space == "w" else z
    coordinate = latent.astype(np.float64) @ d
    if space == "z":
        mu, sigma = 0.0, 1.0
    else:
        prior_z = np.random.default_rng(np.random.SeedSequence([seed, 3])).standard_normal(
            (PRIOR_SAMPLES, G.z_dim)).astype(np.float32)
        prior = map_z(G, prior_z, truncation_psi=truncation_psi).astype(np.float64) @ d
        mu, sigma = float(prior.mean()), float(prior.std())
    lp_face = strength * (coordinate - mu) / sigma
    images = render_ws(G, w, noise_seed=seed)
    table = pd.DataFrame({
        "photo_id": photo_ids, "patient_id": patient_ids, "lp_face": lp_face, "coordinate": coordinate,
        "latent": list(latent.astype(np.float32)), "z": list(z), "w": list(w.astype(np.float32)),
    })
    summary = {"space": space, "strength": strength, "prior_mean_along_d": mu, "prior_sd_along_d": sigma,
               "lp_face_sd": round(float(lp_face.std()), 4)}
    return Faces("rendered", table, images=images, direction=d.astype(np.float32), summary=summary)


def _noise_for(G: Any, index: int, seed: int) -> list[Any]:
    import torch

    gen = torch.Generator(device="cpu").manual_seed(int(np.random.SeedSequence([seed, 6, index]).generate_state(1)[0]))
    return [torch.randn(shape, generator=gen) for shape in G.synthesis.noise_shapes()]


def render_ws(G: Any, ws: np.ndarray, *, noise_seed: int | None = None, batch_size: int = 64) -> np.ndarray:
    """ws (N, w_dim) -> (N, R, R, 3) uint8, one w for every layer.

    With noise_seed, every image gets its own seeded noise inputs (as a photo has its own
    hair and skin detail); without it, the generator's constant noise buffers.
    """
    import torch

    device = next(iter(G.parameters())).device
    chunks = []
    with torch.no_grad():
        for start in range(0, len(ws), batch_size):
            w = torch.from_numpy(np.ascontiguousarray(ws[start:start + batch_size])).to(device)
            noise = None
            if noise_seed is not None:
                per_image = [_noise_for(G, start + i, noise_seed) for i in range(len(w))]
                noise = [torch.stack([p[k] for p in per_image]).to(device) for k in range(len(per_image[0]))]
            img = G.synthesis(w.unsqueeze(1).expand(-1, G.num_ws, -1), noise_mode="const", noise=noise)
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


# --- outcomes and the ceiling ----------------------------------------------------------------------

def draw_outcomes_for(chosen: pd.DataFrame, faces: Faces, *, base: str, base_table: pd.DataFrame,
                      model: WeibullPH, survival_seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Draw every patient's outcome from the truth; returns (clinical with the drawn
    time_days and event, outcome truth table, the draw's settings)."""
    base_mean = float(np.mean(model.linear_predictor(clinical_design(base_table, base))))
    # LP_clin is centred on the base's mean; the centring moves into the baseline hazard
    lp_clin = model.linear_predictor(clinical_design(chosen, base, reference=base_table)) - base_mean
    lp_face = faces.table["lp_face"].to_numpy(dtype=float)
    lp_total = lp_clin + lp_face
    c_times, c_probs = censoring_sampler(base_table["time_days"].to_numpy(),
                                         base_table["event"].to_numpy().astype(bool))
    target = float(base_table["event"].mean())
    rng = np.random.default_rng(np.random.SeedSequence([survival_seed, 7]))
    shifted = WeibullPH(model.beta, model.scale * float(np.exp(base_mean)), model.shape, model.n, model.events)
    time, event, factor = draw_outcomes(shifted, lp_total, censor_times=c_times, censor_probs=c_probs,
                                        target_event_rate=target, rng=rng)
    if event.sum() < 2 or (~event).sum() < 1:
        raise DataError(f"{len(chosen)} patients drew {int(event.sum())} events, too few for any survival model; "
                        "pass more --patients")
    clinical = chosen.copy()
    clinical["time_days"] = time
    clinical["event"] = event.astype(int)
    outcome = pd.DataFrame({"patient_id": clinical["patient_id"].astype(str), "photo_id": clinical["photo_id"].astype(str),
                            "lp_clin": lp_clin, "lp_face": lp_face, "lp_total": lp_total,
                            "time_days": time, "event": event.astype(int)})
    draw = {"survival_seed": survival_seed, "target_event_rate": round(target, 4),
            "event_rate": round(float(event.mean()), 4), "censoring_factor": round(factor, 4),
            "censoring": "the base's reverse Kaplan-Meier censoring distribution, stretched by censoring_factor"}
    return clinical, outcome, draw


def ceiling_c_index(time: np.ndarray, event: np.ndarray, *, lp_clin: np.ndarray, lp_face: np.ndarray
                    ) -> dict[str, float]:
    """C-index of the true log-hazards, no model: face, clinical and total."""
    return {"face": round(c_index(time, event, lp_face), 4), "clinical": round(c_index(time, event, lp_clin), 4),
            "total": round(c_index(time, event, lp_clin + lp_face), 4)}


def assemble_cohort(chosen: pd.DataFrame, faces: Faces, *, base: str, base_table: pd.DataFrame, model: WeibullPH,
                    survival_seed: int, seed: int, rung: str) -> SynthCohort:
    """Outcomes drawn for already-made faces, plus the summary (ceilings, counts, settings)."""
    clinical, outcome, draw = draw_outcomes_for(chosen, faces, base=base, base_table=base_table, model=model,
                                                survival_seed=survival_seed)
    ceiling = ceiling_c_index(outcome["time_days"].to_numpy(), outcome["event"].to_numpy().astype(bool),
                              lp_clin=outcome["lp_clin"].to_numpy(), lp_face=outcome["lp_face"].to_numpy())
    summary = {"kind": faces.kind, "rung": rung, "base": base, "seed": seed, "survival_seed": survival_seed,
               "patients": int(len(clinical)), "events": int(outcome["event"].sum()),
               "faces": faces.summary, "outcome": draw, "ceiling_c_index": ceiling,
               "lp_sd": {"clinical": round(float(outcome["lp_clin"].std()), 4),
                         "face": round(float(outcome["lp_face"].std()), 4)}}
    return SynthCohort(clinical=clinical, faces=faces, outcome=outcome, clinical_model=model.describe(),
                       summary=summary)


def rung_name(kind: str, *, direction: str = "random", space: str = "w", generator: str = "") -> str:
    """The ladder rung a cohort sits on, in words."""
    if kind == "real":
        return f"real faces{f' with {generator}' if generator else ''}"
    if direction == "visible":
        return f"rendered, the generator's most visible direction in {space} (the easy case)"
    return f"rendered, random direction in {space}"


# --- files ---------------------------------------------------------------------------------------

def _vector_column(values: list[np.ndarray]):
    import pyarrow as pa

    arr = np.stack(values).astype(np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), pa.float32()), arr.shape[1])


def faces_table(faces: Faces):
    """The faces' truth as an arrow table (vectors as fixed-size float32 lists)."""
    import pyarrow as pa

    cols = {}
    for name in faces.table.columns:
        if name in ("latent", "z", "w"):
            cols[name] = _vector_column(faces.table[name].to_list())
        else:
            cols[name] = pa.array(faces.table[name].to_list())
    return pa.table(cols)


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


def faces_statement(faces: Faces) -> str:
    return (f"REAL FACES: photos from {faces.source_dir} (see its README for the licence; they are copied "
            "into this cohort for the pipeline, never into a repository), each matched to a patient by sex and "
            "by clinical age plus a drawn apparent-age gap.")


def write_synth_cohort(cohort: SynthCohort, out_dir: Path, *, generator: dict[str, Any] | None) -> Path:
    """Write DIR/photos/<photo_id>.(png|jpg), DIR/clinical.csv, DIR/cohort.json and DIR/truth/
    (faces.parquet, outcome.csv, clinical_model.json, summary.json, README.md and, for
    rendered faces, direction.npy), atomically: everything goes into a temporary sibling
    directory renamed to DIR at the end.

    `generator` holds the GeneratorInfo fields of a rendered cohort's generator (None for real faces).
    """
    import pyarrow.parquet as pq
    from PIL import Image, PngImagePlugin

    from ground.atomic import atomic_dir

    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    faces = cohort.faces
    statement = generator_statement(generator) if generator is not None else faces_statement(faces)
    with atomic_dir(out_dir) as tmp:
        photos = tmp / "photos"
        photos.mkdir()
        if faces.kind == "rendered":
            if faces.images is None or generator is None:
                raise FacesurvError("a rendered cohort needs its images and its generator's description")
            meta = PngImagePlugin.PngInfo()
            meta.add_text("Software", "facesurv cohort synth")
            meta.add_text("Comment", statement)
            meta.add_text("facesurv:generator_sha256", str(generator.get("sha256", "")))
            for photo_id, img in zip(faces.table["photo_id"], faces.images, strict=True):
                Image.fromarray(img, mode="RGB").save(photos / f"{photo_id}.png", format="PNG", pnginfo=meta)
        else:
            if faces.source_dir is None:
                raise FacesurvError("a real-face cohort needs the folder its photos come from")
            for photo_id, name in zip(faces.table["photo_id"], faces.table["photo_file"], strict=True):
                shutil.copyfile(faces.source_dir / name, photos / f"{photo_id}{Path(name).suffix.lower()}")
        cohort.clinical.to_csv(tmp / "clinical.csv", index=False)
        info = {
            "kind": COHORT_KIND, "format_version": FORMAT_VERSION, "cohort_kind": faces.kind,
            "rung": cohort.summary["rung"], "base": cohort.summary["base"], "seed": cohort.summary["seed"],
            "survival_seed": cohort.summary["survival_seed"], "patients": int(len(cohort.clinical)),
            "events": int(cohort.clinical["event"].sum()),
            "resolution": int(faces.images.shape[1]) if faces.images is not None else None,
            "faces_dir": str(faces.source_dir) if faces.source_dir is not None else None,
            "generator": generator, "generator_is_random_init": bool(generator and generator.get("is_random_init")),
            "statement": statement,
            "files": {"photos": "photos/<photo_id>.(png|jpg)", "clinical": "clinical.csv (real covariates, "
                      "drawn time_days and event)", "truth": "truth/ (never read by the pipeline)"},
        }
        (tmp / "cohort.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        truth = tmp / "truth"
        truth.mkdir()
        pq.write_table(faces_table(faces), truth / "faces.parquet")
        if faces.direction is not None:
            np.save(truth / "direction.npy", faces.direction.astype(np.float32))
        cohort.outcome.to_csv(truth / "outcome.csv", index=False)
        (truth / "clinical_model.json").write_text(json.dumps(cohort.clinical_model, indent=2) + "\n", encoding="utf-8")
        summary = {**cohort.summary, "statement": statement}
        (truth / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (truth / "README.md").write_text(_truth_readme(cohort.summary, statement), encoding="utf-8")
    return out_dir


def _truth_readme(summary: dict[str, Any], statement: str) -> str:
    c = summary["ceiling_c_index"]
    if summary["kind"] == "real":
        f = summary["faces"]
        face_rule = (f"LP_face = ln(HR) x g / 10 with HR {f['hr_per_decade']} per decade and g the realised "
                     f"apparent-age gap (photo age - clinical age; drawn g ~ N(0, {f['gap_sd']}^2)).")
    else:
        f = summary["faces"]
        face_rule = (f"LP_face = s x (latent . d - prior mean) / prior sd with s = {f['strength']}, the latent "
                     f"drawn from the generator's prior in space {f['space']} and d in direction.npy.")
    return f"""# Ground truth of this semi-synthetic cohort (the pipeline never reads this folder)

{statement}

Rung: {summary['rung']}. Faces first, outcome second: every face was fixed by the cohort seed
({summary['seed']}) alone; each patient's event time was then drawn from a Weibull model
h0(t) exp(LP_clin + LP_face) (clinical_model.json: fitted to the base's real outcome) and a
censoring time from the base's censoring distribution, with survival seed {summary['survival_seed']}.
{face_rule}

- faces.parquet: photo_id, patient_id, lp_face and how each face was made
- outcome.csv: patient_id, photo_id, lp_clin, lp_face, lp_total and the drawn time_days, event
- clinical_model.json: the Weibull PH fit (scale per year, shape, beta on the standardised design)
- summary.json: the figures below and the settings

Ceiling C-index (the true log-hazards, no model; no learner ranks better on average):
face {c['face']}, clinical {c['clinical']}, total {c['total']}.
"""
