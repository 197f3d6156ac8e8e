"""`facesurv project` reads only plain files inside its input folder: a linked, hard-linked or
special photo ends in failures with the reason, unread, and the other photos are projected."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedding.project_batch import PhotoInput, Projection, load_photo, project_photos
from facesurv.cli.project_cmd import list_photos
from ground.errors import DataError

from .conftest import FAST


def _png(img, path: Path) -> None:
    arr = ((img.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    Image.fromarray(arr, mode="RGB").save(path)


@pytest.fixture()
def aligned(rendered_photos, tmp_path: Path) -> Path:
    """A folder of aligned photos: one plain, the rest links or special files (a face outside)."""
    img = rendered_photos[1]
    (tmp_path / "outside").mkdir()
    _png(img[1], tmp_path / "outside" / "face.png")
    d = tmp_path / "aligned"
    d.mkdir()
    _png(img[0], d / "plain.png")
    os.symlink(tmp_path / "outside" / "face.png", d / "outlink.png")
    os.symlink("plain.png", d / "inlink.png")
    os.link(tmp_path / "outside" / "face.png", d / "hard.png")
    os.mkfifo(d / "pipe.png")
    os.symlink(os.devnull, d / "null.png")
    return d


SETTINGS = dict(space="w", loss="mse", **FAST)
EXPECTED = {"outlink": "is a symbolic link", "inlink": "is a symbolic link", "hard": "is a hard link",
            "pipe": "is a FIFO", "null": "is a symbolic link"}


@pytest.mark.timeout(120)
def test_links_and_special_files_fail_with_the_reason(tiny_generator, aligned: Path, tmp_path: Path) -> None:
    photos, quarantined = list_photos(aligned)
    assert sorted(pid for pid, _ in photos) == sorted(["plain", *EXPECTED]) and quarantined == 0
    run = project_photos(Projection(*tiny_generator, SETTINGS, seed=0),
                         [PhotoInput(pid, path, root=str(aligned)) for pid, path in photos],
                         shard_dir=tmp_path / "shards", batch_size=2)
    assert [r.photo_id for r in run.results] == ["plain"]
    reasons = {f.photo_id: f.reason for f in run.failures}
    assert set(reasons) == set(EXPECTED)
    for photo_id, text in EXPECTED.items():
        assert text in reasons[photo_id] and "copy" in reasons[photo_id], reasons[photo_id]


def test_load_photo_refuses_a_link(aligned: Path) -> None:
    with pytest.raises(ValueError, match="outlink.png: is a symbolic link, which is never followed"):
        load_photo(aligned / "outlink.png", resolution=16)
    assert load_photo(aligned / "plain.png", resolution=16).shape == (3, 16, 16)


def _manifest(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["photo_id", "status", "output_file"])
        writer.writeheader()
        writer.writerows(rows)


def test_a_linked_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "aligned").mkdir()
    _manifest(tmp_path / "elsewhere.csv", [{"photo_id": "x", "status": "aligned", "output_file": "x.png"}])
    os.symlink(tmp_path / "elsewhere.csv", tmp_path / "aligned" / "manifest.csv")
    with pytest.raises(DataError, match="manifest.csv: is a symbolic link, which is never followed"):
        list_photos(tmp_path / "aligned")


def test_a_manifest_row_pointing_outside_fails_unread(tiny_generator, aligned: Path, tmp_path: Path) -> None:
    _manifest(aligned / "manifest.csv", [{"photo_id": "esc", "status": "aligned",
                                          "output_file": "../outside/face.png"}])
    photos, _ = list_photos(aligned)
    run = project_photos(Projection(*tiny_generator, SETTINGS, seed=0),
                         [PhotoInput(pid, path, root=str(aligned)) for pid, path in photos],
                         shard_dir=tmp_path / "shards", batch_size=2)
    assert not run.results
    assert [f.photo_id for f in run.failures] == ["esc"] and "is outside" in run.failures[0].reason
