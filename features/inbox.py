"""The inbox: where new photos and clinical records arrive between nightly runs.

Layout (the same as `facesurv cohort synth` writes, so a synthetic cohort can be dropped in):

    <inbox>/photos/<photo_id>.(png|jpg|jpeg)        raw photos: aligned by the flow
    <inbox>/prealigned/<photo_id>.(png|jpg|jpeg)    declared already aligned (rendered portraits)
    <inbox>/clinical.csv  and/or  <inbox>/clinical/*.csv

Files are recognised by content hash, not by name or time: a file is new when its sha256
is not in the state file written at the end of the last successful run. Nothing is moved
out of the inbox, so a crashed run leaves the inbox as it was and the next run sees the
same files again; `ingest` is idempotent, and the latents and features downstream are
keyed by content hash, so seeing a file twice never embeds or writes it twice.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from embedding.fileio import sha256_file
from facesurv.atomic import atomic_path
from facesurv.errors import DataError

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class InboxFile:
    path: Path
    sha256: str
    kind: str  # "photo" | "prealigned" | "clinical"

    @property
    def photo_id(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class InboxBatch:
    photos: tuple[InboxFile, ...]
    clinical: tuple[InboxFile, ...]
    prealigned: tuple[InboxFile, ...] = ()

    def __len__(self) -> int:
        return len(self.photos) + len(self.prealigned) + len(self.clinical)

    @property
    def files(self) -> tuple[InboxFile, ...]:
        return (*self.photos, *self.prealigned, *self.clinical)


def _load_state(state_path: Path) -> dict[str, str]:
    try:
        return dict(json.loads(state_path.read_text(encoding="utf-8"))["done"])
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{state_path}: unreadable inbox state ({exc}); delete it to rescan the whole inbox") from None


def scan_inbox(inbox: Path | str, *, state_path: Path | str) -> InboxBatch:
    """Photos and clinical files in `inbox` not processed by a successful run yet.

    Returns an InboxBatch (sorted by name; empty when the inbox is missing or has nothing new).

    Raises:
        DataError: two new photos share a photo_id (file stem) with different content.
    """
    inbox, done = Path(inbox), _load_state(Path(state_path))
    photos: dict[str, InboxFile] = {}
    for kind, sub in (("photo", "photos"), ("prealigned", "prealigned")):
        d = inbox / sub
        for path in sorted(d.iterdir()) if d.is_dir() else []:
            if not path.is_file() or path.suffix.lower() not in PHOTO_SUFFIXES or path.name.startswith("."):
                continue
            f = InboxFile(path, sha256_file(path), kind)
            if f.sha256 in done:
                continue
            if f.photo_id in photos and photos[f.photo_id].sha256 != f.sha256:
                raise DataError(f"{inbox}: {photos[f.photo_id].path.relative_to(inbox)} and {path.relative_to(inbox)} "
                                f"share the photo_id {f.photo_id!r}; rename one (the file stem is the photo_id)")
            photos[f.photo_id] = f
    clinical: list[InboxFile] = []
    csvs = [inbox / "clinical.csv"] if (inbox / "clinical.csv").is_file() else []
    if (inbox / "clinical").is_dir():
        csvs += sorted(p for p in (inbox / "clinical").glob("*.csv") if not p.name.startswith("."))
    for path in csvs:
        f = InboxFile(path, sha256_file(path), "clinical")
        if f.sha256 not in done:
            clinical.append(f)
    return InboxBatch(tuple(f for f in photos.values() if f.kind == "photo"), tuple(clinical),
                      tuple(f for f in photos.values() if f.kind == "prealigned"))


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def ingest(batch: InboxBatch, data_root: Path | str) -> dict[str, list[str]]:
    """Copy the batch into the data repository's working tree; idempotent.

    Photos go to `<data_root>/photos/<name>` (a changed photo replaces the old version,
    which DVC keeps); clinical files to `<data_root>/clinical/<sha256[:16]>.csv`, named by
    content so an identical re-delivery is a no-op.

    Pre-aligned photos go to `<data_root>/prealigned/<name>`.

    Returns {"photos": [...], "prealigned": [...], "clinical": [...]}: data-repo relative paths.
    """
    root = Path(data_root)
    written: dict[str, list[str]] = {"photos": [], "prealigned": [], "clinical": []}
    for f in (*batch.photos, *batch.prealigned):
        sub = "photos" if f.kind == "photo" else "prealigned"
        dst = root / sub / f.path.name
        for other_sub in ("photos", "prealigned"):
            d = root / other_sub
            for other in d.glob(f"{f.photo_id}.*") if d.is_dir() else []:
                if other != dst and other.stem == f.photo_id:  # re-delivered under another name: keep one
                    other.unlink()
        if not (dst.exists() and sha256_file(dst) == f.sha256):
            _copy_atomic(f.path, dst)
        written[sub].append(f"{sub}/{dst.name}")
    for f in batch.clinical:
        dst = root / "clinical" / f"{f.sha256[:16]}.csv"
        if not dst.exists():
            _copy_atomic(f.path, dst)
        written["clinical"].append(f"clinical/{dst.name}")
    return written


def mark_done(batch: InboxBatch, *, state_path: Path | str) -> int:
    """Record the batch as processed (call at the end of a successful run). Returns the count."""
    state_path = Path(state_path)
    done = _load_state(state_path)
    for f in batch.files:
        done[f.sha256] = f.path.name
    with atomic_path(state_path) as tmp:
        tmp.write_text(json.dumps({"done": dict(sorted(done.items()))}, indent=1), encoding="utf-8")
    return len(batch)


def inbox_dir(workspace_root: Path, configured: str) -> Path:
    """params.flows.inbox, relative to the workspace unless absolute."""
    p = Path(os.path.expanduser(configured))
    return p if p.is_absolute() else workspace_root / p
