"""Aligned photos as a training set: files -> one (N, 3, R, R) float tensor in [-1, 1].

The same decoding and resize as projection (`embedding.project_batch.load_photo`), so a generator
is trained on exactly the pixels it will later be asked to reproduce. Unreadable files are
returned with their reason, never silently dropped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedding.project_batch import load_photo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def photo_files(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in `folder` (png, jpg, jpeg; any case), sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of aligned photos; run `facesurv align` first")
    return sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_images(paths: Sequence[str | os.PathLike], *, resolution: int, root: str | os.PathLike | None = None,
                progress: Callable[[int, int], Any] | None = None) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """Decode square aligned photos at `resolution` (Lanczos) -> ((N, 3, R, R) float32 in [-1, 1], failures).

    failures: (path, reason) for every file that is not a readable square image (or not a plain
    file inside `root`); the others are all kept, in input order. progress(done, total) is called
    every 100 files and at the end.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4:
        raise ValueError(f"resolution must be a whole number >= 4, got {resolution!r}")
    rows: list[np.ndarray] = []
    failures: list[tuple[str, str]] = []
    for i, path in enumerate(paths, 1):
        try:
            rows.append(load_photo(path, resolution=resolution, root=root))
        except ValueError as exc:
            failures.append((str(path), str(exc)))
        if progress is not None and (i % 100 == 0 or i == len(paths)):
            progress(i, len(paths))
    if not rows:
        return torch.empty((0, 3, resolution, resolution)), failures
    return torch.from_numpy(np.stack(rows)), failures
