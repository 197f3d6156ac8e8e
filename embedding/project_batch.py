"""The one projection driver: photo files -> latents, batch by batch, in resumable shards.

`facesurv project`, the nightly flow (one task per batch, on Dask when asked) and the benchmarks
all project through here. A `Projection` is everything that decides a photo's latent: the
generator, the perceptual network when one is given, the encoder when one gives the start
latents, and the settings. Its `key`, the sha256 of the generator's sha256, the perceptual
network's sha256 and resize, the encoder's sha256 (only when there is one), and every setting,
names its shards: each finished batch is written at once as `shard-<key16>-<batch16>.npz` (temp file +
rename) with the photos' ids, hashes and results, and the run's provenance in its metadata
(features.latents reads a shard as the one latent table). A photo whose hash is in a shard of
the key is done and never projected again, so a killed run redoes at most the batch in flight.
Reuse is by photo (not by batch), which is sound because a photo's result does not depend on its
batch mates: its RNG stream is keyed by its hash, and `project` pads batches so their arithmetic
is batch-invariant.

Photos that cannot be read or decoded are returned as failures with the reason; they never
vanish, and they never take the rest of their batch down with them. Only plain files inside a
photo's folder are opened: a link, hard link, FIFO, device or socket is a failure, unread.

Standard library, numpy, Pillow and torch only: a GPU box runs it without the data stack.
"""

from __future__ import annotations

import dataclasses
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

SHARD_FORMAT = 2
LOSS_FIELDS = ("perceptual_loss", "mse", "initial_loss", "final_loss", "initial_mse", "initial_perceptual_loss")


