"""Attribute edits of one patient's face: the health attribute (the embedding Cox model's
coefficient vector) and the age attribute (a cross-validated ridge direction), as
`facesurv edit` and the demo's report draw them.

    summary = edit_patient(ws, params, patient_id="gbsg2-00001", attribute="health")

The patient's latent is the one in the Feast training set (what the models were trained on).
Each β (in units of the cohort's spread along the direction) moves it along the unit
direction; the edit is rendered, re-projected with the workspace's projection engine and
re-scored, so every row of the grid shows what the edit did to the model's risk, not only
what it was meant to do.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facesurv.components import components
from ground.atomic import atomic_path
from ground.config import Params
from ground.errors import DataError, NotAvailableError
from ground.workspace import Workspace

ATTRIBUTES = ("health", "age")
UPSCALE_TO = 128   # small renders are enlarged (nearest) to this side for the page


def training_frame(ws: Workspace) -> Any:
    import pandas as pd

    path = ws.artifacts_dir / "training" / "training_set.parquet"
    if not path.is_file():
        raise DataError(f"{ws.root}: no training set yet; run the train-and-promote flow first")
    frame = pd.read_parquet(path)
    if "latent" not in frame.columns or not frame["latent"].notna().any():
        raise DataError(f"{path}: the training set holds no latents; project the photos first")
    frame = frame[frame["latent"].notna()].reset_index(drop=True)
    frame["patient_id"] = frame["patient_id"].astype(str)
    return frame


def latents_of(frame: Any) -> np.ndarray:
    """(N, D) float32 latents of a training-set frame."""
    return np.stack([np.asarray(v, dtype=np.float32) for v in frame["latent"]])


@dataclass(frozen=True)
class HealthAttribute:
    """The champion's embedding Cox model as the health attribute: its coefficient vector on the
    raw latents (D,) float32 (risk rises along it) and the penalty its cross-validation chose."""

    direction: np.ndarray
    alpha: float


def champion_health(ws: Workspace, params: Params) -> HealthAttribute:
    """Load the champion once and take its embedding Cox model's direction and penalty."""
    from training.pyfunc import health_direction_of, load_served
    from training.tracking import tracking_uri_for

    try:
        _, model = load_served(tracking_uri_for(params, ws.mlflow_dir), params.registry.model_name, "champion")
    except Exception as exc:  # noqa: BLE001 - any failure to load means there is no champion to edit with
        raise NotAvailableError(f"no champion model to take the health attribute from ({str(exc).splitlines()[0]}); "
                                "run the train-and-promote flow first") from None
    d = health_direction_of(model)
    if d is None or not np.linalg.norm(d) > 0:
        raise NotAvailableError("the champion's embedding Cox model kept no latent coordinate: no health direction")
    alpha = next(float(m.alpha_) for m in [*getattr(model, "members", {}).values(), model]
                 if getattr(m, "alpha_", None) is not None)
    return HealthAttribute(np.asarray(d, dtype=np.float32), alpha)


def age_direction(latents: np.ndarray, ages: np.ndarray, params: Params) -> Any:
    """training.age_direction on the latents and ages with the attributes section's settings."""
    from training.age_direction import age_direction as fit

    a = params.attributes
    return fit(latents, ages, folds=a.age_folds, shuffles=a.age_shuffles, bootstrap=a.bootstrap,
               seed=params.training.seed)


def projector(ws: Workspace, params: Params) -> Callable[[Any], np.ndarray]:
    """images (M, 3, R, R) in [-1, 1] -> (M, D) latents, with the workspace's projection engine
    (the nightly flow's settings, seeded per image)."""
    engine = components(ws, params).projection()

    def project_fn(images: Any) -> np.ndarray:
        seeds = [f"edit-{i}" for i in range(len(images))]
        return np.asarray(engine.run(images, seeds).latents, dtype=np.float32)
    return project_fn


@dataclass(frozen=True)
class Edit:
    """One patient's edit along a direction: amounts (K,) in latent units, the rendered images
    (K, 3, R, R) in [-1, 1] and the re-scored log-risk of each re-projected edit (K,)."""

    betas: tuple[float, ...]
    amounts: np.ndarray
    images: Any
    rescored: np.ndarray
    spread: float


def edit_one(ws: Workspace, params: Params, latent: np.ndarray, direction: np.ndarray, *, cohort: np.ndarray,
             score: np.ndarray, betas: Sequence[float]) -> Edit:
    """Move `latent` (D,) by β·spread along unit(direction) for each β, render, re-project, re-score
    with log-risk = latent @ score (the embedding Cox model up to its constant)."""
    import torch

    from embedding.editing import edit_and_reproject, edit_latents, latent_spread, render

    G, _ = components(ws, params).generator()
    space = params.projection.space if params.projection.space != "w+" else "w"
    spread = latent_spread(torch.from_numpy(cohort), torch.from_numpy(direction))
    amounts = np.asarray(betas, dtype=np.float32) * spread
    reprojected = edit_and_reproject(G, latent[None], direction, amounts, space=space,
                                     project_fn=projector(ws, params))[0]
    images = render(G, edit_latents(latent[None], direction, amounts)[0], space=space)
    return Edit(tuple(float(b) for b in betas), amounts, images, reprojected @ score, spread)


