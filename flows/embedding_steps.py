"""Alignment and projection steps: I/O around embedding/'s pure functions, keyed by content.

Alignment writes one row file per source photo (`artifacts/aligned/rows/<sha16>.json`, after
the aligned PNG), so a run killed mid-alignment redoes at most the photo it was on; the
manifest is rebuilt from the rows. Projection works in batches of photos sorted by content
hash; each batch is one parquet file under

    artifacts/latents/<generator sha16>-<settings sha12>/batches/<batch key>.parquet

whose key hashes the generator, the projection settings and the photos' hashes. A photo is
pending when no batch file of the current generator and settings holds its hash, so a
finished batch is never recomputed, and a photo is never projected twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from embedding.fileio import sha256_regular_file
from facesurv.components import components
from flows.available import require
from flows.faults import checkpoint
from flows.steps import Layout
from ground.atomic import atomic_path
from ground.config import Params
from ground.errors import DataError
from ground.workspace import Workspace

PREALIGNED_VERSION = "prealigned"
log = logging.getLogger(__name__)


def _photo_entries(folder: Path) -> list[Path]:
    """Every visible non-folder entry of a data-repository photo folder, links included: the
    readers below open only plain files inside the folder and report the others."""
    if not folder.is_dir():
        return []
    return sorted(folder / e.name for e in os.scandir(folder)
                  if not e.name.startswith(".") and not e.is_dir(follow_symlinks=False))


def _content_hash(path: Path, folder: Path) -> str | None:
    """sha256 of a plain file inside `folder`; None for anything else (a link, a FIFO, ...)."""
    try:
        return sha256_regular_file(path, root=folder)
    except OSError:
        return None


# --- alignment ----------------------------------------------------------------------------------

def _row_path(ws: Workspace, photo_id: str) -> Path:
    return Layout(ws).aligned / "rows" / f"{photo_id}.json"


def _row_sha(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("source_sha256")
    except (OSError, ValueError):
        return None


def pending_alignment(ws: Workspace, params: Params) -> list[Path]:
    """Photos in the data repository whose current content has no alignment row (by name).

    An entry that is not a plain file (a link, a FIFO, ...) is always pending: `align_one`
    quarantines it with the reason, unread, on every run until it is replaced.
    """
    d = ws.data_dir / "photos"
    pending = []
    for p in _photo_entries(d):
        digest = _content_hash(p, d)
        if digest is None or _row_sha(_row_path(ws, p.stem)) != digest:
            pending.append(p)
    return pending


def align_one(ws: Workspace, params: Params, source: Path) -> dict[str, Any]:
    """Align one photo (or quarantine it, with its reason); the PNG first, then its row file."""
    process_one = require("alignment", "process_one", module="embedding.align.batch")
    out_dir = Layout(ws).aligned
    out_dir.mkdir(parents=True, exist_ok=True)
    source = Path(source)
    row = dict(process_one(source, source.stem, out_dir, components(ws, params).aligner, root=source.parent))
    checkpoint("align:photo-written")
    # a quarantined source has no hash when it was never read ("" keeps it pending)
    row["source_sha256"] = row.get("source_sha256") or _content_hash(source, source.parent) or ""
    with atomic_path(_row_path(ws, Path(source).stem)) as tmp:
        tmp.write_text(json.dumps(row, default=str), encoding="utf-8")
    return row


def alignment_rows(ws: Workspace) -> list[dict[str, Any]]:
    """One alignment row per photo_id (a re-delivered photo's row replaced the older one)."""
    d = Layout(ws).aligned / "rows"
    return [json.loads(f.read_text(encoding="utf-8")) for f in sorted(d.glob("*.json"))] if d.is_dir() else []


def write_manifest(ws: Workspace, rows: list[dict[str, Any]] | None = None) -> Path:
    """artifacts/aligned/manifest.csv from every row written so far (not only this run's)."""
    write = require("alignment", "write_manifest", module="embedding.align.batch")
    target = Layout(ws).aligned / "manifest.csv"
    write(target, alignment_rows(ws))
    return target


def read_manifest(ws: Workspace) -> Any:
    import pandas as pd

    path = Layout(ws).aligned / "manifest.csv"
    return pd.read_csv(path) if path.is_file() and path.stat().st_size else None


def projection_inputs(ws: Workspace) -> list[dict[str, Any]]:
    """Every photo ready to project: aligned ones from the rows, and declared pre-aligned ones."""
    items = []
    for row in alignment_rows(ws):
        if row.get("status") == "aligned":
            items.append({"photo_id": str(row["photo_id"]), "path": str(Layout(ws).aligned / f"{row['photo_id']}.png"),
                          "photo_sha256": row["source_sha256"]})
    pre = ws.data_dir / "prealigned"
    for p in _photo_entries(pre):
        digest = _content_hash(p, pre)
        if digest is None:  # never read: projecting it would follow the link
            log.warning("%s: not a plain file inside %s (a link, a FIFO, ...); skipped, not projected: "
                        "replace it with the file itself", p, pre)
            continue
        items.append({"photo_id": p.stem, "path": str(p), "photo_sha256": digest})
    return items


# --- projection ---------------------------------------------------------------------------------

def generator(ws: Workspace, params: Params, *, device: str = "cpu") -> tuple[Any, Any]:
    """(G, GeneratorInfo) for params.generator on `device`, loaded once per process."""
    return components(ws, params).generator(device=device)  # type: ignore[no-any-return]


def settings_key(params: Params, generator_sha: str) -> str:
    settings = {"projection": dataclasses.asdict(params.projection),
                "perceptual": dataclasses.asdict(params.perceptual)}
    settings["projection"].pop("device", None)  # where it ran does not change what it computes
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return f"{generator_sha[:16]}-{digest[:12]}"


def latents_dir(ws: Workspace, params: Params) -> Path:
    _, info = generator(ws, params)
    return ws.artifacts_dir / "latents" / settings_key(params, info.sha256) / "batches"


def latent_batch_files(ws: Workspace, params: Params | None = None) -> list[Path]:
    if params is None:
        params = ws.load_params()
    d = latents_dir(ws, params)
    return sorted(d.glob("*.parquet")) if d.is_dir() else []


def _done_hashes(files: list[Path]) -> set[str]:
    import pyarrow.parquet as pq

    done: set[str] = set()
    for f in files:
        done.update(pq.read_table(f, columns=["photo_sha256"]).column("photo_sha256").to_pylist())
    return done


def pending_batches(ws: Workspace, params: Params) -> list[list[dict[str, Any]]]:
    """Photos with no latent for this generator and settings, sorted by hash, in batches."""
    done = _done_hashes(latent_batch_files(ws, params))
    seen: set[str] = set()
    todo = []
    for item in sorted(projection_inputs(ws), key=lambda i: (i["photo_sha256"], i["photo_id"])):
        if item["photo_sha256"] in done or item["photo_sha256"] in seen:
            continue  # identical pixels under two names: one latent serves both
        seen.add(item["photo_sha256"])
        todo.append(item)
    n = params.projection.batch_size
    return [todo[i:i + n] for i in range(0, len(todo), n)]


def _batch_key(key: str, items: list[dict[str, Any]]) -> str:
    return hashlib.sha256((key + "\n" + "\n".join(i["photo_sha256"] for i in items)).encode()).hexdigest()[:24]


def _load_images(paths: list[str], resolution: int) -> Any:
    """(N, 3, R, R) float32 in [-1, 1], decoded and resized exactly as `facesurv project` does."""
    import numpy as np

    load_photo = require("projection", "load_photo", module="embedding.project_batch")
    try:
        return np.stack([load_photo(p, resolution=resolution) for p in paths])
    except ValueError as exc:
        raise DataError(f"a photo cannot be projected: {exc}") from None


def project_batch(ws: Workspace, params: Params, items: list[dict[str, Any]]) -> Path:
    """Project one batch and write its parquet (skipped when that batch's file exists).

    Runs on projection.device as this worker sees it (auto: CUDA when it has one).
    """
    import numpy as np
    import pandas as pd

    p = params.projection
    parts = components(ws, params)
    device = parts.device
    G, info = parts.generator(device=device)
    key = settings_key(params, info.sha256)
    target = ws.artifacts_dir / "latents" / key / "batches" / f"{_batch_key(key, items)}.parquet"
    if target.exists():
        return target
    perceptual, pinfo = parts.perceptual(device=device)
    images = _load_images([i["path"] for i in items], G.img_resolution)
    project, stable_seed = require("projection", "project", "stable_seed")
    # a photo's seed comes from its content, so its latent is the same whatever batch it lands in
    seeds = [stable_seed(p.seed, i["photo_sha256"]) for i in items]
    res = project(G, images, **p.project_options(), perceptual=perceptual, seed=seeds, device=device,
                  mixed_precision=p.mixed_precision, stats=parts.latent_stats(device=device))
    checkpoint("project:batch-computed")
    from features.latents import feature_latents

    lat = feature_latents(res.latents, space=p.space)  # w+: the layer mean, one 512-d vector per photo

    def col(name: str) -> list[float]:
        return [float(x) for x in np.asarray(getattr(res, name))]

    df = pd.DataFrame({
        "photo_id": [i["photo_id"] for i in items],
        "latent": list(lat),
        "space": p.space, "steps": p.steps,
        "perceptual_loss": col("perceptual_loss"), "mse": col("mse"),
        "generator_sha256": info.sha256, "generator_is_random_init": bool(info.is_random_init),
        # with a pixel loss no perceptual network is loaded, so none is named
        "perceptual_network": "none" if pinfo is None else str(getattr(pinfo, "network", params.perceptual.network)),
        "perceptual_is_stand_in": pinfo is not None and bool(getattr(pinfo, "is_stand_in", True)),
        "photo_sha256": [i["photo_sha256"] for i in items],
    })
    with atomic_path(target) as tmp:
        df.to_parquet(tmp, index=False)
    return target


# --- features -------------------------------------------------------------------------------------

def join_latent_rows(ws: Workspace, params: Params, valid_clinical: list[Path], valid_latents: list[Path]) -> Any:
    """face_latent rows for every valid latent with a clinical record (the rest wait for one)."""
    import pandas as pd

    from flows.steps import read_valid_clinical

    join_latents = require("feature store", "join_latents")
    if not valid_latents:
        return pd.DataFrame()
    latents = pd.concat([pd.read_parquet(p) for p in valid_latents], ignore_index=True)
    newest_first = require("contracts", "newest_first")
    # a correction (a later record_known_at) must be the clinical row a latent is joined through
    rows, _unmatched = join_latents(latents, newest_first(read_valid_clinical(valid_clinical)),
                                    manifest=read_manifest(ws), aligner_version=PREALIGNED_VERSION)
    return rows


def write_latents(ws: Workspace, params: Params, rows: Any) -> int:
    if rows is None or len(rows) == 0:
        return 0
    write = require("feature store", "write_latents")
    n = int(write(ws.feature_repo_dir, rows, params))
    if n < 0:
        raise DataError("feature store reported a negative row count")
    return n
