"""A directory of photos -> OUT_DIR/<photo_id>.png + OUT_DIR/manifest.csv, in parallel processes.

Every input file (a name with an image extension) ends in exactly one manifest row, aligned or
quarantined. Only plain files inside IN_DIR are opened: a link, a hard link, a FIFO, a device or
a socket with an image name is quarantined as `unreadable`, unread. A row is reused, and its
photo not touched, when the source bytes, the aligner version, the options and the model files
are unchanged (and the PNG on disk is the one the row names), so a rerun redoes nothing. Files
are written to a temporary name and renamed, and the manifest is checkpointed the same way, so a
crash leaves whole files and a manifest that names only whole files; the next run redoes what is
missing.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from embedding.align import reasons as R
from embedding.align.config import ALIGNER_VERSION, AlignConfig
from embedding.align.decode import IMAGE_EXTENSIONS, decode_image, read_source
from embedding.align.detect import ModelSet
from embedding.align.pipeline import Aligner
from embedding.align.reasons import AlignRejected
from embedding.fileio import sha256_file, sha256_regular_file
from embedding.fileio import write_bytes_atomic as _write_atomic

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = (
    "photo_id", "source_path", "source_sha256", "source_bytes", "status", "reason", "message",
    "output_file", "output_sha256", "output_size",
    "source_width", "source_height", "source_format", "source_mode", "decode_notes",
    "detector", "detector_score", "faces_detected", "faces_usable", "faces_weak", "dominance",
    "face_left", "face_top", "face_right", "face_bottom",
    "landmark_model", "landmark_model_sha256", "detector_model_sha256", "landmarks", "quad", "transform",
    "eye_left_x", "eye_left_y", "eye_right_x", "eye_right_y",
    "aligner_version", "config_fingerprint",
)
# Reasons that depend on the file's bytes and the options only, so they are safe to reuse.
_CACHEABLE_REASONS = frozenset(R.ALL_REASONS) - {R.UNREADABLE, R.INTERNAL_ERROR, R.DUPLICATE_PHOTO_ID}
_CHECKPOINT_EVERY_S = 10.0


class BatchInputError(ValueError):
    """The input or output directory is unusable; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class BatchResult:
    rows: list[dict[str, str]]
    manifest_path: Path
    reused: int
    ignored: list[str]          # names in IN_DIR without an image extension (not photos)

    @property
    def counts(self) -> Counter:
        return Counter(r["reason"] or r["status"] for r in self.rows)

    @property
    def aligned(self) -> int:
        return sum(r["status"] == "aligned" for r in self.rows)

    @property
    def quarantined(self) -> int:
        return sum(r["status"] == "quarantined" for r in self.rows)