def grid_picture(edit: Edit, *, title: str) -> Any:
    """A PIL image: one row per β (the unedited reconstruction, β = 0, marked), with the re-scored risk."""
    from PIL import Image, ImageDraw

    from embedding.editing import to_uint8

    cells = to_uint8(edit.images)  # (K, R, R, 3)
    side = max(UPSCALE_TO, cells.shape[1])
    label_w, pad = 300, 4
    out = Image.new("RGB", (side + label_w + 2 * pad, len(cells) * (side + pad) + pad + 24), "white")
    draw = ImageDraw.Draw(out)
    draw.text((pad, 4), title, fill="black")
    for k, (beta, cell, risk) in enumerate(zip(edit.betas, cells, edit.rescored, strict=True)):
        y = 24 + pad + k * (side + pad)
        out.paste(Image.fromarray(cell).resize((side, side), Image.Resampling.NEAREST), (pad, y))
        mark = "  <- unedited reconstruction" if beta == 0 else ""
        draw.text((side + 2 * pad, y + side // 2 - 12), f"beta {beta:+g} spread{mark}", fill="black")
        draw.text((side + 2 * pad, y + side // 2 + 2), f"re-scored log-risk {risk:+.3f}", fill="black")
        if beta == 0:
            draw.rectangle((pad - 2, y - 2, pad + side + 1, y + side + 1), outline="red", width=2)
    return out


def edit_patient(ws: Workspace, params: Params, *, patient_id: str, attribute: str,
                 betas: Sequence[float] | None = None, out: Path | None = None, ages: Any = None,
                 health: HealthAttribute | None = None, log_to_mlflow: bool = True) -> dict[str, Any]:
    """Write the patient's edit grid along `attribute` (health | age) and log it to MLflow.

    ages: the values the age direction is learned from, one per training-set patient (default:
    the training set's `age` column); the demo passes the photos' own age labels.
    health: the champion's, when the caller has loaded it already (else loaded here).
    Returns {path, attribute, patient_id, betas, rescored, spread, direction stats, run_id}.
    Raises DataError for an unknown attribute or patient, bad betas; NotAvailableError when there
    is no champion (health).
    """
    if attribute not in ATTRIBUTES:
        raise DataError(f"unknown attribute {attribute!r}; choose health or age")
    b = tuple(float(x) for x in (betas if betas is not None else params.attributes.edit_betas))
    if len(b) < 2 or any(x >= y for x, y in zip(b, b[1:], strict=False)) or not all(np.isfinite(b)):
        raise DataError(f"--betas must be at least 2 finite increasing amounts, got {list(b)}; e.g. --betas -3 0 3")
    frame = training_frame(ws)
    match = np.flatnonzero(frame["patient_id"].to_numpy() == str(patient_id))
    if not len(match):
        raise DataError(f"patient {patient_id!r} has no latent in the training set; pick one of "
                        f"{', '.join(frame['patient_id'].head(3))}, ...")
    cohort = latents_of(frame)
    health_dir = (health or champion_health(ws, params)).direction
    stats: dict[str, Any] = {}
    if attribute == "health":
        direction = health_dir
    else:
        values = np.asarray(frame["age"] if ages is None else ages, dtype=np.float64)
        fitted = age_direction(cohort, values, params)
        direction, stats = fitted.direction, fitted.to_dict()
        stats.pop("direction", None)
    edit = edit_one(ws, params, cohort[match[0]], direction, cohort=cohort, score=health_dir, betas=b)
    target = Path(out) if out is not None else ws.artifacts_dir / "edits" / f"{patient_id}-{attribute}.png"
    title = f"{attribute} attribute, patient {patient_id}: rows are beta (spreads of the cohort along it)"
    picture = grid_picture(edit, title=title)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        picture.save(tmp, format="PNG")
    summary = {"path": str(target), "attribute": attribute, "patient_id": str(patient_id), "betas": list(b),
               "amounts": [float(a) for a in edit.amounts], "spread": edit.spread,
               "rescored_log_risk": [float(r) for r in edit.rescored], "direction": stats}
    if log_to_mlflow:
        summary["run_id"] = _log_edit(ws, params, summary, target)
    return summary


def attributes_experiment(params: Params) -> str:
    return f"{params.registry.experiment}-attributes"


def _log_edit(ws: Workspace, params: Params, summary: dict[str, Any], picture: Path) -> str:
    from mlflow import MlflowClient

    from training.runs import open_run
    from training.tracking import ensure_experiment, quiet_environment

    quiet_environment()
    uri = components(ws, params).tracking_uri
    client = MlflowClient(tracking_uri=uri)
    exp = ensure_experiment(client, attributes_experiment(params), ws.mlflow_dir / "artifacts")
    with open_run(client, experiment_id=exp, name=f"edit-{summary['attribute']}-{summary['patient_id']}") as run, \
            tempfile.TemporaryDirectory(prefix="facesurv-edit-") as tmp:
        run.set_tags({"facesurv.kind": "attribute-edit", "attribute": summary["attribute"],
                      "patient_id": summary["patient_id"]})
        run.log_params({"betas": json.dumps(summary["betas"]), "spread": round(summary["spread"], 6)})
        run.log_artifact(picture, "grids")
        path = Path(tmp) / "edit.json"
        path.write_text(json.dumps(summary, indent=1, default=float))
        run.log_artifact(path)
    return run.run_id
