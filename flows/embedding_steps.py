"""Alignment and projection of the workspace's photos, through the one driver of each.

Alignment runs embedding.align.align_directory on data/photos into artifacts/aligned (the
command `facesurv align` runs): a photo is redone when its bytes, the aligner or its options
changed, and a killed run keeps every photo of the manifest's last checkpoint.

Projection runs embedding.project_batch (as `facesurv project` does) on the aligned photos and
data/prealigned, planned in the flow and projected one batch per task:

    artifacts/latents/shard-<run key16>-<batch16>.npz

The run key hashes the generator, the perceptual network (when the loss uses one) and every
projection setting. A photo is pending while no shard of the current key holds its hash, so a
finished batch is never recomputed and a photo is never projected twice. An aligned photo's hash
is its source photo's, as photo scoring keys it, so both give it the same latent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from embedding.project_batch import PhotoFailure, PhotoInput, Plan, Projection, plan, shard_paths
from facesurv.components import components
from flows.faults import checkpoint
from flows.steps import Layout, read_valid_clinical
from ground.config import Params
from ground.workspace import Workspace

PREALIGNED_VERSION = "prealigned"


def align_photos(ws: Workspace, params: Params) -> Any:
    """Align data/photos into artifacts/aligned (embedding.align.BatchResult; None: no photo yet)."""
    from embedding.align import align_directory

    photos = ws.data_dir / "photos"
    if not photos.is_dir():
        return None
    aligner = components(ws, params).aligner
    return align_directory(photos, Layout(ws).aligned, config=aligner.config, aligner=aligner,
                           on_written=lambda row: checkpoint("align:photo-written"))


def read_manifest(ws: Workspace) -> Any:
    import pandas as pd

    path = Layout(ws).aligned / "manifest.csv"
    return pd.read_csv(path) if path.is_file() and path.stat().st_size else None


def projection_inputs(ws: Workspace) -> list[PhotoInput]:
    """Every photo to project: the aligned ones, then the declared pre-aligned ones (by photo_id,
    an aligned photo wins). Only plain files are read: the driver fails a link, unread."""
    from embedding.align import read_manifest as manifest_rows

    aligned = Layout(ws).aligned
    items = {pid: PhotoInput(pid, str(aligned / r["output_file"]), root=str(aligned), sha256=r["source_sha256"])
             for pid, r in manifest_rows(aligned / "manifest.csv").items() if r["status"] == "aligned"}
    pre = ws.data_dir / "prealigned"
    names = sorted(e.name for e in os.scandir(pre) if not e.name.startswith(".")
                   and not e.is_dir(follow_symlinks=False)) if pre.is_dir() else []
    for name in names:
        items.setdefault(Path(name).stem, PhotoInput(Path(name).stem, str(pre / name), root=str(pre)))
    return list(items.values())


def _project_then_checkpoint(*args: Any, **kwargs: Any) -> Any:
    from embedding.projection import project

    result = project(*args, **kwargs)
    checkpoint("project:batch-computed")  # the crash test kills here: computed, not yet written
    return result


def projection(ws: Workspace, params: Params, *, projecting: bool = False) -> Projection:
    """params' projection on projection.device as this process sees it (auto: CUDA when it has one);
    the models and the latent statistics are loaded once per process."""
    return components(ws, params).projection(with_stats=projecting, project_fn=_project_then_checkpoint)  # type: ignore[no-any-return]


def pending_batches(ws: Workspace, params: Params) -> Plan:
    """The photos with no latent for this run key, in batches (and those that cannot be read)."""
    return plan(projection(ws, params), projection_inputs(ws), shard_dir=Layout(ws).latents,
                batch_size=params.projection.batch_size, warn=print)


def project_batch(ws: Workspace, params: Params, batch: list[PhotoInput]) -> tuple[Path | None, list[PhotoFailure]]:
    """Project one planned batch into its shard, on whichever worker runs it."""
    from embedding.project_batch import project_batch as project

    return project(projection(ws, params, projecting=True), batch, shard_dir=Layout(ws).latents)


def latent_shards(ws: Workspace, params: Params) -> list[Path]:
    return shard_paths(Layout(ws).latents, projection(ws, params).key)


def write_latent_features(ws: Workspace, params: Params, valid_clinical: list[Path], valid_latents: list[Path]) -> int:
    """face_latent rows for every valid latent with a clinical record (the rest wait for one)."""
    import pandas as pd

    from features.contracts import newest_first
    from features.store import join_latents, write_latents

    if not valid_latents or not valid_clinical:
        return 0
    latents = pd.concat([pd.read_parquet(p) for p in valid_latents], ignore_index=True)
    # a correction (a later record_known_at) must be the clinical row a latent is joined through
    rows, _unmatched = join_latents(latents, newest_first(read_valid_clinical(valid_clinical)),
                                    manifest=read_manifest(ws), aligner_version=PREALIGNED_VERSION)
    return int(write_latents(ws.feature_repo_dir, rows, params)) if len(rows) else 0
