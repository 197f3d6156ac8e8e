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

Only plain files inside the inbox are ever opened (embedding.fileio.open_regular_file): a
symbolic link (to a file or a folder, inside or outside), a hard link, a device, a FIFO, a
socket or a linked `photos/`, `prealigned/` or `clinical/` folder is listed in
`InboxBatch.rejected` with the reason, unread, and reported again on every run until it is
replaced by the file itself. The other files of the batch go on as usual.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from embedding.fileio import UnsafeFileError, open_regular_file, sha256_file, sha256_regular_file
from ground.atomic import atomic_path
from ground.errors import DataError

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class InboxFile:
    path: Path
    sha256: str
    kind: str  # "photo" | "prealigned" | "clinical"
    inbox: Path | None = None  # the inbox it was found in: `ingest` reads it from there only

    @property
    def photo_id(self) -> str:
        return self.path.stem


@dataclass(frozen=True)
class InboxRejection:
    """An inbox entry that was not read: `reason` says what it is and how to fix it."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class InboxBatch:
    photos: tuple[InboxFile, ...]
    clinical: tuple[InboxFile, ...]
    prealigned: tuple[InboxFile, ...] = ()
    rejected: tuple[InboxRejection, ...] = ()  # quarantined, unread; never marked done

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


def _listing(inbox: Path, sub: str, rejected: list[InboxRejection]) -> list[Path]:
    """The visible entries of inbox/<sub>, by name; [] when it is absent. A linked folder is
    rejected, not listed: its files could be anywhere."""
    d = inbox / sub
    try:
        mode = os.lstat(d).st_mode
    except FileNotFoundError:
        return []
    if stat.S_ISLNK(mode):
        rejected.append(InboxRejection(d, f"{sub}/ is a symbolic link to a folder, which is never followed; "
                                          f"make {sub}/ a real folder and move the files themselves into it"))
        return []
    if not stat.S_ISDIR(mode):
        return []
    return sorted(p for p in d.iterdir() if not p.name.startswith("."))


def _hashed(inbox: Path, path: Path, kind: str, rejected: list[InboxRejection]) -> InboxFile | None:
    """The file with its content hash, or None (and a rejection) when it may not or cannot be read."""
    try:
        return InboxFile(path, sha256_regular_file(path, root=inbox), kind, inbox)
    except UnsafeFileError as exc:
        rejected.append(InboxRejection(path, exc.reason))
    except FileNotFoundError:
        pass  # removed since the listing: nothing to do
    except OSError as exc:
        rejected.append(InboxRejection(path, f"cannot be read ({exc.strerror or exc}); fix its permissions"))
    return None


def scan_inbox(inbox: Path | str, *, state_path: Path | str) -> InboxBatch:
    """Photos and clinical files in `inbox` not processed by a successful run yet.

    Returns an InboxBatch (sorted by name; empty when the inbox is missing or has nothing new).
    Entries that are not plain files inside the inbox are in `rejected`, with the reason.

    Raises:
        DataError: two new photos share a photo_id (file stem) with different content.
    """
    inbox, done = Path(inbox), _load_state(Path(state_path))
    rejected: list[InboxRejection] = []
    photos: dict[str, InboxFile] = {}
    for kind, sub in (("photo", "photos"), ("prealigned", "prealigned")):
        for path in _listing(inbox, sub, rejected):
            if path.suffix.lower() not in PHOTO_SUFFIXES:
                continue
            f = _hashed(inbox, path, kind, rejected)
            if f is None or f.sha256 in done:
                continue
            if f.photo_id in photos and photos[f.photo_id].sha256 != f.sha256:
                raise DataError(f"{inbox}: {photos[f.photo_id].path.relative_to(inbox)} and {path.relative_to(inbox)} "
                                f"share the photo_id {f.photo_id!r}; rename one (the file stem is the photo_id)")
            photos[f.photo_id] = f
    csvs = [inbox / "clinical.csv"] if os.path.lexists(inbox / "clinical.csv") else []
    csvs += [p for p in _listing(inbox, "clinical", rejected) if p.name.endswith(".csv")]
    clinical: list[InboxFile] = []
    for path in csvs:
        f = _hashed(inbox, path, "clinical", rejected)
        if f is not None and f.sha256 not in done:
            clinical.append(f)
    return InboxBatch(tuple(f for f in photos.values() if f.kind == "photo"), tuple(clinical),
                      tuple(f for f in photos.values() if f.kind == "prealigned"), tuple(rejected))


_SUBFOLDER = {"photo": "photos", "prealigned": "prealigned", "clinical": "clinical"}


def _destination(root: Path, f: InboxFile) -> Path:
    name = f"{f.sha256[:16]}.csv" if f.kind == "clinical" else f.path.name
    return root / _SUBFOLDER[f.kind] / name


def _up_to_date(f: InboxFile, dst: Path) -> bool:
    if f.kind == "clinical":
        return dst.exists()  # named by content
    return dst.exists() and sha256_file(dst) == f.sha256


def _copy_atomic(src: BinaryIO, dst: Path) -> None:
    with atomic_path(dst) as tmp, tmp.open("wb") as out:
        shutil.copyfileobj(src, out)


def _drop_other_names(root: Path, photo_id: str, keep: Path) -> None:
    """A photo re-delivered under another name (a.jpg after a.png): keep only the new one."""
    for other_sub in ("photos", "prealigned"):
        d = root / other_sub
        for other in d.glob(f"{photo_id}.*") if d.is_dir() else []:
            if other != keep and other.stem == photo_id:
                other.unlink()


def ingest(batch: InboxBatch, data_root: Path | str) -> dict[str, list[str]]:
    """Copy the batch into the data repository's working tree; idempotent.

    Photos go to `<data_root>/photos/<name>` (a changed photo replaces the old version,
    which DVC keeps); clinical files to `<data_root>/clinical/<sha256[:16]>.csv`, named by
    content so an identical re-delivery is a no-op.

    Pre-aligned photos go to `<data_root>/prealigned/<name>`.

    Each source is read only if it is still a plain file inside its inbox; every file that is
    gets copied before a refused one is reported, and each copy is whole or absent.

    Returns {"photos": [...], "prealigned": [...], "clinical": [...]}: data-repo relative paths.

    Raises:
        DataError: a file could not be copied (it became a link, vanished, ... since the scan);
            the others were copied, and a new run scans the inbox again.
    """
    root = Path(data_root)
    written: dict[str, list[str]] = {"photos": [], "prealigned": [], "clinical": []}
    failed: list[str] = []
    for f in (*batch.photos, *batch.prealigned, *batch.clinical):
        dst = _destination(root, f)
        try:  # checked again as it is opened: it may have become a link since the scan
            src = open_regular_file(f.path, root=f.inbox)
        except OSError as exc:  # the data repository keeps what it had
            failed.append(str(exc) if isinstance(exc, UnsafeFileError) else f"{f.path}: {exc.strerror or exc}")
            continue
        with src:
            if not _up_to_date(f, dst):
                _copy_atomic(src, dst)
        if f.kind != "clinical":
            _drop_other_names(root, f.photo_id, dst)
        written[_SUBFOLDER[f.kind]].append(f"{_SUBFOLDER[f.kind]}/{dst.name}")
    if failed:
        raise DataError(f"{len(failed)} inbox file(s) changed after the scan and were not copied "
                        f"(the other files were), first: {failed[0]}; run again to rescan the inbox")
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
