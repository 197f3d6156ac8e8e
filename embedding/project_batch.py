"""Project many photo files in batches, resumably: a crash loses at most the batch in flight.

Every finished batch is written at once as one shard (``.npz``, temp file + rename) under
`shard_dir`. A shard's name and content carry a run key: the sha256 of the generator's
sha256, the perceptual network's sha256 and the projection settings. On a rerun with the
same key, every photo whose content hash is already in a shard is taken from there and
only the rest are projected. Reuse is by photo (not by batch), which is sound because a
photo's result does not depend on its batch mates: its RNG stream is keyed by its content
hash, and `project` pads batches so their arithmetic is batch-invariant.

Photos that cannot be read or decoded are returned as failures with the reason; they never
vanish, and they never take the rest of their batch down with them. Only plain files inside a
photo's folder are opened: a link, hard link, FIFO, device or socket is a failure, unread.

Standard library, numpy, Pillow and torch only (no pyarrow here: the CLI writes tables).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedding.fileio import (
    UnsafeFileError,
    open_regular_file,
    sha256_regular_file,
    write_bytes_atomic,
)

SHARD_FORMAT = 1
_SHARD_FIELDS = ("latents", "w", "perceptual_loss", "mse", "initial_loss", "final_loss", "initial_mse",
                 "initial_perceptual_loss")


@dataclass(frozen=True)
class PhotoInput:
    """root: the input folder `path` must be a plain file inside (default: the file's own folder)."""

    photo_id: str
    path: str
    root: str | None = None


@dataclass(frozen=True)
class ProjectedPhoto:
    """One photo's projection. latent: (512,) float32 ((num_ws, w_dim) for w+); w: (w_dim,) float32."""

    photo_id: str
    photo_sha256: str
    latent: np.ndarray
    w: np.ndarray
    perceptual_loss: float
    mse: float
    initial_loss: float
    final_loss: float
    initial_mse: float
    initial_perceptual_loss: float
    reused: bool


@dataclass(frozen=True)
class PhotoFailure:
    photo_id: str
    path: str
    reason: str


@dataclass
class BatchRun:
    """Results in input order (failed photos left out) and every failure, with counts."""

    run_key: str
    results: list[ProjectedPhoto] = field(default_factory=list)
    failures: list[PhotoFailure] = field(default_factory=list)
    projected: int = 0
    reused: int = 0
    shards_written: list[str] = field(default_factory=list)


def run_key(*, generator_sha256: str, perceptual_sha256: str | None, settings: Mapping[str, object]) -> str:
    """sha256 of everything that changes a photo's result (device excepted: same algorithm)."""
    blob = json.dumps({"format": SHARD_FORMAT, "generator": generator_sha256, "perceptual": perceptual_sha256,
                       "settings": dict(settings)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_photo(path: str | os.PathLike, *, resolution: int, root: str | os.PathLike | None = None) -> np.ndarray:
    """Decode an image file to (3, resolution, resolution) float32 in [-1, 1].

    RGB conversion (alpha dropped, greyscale expanded); Lanczos resize when the size differs
    (aligned photos are 512x512 while a demo generator may be 32x32). Raises ValueError with
    the reason when the file is not a readable image, or not one plain file inside `root`
    (default: its own folder; see embedding.fileio.open_regular_file).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        fh = open_regular_file(path, root=root)
    except UnsafeFileError as exc:
        raise ValueError(str(exc)) from None
    except FileNotFoundError:
        raise ValueError("file not found") from None
    except OSError as exc:
        raise ValueError(f"cannot read file: {exc.strerror or exc}") from None
    try:
        with fh, Image.open(fh) as im:
            im.load()
            rgb = im.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError("not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode image: {exc}") from None
    return generator_input(rgb, resolution=resolution)


def generator_input(image: Any, *, resolution: int) -> np.ndarray:
    """A square aligned RGB photo -> (3, resolution, resolution) float32 in [-1, 1].

    image: a PIL RGB image or an (S, S, 3) uint8 array. Lanczos resize when the size differs.
    The one preprocessing of every projected photo: the batch driver, the nightly flow and
    photo scoring all call it, so an uploaded photo gets the latent the flow would give it.
    """
    from PIL import Image

    rgb = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image, np.uint8), "RGB")
    if rgb.width != rgb.height:
        raise ValueError(f"image is {rgb.width}x{rgb.height}; projection needs square aligned photos "
                         "(run `facesurv align` first)")
    if rgb.size != (resolution, resolution):
        rgb = rgb.resize((resolution, resolution), Image.Resampling.LANCZOS)
    arr = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)
    return arr / 127.5 - 1.0


def _write_shard(path: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, object]) -> None:
    buf = io.BytesIO()
    # the array names are result fields, never savez's allow_pickle; numpy's stub cannot know that
    np.savez(buf, meta=np.array(json.dumps(dict(meta))), **arrays)  # type: ignore[arg-type]
    write_bytes_atomic(path, buf.getvalue())


def _read_shards(shard_dir: Path, key: str, warn: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """photo sha256 -> stored row (field -> numpy array or scalar), from every readable shard of this run key."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(shard_dir.glob(f"shard-{key[:16]}-*.npz")):
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("run_key") != key:
                    continue
                arrays = {name: data[name] for name in _SHARD_FIELDS}
                hashes = [str(h) for h in data["photo_sha256"]]
        except Exception as exc:  # noqa: BLE001 - a damaged shard is recomputed, never trusted
            warn(f"ignoring unreadable shard {path.name}: {type(exc).__name__}: {exc}")
            continue
        for i, h in enumerate(hashes):
            found[h] = {name: arrays[name][i] for name in _SHARD_FIELDS}
    return found


def project_photos(
    G,
    photos: Sequence[PhotoInput],
    *,
    shard_dir: str | os.PathLike,
    generator_sha256: str,
    settings: Mapping[str, Any],
    batch_size: int,
    seed: int,
    perceptual=None,
    perceptual_sha256: str | None = None,
    device: str = "cpu",
    mixed_precision: bool = False,
    progress: Callable[[int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
    project_fn: Callable | None = None,
) -> BatchRun:
    """Project photo files with `embedding.projection.project`, batch by batch, with resumable shards.

    Args:
        G: generator on `device`.
        photos: (photo_id, path) pairs; photo_ids must be unique.
        shard_dir: where result shards live (created if missing).
        generator_sha256, perceptual_sha256: identities that key the shards.
        settings: keyword options for `project` (space, steps, learning_rate, loss, ...);
            all of them key the shards.
        batch_size: photos per `project` call.
        seed: run seed; photo p gets stable_seed(seed, sha256(p)).
        perceptual: PerceptualDistance or None (see `project`).
        progress: called as progress(photos_done, photos_total) after each batch (and once
            at the start with the photos reused from shards).
        warn: receives one-line warnings (damaged shards); default: ignored.
        project_fn: the projection function (tests inject a failing one to simulate a crash).

    Returns:
        BatchRun: results in input order, failures with reasons, counts, shards written.
    """
    from embedding.projection import latent_statistics, project, stable_seed

    project_fn = project_fn or project
    warn = warn or (lambda msg: None)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ids = [p.photo_id for p in photos]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise ValueError(f"photo_id values must be unique; repeated: {', '.join(dup)}")
    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    key = run_key(generator_sha256=generator_sha256, perceptual_sha256=perceptual_sha256,
                  settings={**settings, "seed": seed, "mixed_precision": mixed_precision,
                            "resolution": G.img_resolution})
    run = BatchRun(run_key=key)

    hashes: dict[str, str] = {}
    for p in photos:
        try:
            hashes[p.photo_id] = sha256_regular_file(p.path, root=p.root)
        except OSError as exc:
            run.failures.append(PhotoFailure(p.photo_id, p.path, f"cannot read file: {exc.strerror or exc}"))
    done = _read_shards(shard_dir, key, warn)
    pending_by_hash: dict[str, PhotoInput] = {}
    for p in photos:
        h = hashes.get(p.photo_id)
        if h is not None and h not in done and h not in pending_by_hash:
            pending_by_hash[h] = p
    total = len(hashes)
    n_done = sum(1 for p in photos if hashes.get(p.photo_id) in done)
    run.reused = n_done
    if progress is not None:
        progress(n_done, total)

    pending = list(pending_by_hash.items())
    failed_hashes: set[str] = set()
    # w_avg and friends depend only on G: drawn once per run, not once per batch
    stats = latent_statistics(G, samples=int(settings.get("w_avg_samples", 10000)),
                              device=device) if pending else None
    for start in range(0, len(pending), batch_size):
        chunk = pending[start:start + batch_size]
        images, good = [], []
        for h, p in chunk:
            try:
                images.append(load_photo(p.path, resolution=G.img_resolution, root=p.root))
                good.append(h)
            except ValueError as exc:
                failed_hashes.add(h)
                run.failures.append(PhotoFailure(p.photo_id, p.path, str(exc)))
        if good:
            res = project_fn(G, np.stack(images), seed=[stable_seed(seed, h) for h in good], perceptual=perceptual,
                             device=device, mixed_precision=mixed_precision, stats=stats, **settings)
            arrays = {name: np.asarray(getattr(res, name)) for name in _SHARD_FIELDS}
            batch_id = hashlib.sha256("".join(sorted(good)).encode()).hexdigest()[:16]
            path = shard_dir / f"shard-{key[:16]}-{batch_id}.npz"
            _write_shard(path, {**arrays, "photo_sha256": np.array(good)},
                         {"run_key": key, "format": SHARD_FORMAT, "settings": dict(settings), "seed": seed,
                          "generator_sha256": generator_sha256, "perceptual_sha256": perceptual_sha256})
            run.shards_written.append(path.name)
            for i, h in enumerate(good):
                done[h] = {name: arrays[name][i] for name in _SHARD_FIELDS}
            run.projected += len(good)
        if progress is not None:
            n_done = sum(1 for p in photos if hashes.get(p.photo_id) in done or hashes.get(p.photo_id) in failed_hashes)
            progress(n_done, total)

    fresh = set(h for h, _ in pending)
    for p in photos:
        h = hashes.get(p.photo_id)
        if h is None or h not in done:
            if h is not None and h in failed_hashes and pending_by_hash[h].photo_id != p.photo_id:
                # same bytes as a photo that failed to decode: same failure, reported under this id too
                run.failures.append(PhotoFailure(p.photo_id, p.path, "same content as "
                                                 f"{pending_by_hash[h].photo_id}, which could not be decoded"))
            continue
        row = done[h]
        run.results.append(ProjectedPhoto(
            photo_id=p.photo_id, photo_sha256=h,
            latent=np.asarray(row["latents"], dtype=np.float32), w=np.asarray(row["w"], dtype=np.float32),
            perceptual_loss=float(row["perceptual_loss"]), mse=float(row["mse"]),
            initial_loss=float(row["initial_loss"]), final_loss=float(row["final_loss"]),
            initial_mse=float(row["initial_mse"]), initial_perceptual_loss=float(row["initial_perceptual_loss"]),
            reused=h not in fresh))
    return run