@dataclass(frozen=True)
class PhotoInput:
    """root: the folder `path` must be a plain file inside (default: the file's own folder).
    sha256: the photo's identity, which seeds its projection and finds it in shards; default the
    file's content hash (the nightly flow gives an aligned photo its source photo's, as photo
    scoring does, so both give it the same latent)."""

    photo_id: str
    path: str
    root: str | None = None
    sha256: str | None = None


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
class Projection:
    """What decides a photo's latent. generator_info: GeneratorInfo (sha256, is_random_init, source,
    description; version when the registry named it); perceptual_info: PerceptualInfo, required with
    a perceptual network. settings: keyword options of `embedding.projection.project` (space, steps,
    loss, ...). stats: the generator's latent statistics, drawn on first use when None. project_fn:
    `project` unless a test or a crash test puts something around it. encoder, encoder_info: an
    embedding.encoder.Encoder and its EncoderInfo, or None: its latents start the optimisation
    (`project(init=...)`), so its sha256 keys the shards."""

    G: Any
    generator_info: Any
    settings: Mapping[str, Any]
    seed: int
    perceptual: Any = None
    perceptual_info: Any = None
    device: str = "cpu"
    mixed_precision: bool = False
    stats: Any = None
    project_fn: Callable[..., Any] | None = None
    encoder: Any = None
    encoder_info: Any = None

    def __post_init__(self) -> None:
        if self.perceptual is not None and self.perceptual_info is None:
            raise ValueError("a perceptual network needs its PerceptualInfo: its sha256 keys the shards")
        if "perceptual" in str(self.settings.get("loss", "mse")) and self.perceptual is None:
            raise ValueError(f"loss {self.settings['loss']!r} needs a perceptual network; pass one or use loss 'mse'")
        if self.encoder is not None:
            self._check_encoder()

    def _check_encoder(self) -> None:
        info, g = self.encoder_info, self.generator_info
        if info is None:
            raise ValueError("an encoder needs its EncoderInfo (embedding.encoder.load_encoder gives both): "
                             "its sha256 keys the shards")
        if info.generator_sha256 != g.sha256:
            raise ValueError(f"the encoder was trained for generator {info.generator_sha256[:16]}..., not this "
                             f"projection's {g.sha256[:16]}...; train an encoder for this generator")
        space = self.settings.get("space", "w")
        fits = {"z": ("z",), "w": ("w", "w+")}.get(info.space, ())
        if space not in fits or self.encoder.config.space != info.space:
            raise ValueError(f"a {info.space!r} encoder cannot start a {space!r} projection; use a z encoder for "
                             "space z and a w encoder for w and w+")
        if self.encoder.config.resolution != self.G.img_resolution:
            raise ValueError(f"the encoder takes {self.encoder.config.resolution}px photos but the generator makes "
                             f"{self.G.img_resolution}px; train an encoder for this generator")

    @classmethod
    def configured(cls, options: Any, generator: tuple[Any, Any], perceptual: tuple[Any, Any] = (None, None),
                   *, encoder: tuple[Any, Any] | None = None, **kw: Any) -> Projection:
        """From params.projection (project_options(), seed, mixed_precision) and (model, info) pairs;
        encoder: (Encoder, EncoderInfo) to start from its latents."""
        if encoder is not None:
            kw.update(encoder=encoder[0], encoder_info=encoder[1])
        return cls(generator[0], generator[1], options.project_options(), options.seed, *perceptual,
                   mixed_precision=options.mixed_precision, **kw)

    @property
    def provenance(self) -> dict[str, Any]:
        """Where the latents come from, as JSON: written into every shard, read into every table."""
        g, p, e = self.generator_info, self.perceptual_info, self.encoder_info
        # "encoder" only when there is one: provenance without it stays what older shards hold
        encoder = {} if self.encoder is None else {"encoder": {
            k: getattr(e, k) for k in ("sha256", "generator_sha256", "space", "source", "steps")}}
        return {
            "format": SHARD_FORMAT,
            # version: the generator registry's name for the weights (None for a file, the stand-in, or an
            # info object older than the field); lineage only, never part of the key
            "generator": {**{k: getattr(g, k) for k in ("sha256", "is_random_init", "source", "description")},
                          "version": getattr(g, "version", None)},
            "perceptual": None if p is None else {k: getattr(p, k) for k in
                                                  ("network", "sha256", "is_stand_in", "resize", "source", "description")},
            "settings": {**self.settings, "seed": self.seed, "mixed_precision": self.mixed_precision,
                         "resolution": self.G.img_resolution},
            **encoder,
        }

    @property
    def key(self) -> str:
        """sha256 of everything that changes a photo's result (the device excepted: same algorithm).
        The generator enters by its weights' sha256 only: its registry version is a name for those
        weights, so renaming them reuses the shards."""
        prov = self.provenance
        perceptual = prov["perceptual"] and {k: prov["perceptual"][k] for k in ("network", "sha256", "resize")}
        keyed = {"format": SHARD_FORMAT, "generator": prov["generator"]["sha256"], "perceptual": perceptual,
                 "settings": prov["settings"]}
        if "encoder" in prov:  # absent without one, so the key of an optimisation-only run never changes
            keyed["encoder"] = prov["encoder"]["sha256"]
        blob = json.dumps(keyed, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def run(self, images: Any, photo_sha256: Sequence[str], *,
            progress: Callable[[int, int], None] | None = None) -> Any:
        """embedding.projection.project on (N, 3, R, R) images in [-1, 1], each photo seeded by its
        sha256: the one projection call of the batch driver and of photo scoring. progress(step,
        steps) is called as project calls it."""
        from embedding.projection import project, stable_seed

        extra: dict[str, Any] = {} if progress is None else {"progress": progress}
        if self.encoder is not None:
            from embedding.encoder import encode

            extra["init"] = encode(self.encoder, images)
        return (self.project_fn or project)(
            self.G, images, seed=[stable_seed(self.seed, h) for h in photo_sha256], perceptual=self.perceptual,
            device=self.device, mixed_precision=self.mixed_precision, stats=self.statistics(), **self.settings,
            **extra)

    def statistics(self) -> Any:
        if self.stats is None:
            from embedding.projection import latent_statistics

            self.stats = latent_statistics(self.G, samples=int(self.settings.get("w_avg_samples", 10000)),
                                           device=self.device)
        return self.stats


@dataclass
class Plan:
    """done: photo hash -> its stored result; batches: the other photos, one per content, hashed,
    sorted by hash; failures: photos that cannot be read; hashes: photo_id -> hash."""

    done: dict[str, ProjectedPhoto]
    batches: list[list[PhotoInput]]
    failures: list[PhotoFailure]
    hashes: dict[str, str]


@dataclass
class BatchRun:
    """Results in input order (failed photos left out) and every failure, with counts."""

    run_key: str
    provenance: dict[str, Any]
    results: list[ProjectedPhoto] = field(default_factory=list)
    failures: list[PhotoFailure] = field(default_factory=list)
    projected: int = 0
    reused: int = 0
    shards_written: list[str] = field(default_factory=list)


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
    The one preprocessing of every projected photo: the batch driver and photo scoring both
    call it, so an uploaded photo gets the latent the flow would give it.
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


def shard_paths(shard_dir: str | os.PathLike, key: str) -> list[Path]:
    """The shards of a run key in `shard_dir`, by name."""
    return sorted(Path(shard_dir).glob(f"shard-{key[:16]}-*.npz"))


def read_shard(path: str | os.PathLike) -> tuple[dict[str, Any], list[ProjectedPhoto]]:
    """(metadata: the provenance and run_key, one result per photo) of a shard."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        cols = {name: data[name] for name in data.files if name != "meta"}
    rows = [ProjectedPhoto(photo_id=str(pid), photo_sha256=str(sha), latent=cols["latent"][i].astype(np.float32),
                           w=cols["w"][i].astype(np.float32), **{f: float(cols[f][i]) for f in LOSS_FIELDS},
                           reused=True)
            for i, (pid, sha) in enumerate(zip(cols["photo_id"], cols["photo_sha256"], strict=True))]
    return meta, rows


def plan(projection: Projection, photos: Sequence[PhotoInput], *, shard_dir: str | os.PathLike, batch_size: int,
         warn: Callable[[str], None] | None = None) -> Plan:
    """What is done (in shards of the projection's key) and what is left, in batches.

    Raises:
        ValueError: batch_size below 1, or a photo_id given twice.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ids = [p.photo_id for p in photos]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise ValueError(f"photo_id values must be unique; repeated: {', '.join(dup)}")
    todo = Plan({}, [], [], {})
    for p in photos:
        try:
            todo.hashes[p.photo_id] = p.sha256 or sha256_regular_file(p.path, root=p.root)
        except OSError as exc:
            todo.failures.append(PhotoFailure(p.photo_id, p.path, f"cannot read file: {exc.strerror or exc}"))
    key = projection.key
    for path in shard_paths(shard_dir, key):
        try:
            meta, rows = read_shard(path)
        except Exception as exc:  # noqa: BLE001 - a damaged shard is recomputed, never trusted
            (warn or (lambda msg: None))(f"ignoring unreadable shard {path.name}: {type(exc).__name__}: {exc}")
            continue
        if meta.get("run_key") == key:
            todo.done.update((r.photo_sha256, r) for r in rows)
    pending: dict[str, PhotoInput] = {}
    for p in photos:
        h = todo.hashes.get(p.photo_id)
        if h is not None and h not in todo.done and h not in pending:  # same bytes under two names: once
            pending[h] = dataclasses.replace(p, sha256=h)
    todo_list = [pending[h] for h in sorted(pending)]
    todo.batches = [todo_list[i:i + batch_size] for i in range(0, len(todo_list), batch_size)]
    return todo


def project_batch(projection: Projection, batch: Sequence[PhotoInput], *, shard_dir: str | os.PathLike,
                  progress: Callable[[int, int], None] | None = None) -> tuple[Path | None, list[PhotoFailure]]:
    """Project one planned batch (photos with their sha256) and write its shard; returns the shard
    (None when no photo could be decoded) and the photos that could not be. progress(step, steps):
    the optimisation's progress."""
    unplanned = [p.photo_id for p in batch if not p.sha256]
    if unplanned:  # the hash seeds the photo and names it in the shard: never guessed here
        raise ValueError(f"photos without a sha256 (plan() gives every photo its hash): {', '.join(unplanned[:3])}")
    images, good, failures = [], [], []
    for p in batch:
        try:
            images.append(load_photo(p.path, resolution=projection.G.img_resolution, root=p.root))
            good.append(p)
        except ValueError as exc:
            failures.append(PhotoFailure(p.photo_id, p.path, str(exc)))
    if not good:
        return None, failures
    hashes = [str(p.sha256) for p in good]
    res = projection.run(np.stack(images), hashes, progress=progress)
    key = projection.key
    arrays = {"photo_id": np.array([p.photo_id for p in good]), "photo_sha256": np.array(hashes),
              "latent": np.asarray(res.latents), "w": np.asarray(res.w),
              **{f: np.asarray(getattr(res, f)) for f in LOSS_FIELDS}}
    path = Path(shard_dir) / f"shard-{key[:16]}-{hashlib.sha256(''.join(sorted(hashes)).encode()).hexdigest()[:16]}.npz"
    buf = io.BytesIO()
    # the array names are result fields, never savez's allow_pickle; numpy's stub cannot know that
    np.savez(buf, meta=np.array(json.dumps({**projection.provenance, "run_key": key}, default=str)),
             **arrays)  # type: ignore[arg-type]
    write_bytes_atomic(path, buf.getvalue())
    return path, failures


def project_photos(projection: Projection, photos: Sequence[PhotoInput], *, shard_dir: str | os.PathLike,
                   batch_size: int, progress: Callable[[int, int], None] | None = None,
                   warn: Callable[[str], None] | None = None) -> BatchRun:
    """Project photo files batch by batch, reusing every photo already in a shard of this run.

    Args:
        photos: photo_ids must be unique.
        shard_dir: where the shards live (created if missing).
        progress: progress(photos_done, photos_total), at the start (photos reused) and after each batch.
        warn: receives one-line warnings (damaged shards); default: ignored.

    Returns:
        BatchRun: results in input order, failures with reasons, counts, shards written.
    """
    todo = plan(projection, photos, shard_dir=shard_dir, batch_size=batch_size, warn=warn)
    run = BatchRun(run_key=projection.key, provenance={**projection.provenance, "run_key": projection.key},
                   failures=list(todo.failures))
    done, failed = todo.done, set[str]()

    def report() -> None:
        if progress is not None:
            progress(sum(todo.hashes[i] in done or todo.hashes[i] in failed for i in todo.hashes), len(todo.hashes))

    run.reused = sum(h in done for h in todo.hashes.values())
    report()
    first_of = {p.sha256: p.photo_id for batch in todo.batches for p in batch}
    for batch in todo.batches:
        path, failures = project_batch(projection, batch, shard_dir=shard_dir)
        run.failures += failures
        failed.update(todo.hashes[f.photo_id] for f in failures)
        if path is not None:
            fresh = read_shard(path)[1]
            done.update((r.photo_sha256, dataclasses.replace(r, reused=False)) for r in fresh)
            run.shards_written.append(path.name)
            run.projected += len(fresh)
        report()
    for p in photos:
        h = todo.hashes.get(p.photo_id)
        if h in done:
            run.results.append(dataclasses.replace(done[h], photo_id=p.photo_id))
        elif h in failed and first_of[h] != p.photo_id:
            # same bytes as a photo that failed to decode: same failure, reported under this id too
            run.failures.append(PhotoFailure(p.photo_id, p.path, f"same content as {first_of[h]}, which could not "
                                                                  "be decoded"))
    return run