def list_inputs(in_dir: Path) -> tuple[list[Path], list[str]]:
    """(photo paths, ignored names): entries whose name ends in an image extension are photos,
    whatever they turn out to be (a directory or a dangling link named x.jpg is quarantined)."""
    photos, ignored = [], []
    in_dir = Path(os.path.abspath(in_dir))  # absolute but not resolved: a link keeps its name
    for entry in sorted(os.scandir(in_dir), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
            photos.append(Path(in_dir) / entry.name)
        else:
            ignored.append(entry.name)
    return photos, ignored


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_path(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def _source_sha256(path: Path, root: Path) -> str:
    """sha256 of a source file in `root`; AlignRejected('unreadable') with the reason if it cannot,
    or may not, be read (a link, a FIFO, ... is refused unopened)."""
    try:
        return sha256_regular_file(path, root=root)
    except OSError:
        read_source(path, root=root)  # raises AlignRejected with the precise reason
        raise AlignRejected(R.UNREADABLE, f"{path}: cannot read") from None  # it became readable in between


def encode_png(image: np.ndarray) -> bytes:
    """(S, S, 3) uint8 -> PNG bytes (deterministic: no timestamps, fixed compression)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def _json_points(a: np.ndarray) -> str:
    return json.dumps([[round(float(v), 3) for v in row] for row in np.asarray(a)])


def _base_row(path: Path, photo_id: str, aligner: Aligner | None, config: AlignConfig,
              fingerprint: str) -> dict[str, str]:
    row = dict.fromkeys(MANIFEST_COLUMNS, "")
    row.update(photo_id=photo_id, source_path=str(path), output_size=str(config.output_size),
               aligner_version=ALIGNER_VERSION, config_fingerprint=fingerprint)
    if aligner is not None:
        det = aligner.models.detector
        row.update(detector=aligner.detector_name, landmark_model=Path(aligner.models.landmarks.path).name,
                   landmark_model_sha256=aligner.models.landmarks.sha256,
                   detector_model_sha256=det.sha256 if det is not None else "")
    return row


def _add_details(row: dict[str, str], details: dict) -> None:
    for key in ("faces_detected", "faces_usable", "faces_weak", "dominance"):
        if key in details:
            row[key] = str(details[key])
    if "width" in details:
        row["source_width"], row["source_height"] = str(details["width"]), str(details["height"])


def process_one(path: Path, photo_id: str, out_dir: Path, aligner: Aligner, *,
                root: Path | None = None) -> dict[str, str]:
    """Align one file and write <photo_id>.png; always returns a manifest row, never raises.

    root: the input folder `path` must be a plain file inside (default: its own folder).
    """
    row = _base_row(path, photo_id, aligner, aligner.config, aligner.fingerprint)
    try:
        data = read_source(path, root=root)
        row["source_sha256"], row["source_bytes"] = _sha256_bytes(data), str(len(data))
        decoded = decode_image(data, max_pixels=aligner.config.max_pixels)
        row.update(source_width=str(decoded.width), source_height=str(decoded.height),
                   source_format=decoded.format, source_mode=decoded.mode, decode_notes=";".join(decoded.notes))
        face = aligner.align(decoded.rgb)
        png = encode_png(face.image)
        d = face.detection
        row.update(
            status="aligned", output_file=f"{photo_id}.png", output_sha256=_sha256_bytes(png),
            detector=face.detector or row["detector"], detector_score=f"{d.score:.4f}",
            face_left=str(d.left), face_top=str(d.top), face_right=str(d.right), face_bottom=str(d.bottom),
            landmarks=_json_points(face.landmarks),
            quad=_json_points(face.quad), transform=json.dumps([[float(v) for v in r] for r in face.transform]),
            eye_left_x=_fmt(face.eyes_out[0, 0]), eye_left_y=_fmt(face.eyes_out[0, 1]),
            eye_right_x=_fmt(face.eyes_out[1, 0]), eye_right_y=_fmt(face.eyes_out[1, 1]))
        _add_details(row, face.counts)
        _write_atomic(out_dir / f"{photo_id}.png", png)
    except AlignRejected as rej:
        row.update(status="quarantined", reason=rej.reason, message=rej.message)
        _add_details(row, rej.details)
    except Exception as exc:  # noqa: BLE001 - one bad photo must never stop the batch
        row.update(status="quarantined", reason=R.INTERNAL_ERROR, message=f"{type(exc).__name__}: {exc}",
                   output_file="", output_sha256="")
    return row


_WORKER_ALIGNER: Aligner | None = None


def _init_worker(config: AlignConfig, models: ModelSet) -> None:
    global _WORKER_ALIGNER
    _WORKER_ALIGNER = Aligner(config, models)


def _work(job: tuple[str, str, str, str]) -> dict[str, str]:
    path, photo_id, out_dir, root = job
    assert _WORKER_ALIGNER is not None
    return process_one(Path(path), photo_id, Path(out_dir), _WORKER_ALIGNER, root=Path(root))


def read_manifest(path: Path) -> dict[str, dict[str, str]]:
    """photo_id -> row of an existing manifest ({} if absent or unreadable)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return {r["photo_id"]: r for r in csv.DictReader(fh) if r.get("photo_id")}
    except (OSError, csv.Error, KeyError, UnicodeDecodeError):
        return {}


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    """Write rows (sorted by photo_id) atomically with the stdlib csv module."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in sorted(rows, key=lambda r: r["photo_id"]):
        writer.writerow({k: r.get(k, "") for k in MANIFEST_COLUMNS})
    _write_atomic(path, buf.getvalue().encode("utf-8"))


def _reusable(old: dict[str, str] | None, path: Path, source_sha256: str, fingerprint: str, out_dir: Path) -> bool:
    if old is None or old.get("config_fingerprint") != fingerprint or old.get("source_path") != str(path):
        return False
    if old.get("aligner_version") != ALIGNER_VERSION or old.get("source_sha256") != source_sha256:
        return False
    if old.get("status") == "quarantined":
        if old.get("reason") not in _CACHEABLE_REASONS:
            return False
    elif old.get("status") == "aligned":
        if _sha256_path(out_dir / f"{old['photo_id']}.png") != old.get("output_sha256"):
            return False
    else:
        return False
    return True


def align_directory(in_dir: Path | str, out_dir: Path | str, *, config: AlignConfig,
                    workers: int | None = None, models: ModelSet | None = None,
                    aligner: Aligner | None = None,
                    progress: Callable[[dict[str, str]], None] | None = None,
                    on_written: Callable[[dict[str, str]], None] | None = None) -> BatchResult:
    """Align every photo in `in_dir` into `out_dir`; returns the manifest rows.

    The one alignment driver: `facesurv align` and the nightly flow both run it, so both reuse
    a photo by the same rule (see the module doc). workers: processes (default config.workers;
    1 runs in this process, reusing `aligner` when given, which must have been built with
    `config`). progress is called with each finished row, reused ones included; on_written with
    each row aligned or quarantined in this run, after its PNG is written and before the manifest
    names it. Raises BatchInputError for an unusable directory and models.ModelFileError for a
    missing or wrong model file; bad photos never raise.
    """
    if aligner is not None:
        if aligner.config != config:
            raise ValueError("align_directory: `aligner` was built with another config than `config`")
        models = aligner.models
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise BatchInputError(f"{in_dir}: not a directory of photos")
    if out_dir.resolve() == in_dir.resolve():
        raise BatchInputError(f"{out_dir}: the output directory must differ from the input directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = config.workers if workers is None else workers
    models = models if models is not None else ModelSet.resolve(config)
    fingerprint = config.output_fingerprint(models.sha256s())
    manifest_path = out_dir / MANIFEST_NAME
    old_rows = read_manifest(manifest_path)
    photos, ignored = list_inputs(in_dir)

    stems = Counter(p.stem for p in photos)
    done: dict[str, dict[str, str]] = {}
    jobs: list[tuple[str, str, str, str]] = []
    reused = 0
    for path in photos:
        photo_id = path.stem
        if stems[photo_id] > 1:
            row = _base_row(path, photo_id, None, config, fingerprint)
            others = sorted(p.name for p in photos if p.stem == photo_id and p != path)
            row.update(status="quarantined", reason=R.DUPLICATE_PHOTO_ID,
                       message=f"{path.name} and {', '.join(others)} would both be {photo_id}.png: rename one")
            done[f"{photo_id}\0{path.name}"] = row
            continue
        try:
            source_sha256 = _source_sha256(path, in_dir)
        except AlignRejected as rej:   # no worker needed to say that a path cannot be read
            row = _base_row(path, photo_id, None, config, fingerprint)
            row.update(status="quarantined", reason=rej.reason, message=rej.message)
            done[photo_id] = row
            continue
        if _reusable(old_rows.get(photo_id), path, source_sha256, fingerprint, out_dir):
            done[photo_id] = old_rows[photo_id]
            reused += 1
        else:
            jobs.append((str(path), photo_id, str(out_dir), str(in_dir)))
    for row in done.values():
        if progress:
            progress(row)

    last_checkpoint = time.monotonic()

    def finish(row: dict[str, str]) -> None:
        nonlocal last_checkpoint
        done[row["photo_id"]] = row
        if on_written:
            on_written(row)
        if progress:
            progress(row)
        if time.monotonic() - last_checkpoint > _CHECKPOINT_EVERY_S:
            # pending photos keep their old rows, which stay true until their PNG is replaced
            # (and a replaced PNG no longer matches the old row's hash, so it is redone)
            pending = {pid: r for pid, r in old_rows.items() if pid not in done}
            write_manifest(manifest_path, list({**pending, **done}.values()))
            last_checkpoint = time.monotonic()

    if jobs and (workers <= 1 or len(jobs) == 1):
        aligner = aligner if aligner is not None else Aligner(config, models)
        for src, pid, dest, root in jobs:
            finish(process_one(Path(src), pid, Path(dest), aligner, root=Path(root)))
    elif jobs:
        ctx = multiprocessing.get_context("spawn")  # no fork of a parent that may hold torch threads
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx,
                                    initializer=_init_worker, initargs=(config, models)) as pool:
            futures = {pool.submit(_work, job): job for job in jobs}
            for fut in cf.as_completed(futures):
                src, pid, _, _ = futures[fut]
                try:
                    row = fut.result()
                except Exception as exc:  # noqa: BLE001 - a crashed worker loses its photos, not the batch
                    row = _base_row(Path(src), pid, None, config, fingerprint)
                    row.update(status="quarantined", reason=R.INTERNAL_ERROR,
                               message=f"worker process failed: {type(exc).__name__}: {exc}")
                finish(row)

    rows = sorted(done.values(), key=lambda r: (r["photo_id"], r["source_path"]))
    aligned_ids = {r["photo_id"] for r in rows if r["status"] == "aligned"}
    # remove PNGs that no longer stand for an aligned photo, before the manifest stops naming them
    for photo_id in (set(old_rows) | {p.stem for p in photos}) - aligned_ids:
        stale = out_dir / f"{photo_id}.png"
        if stale.is_file():
            stale.unlink()
    write_manifest(manifest_path, rows)
    for leftover in out_dir.glob(".*.tmp"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
    return BatchResult(rows=rows, manifest_path=manifest_path, reused=reused, ignored=ignored)
