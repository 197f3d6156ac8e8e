"""The directory driver: one state per input, reasons, reuse on rerun, atomic writes, the CLI."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedding.align import (
    AlignConfig,
    ModelFileError,
    align_directory,
    canonical_eye_positions,
    read_manifest,
    resolve_model,
)

GOOD = ("astronaut", "gray", "rotated", "cmyk", "alpha", "sixteen", "palette")
EXPECTED = {
    "folder": "unreadable", "dangling": "unreadable", "notes": "not_an_image", "empty": "not_an_image",
    "trunc": "truncated", "huge": "too_large", "broken": "corrupt", "dogs": "no_face",
}


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def inbox(faces_dir: Path, tmp_path_factory) -> Path:
    """Good photos in every pixel format, bad files of every kind, a clash of photo ids."""
    d = tmp_path_factory.mktemp("inbox")
    astro = Image.open(faces_dir / "astronaut.png").convert("RGB")
    astro.save(d / "astronaut.png")
    astro.convert("L").save(d / "gray.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6      # stored turned a quarter left: the viewer turns it right
    astro.transpose(Image.Transpose.ROTATE_90).save(d / "rotated.jpg", quality=95, exif=exif)
    astro.convert("CMYK").save(d / "cmyk.jpg", quality=95)
    rgba = astro.convert("RGBA")
    alpha = np.full(astro.size[::-1], 255, np.uint8)
    alpha[:40] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(d / "alpha.png")
    Image.fromarray(np.asarray(astro.convert("L")).astype(np.uint16) * 257).save(d / "sixteen.png")
    astro.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(d / "palette.png")
    shutil.copyfile(faces_dir / "dogs.jpg", d / "dogs.jpg")
    buf = io.BytesIO()
    astro.save(buf, "JPEG")
    (d / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    png = (d / "astronaut.png").read_bytes()
    (d / "broken.png").write_bytes(png[:300] + bytes(range(256)) * 4 + png[1324:])
    (d / "huge.png").write_bytes(_png_header_only(9000, 9000))
    (d / "notes.jpg").write_text("not a photo\n")
    (d / "empty.png").write_bytes(b"")
    (d / "folder.jpg").mkdir()
    os.symlink(d / "nowhere.jpg", d / "dangling.jpg")
    shutil.copyfile(faces_dir / "astronaut.png", d / "twin.png")
    (d / "twin.jpg").write_bytes(buf.getvalue())
    (d / "README.txt").write_text("not an image extension: ignored, and reported as ignored\n")
    return d


@pytest.fixture(scope="module")
def config(small_config) -> AlignConfig:
    return dataclasses.replace(small_config, output_size=64, transform_size=256)


@pytest.fixture(scope="module")
def one(config, aligner):
    """An in-process aligner for `config` (loading the models costs about a second per Aligner)."""
    from embedding.align import Aligner

    return Aligner(config, aligner.models)


@pytest.fixture(scope="module")
def batch(inbox, config, tmp_path_factory):
    out = tmp_path_factory.mktemp("aligned")
    return align_directory(inbox, out, config=config, workers=2), out


def test_every_input_ends_in_exactly_one_state(batch, inbox) -> None:
    result, out = batch
    by_id: dict[str, list[dict]] = {}
    for r in result.rows:
        by_id.setdefault(r["photo_id"], []).append(r)
    inputs = sorted(p.name for p in inbox.iterdir() if p.name != "README.txt")
    assert sorted(Path(r["source_path"]).name for r in result.rows) == inputs
    for photo_id in GOOD:
        (row,) = by_id[photo_id]
        assert row["status"] == "aligned", (photo_id, row["reason"], row["message"])
    for photo_id, reason in EXPECTED.items():
        (row,) = by_id[photo_id]
        assert (row["status"], row["reason"]) == ("quarantined", reason), (photo_id, row["message"])
        assert row["message"]
    twins = by_id["twin"]
    assert [r["reason"] for r in twins] == ["duplicate_photo_id"] * 2
    assert "rename one" in twins[0]["message"]
    assert result.ignored == ["README.txt"]
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(GOOD)
    assert not list(out.glob(".*"))     # no temporary files left behind


def test_manifest_has_the_promised_columns(batch) -> None:
    _, out = batch
    with open(out / "manifest.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    for col in ("photo_id", "source_path", "source_sha256", "status", "reason", "message", "detector",
                "detector_score", "face_left", "face_top", "face_right", "face_bottom", "landmarks",
                "transform", "quad", "aligner_version", "landmark_model_sha256"):
        assert col in reader.fieldnames
    gray = next(r for r in rows if r["photo_id"] == "gray")
    assert gray["decode_notes"] == "grayscale" and len(gray["source_sha256"]) == 64


@pytest.mark.parametrize("photo_id", GOOD)
def test_every_pixel_format_aligns_onto_the_eye_positions(batch, photo_id) -> None:
    row = next(r for r in batch[0].rows if r["photo_id"] == photo_id)
    eyes = np.array([[float(row["eye_left_x"]), float(row["eye_left_y"])],
                     [float(row["eye_right_x"]), float(row["eye_right_y"])]])
    assert np.abs(eyes - canonical_eye_positions(64)).max() < 0.02 * 64


def test_decode_notes_say_what_was_converted(batch) -> None:
    notes = {r["photo_id"]: r["decode_notes"] for r in batch[0].rows}
    assert notes["rotated"] == "exif_orientation=6"
    assert notes["cmyk"] == "cmyk"
    assert notes["alpha"] == "alpha_composited_on_white"
    assert notes["sixteen"] == "16bit"
    assert notes["palette"] == "palette"
    rows = {r["photo_id"]: r for r in batch[0].rows}
    assert (rows["rotated"]["source_width"], rows["rotated"]["source_height"]) == ("512", "512")


def test_rerun_reuses_everything_cacheable(batch, inbox, config) -> None:
    result, out = batch
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = align_directory(inbox, out, config=config, workers=2)
    # unreadable paths and id clashes are always looked at again; everything else is reused
    assert again.reused == len(result.rows) - 4
    assert again.rows == result.rows
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_changed_source_or_options_are_redone_and_stale_outputs_removed(inbox, config, one, tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copyfile(inbox / "astronaut.png", src / "p1.png")
    shutil.copyfile(inbox / "gray.jpg", src / "p2.jpg")
    out = tmp_path / "out"
    first = align_directory(src, out, config=config, workers=1, aligner=one)
    assert first.aligned == 2 and (out / "p1.png").exists()
    # p1 is replaced by a faceless photo: quarantined, and its old PNG must go
    shutil.copyfile(inbox / "dogs.jpg", src / "p1.png")
    second = align_directory(src, out, config=config, workers=1, aligner=one)
    assert second.reused == 1
    assert {r["photo_id"]: r["reason"] for r in second.rows} == {"p1": "no_face", "p2": ""}
    assert not (out / "p1.png").exists()
    # a photo removed from the input leaves the manifest and the output
    (src / "p2.jpg").unlink()
    third = align_directory(src, out, config=config, workers=1, aligner=one)
    assert [r["photo_id"] for r in third.rows] == ["p1"] and not (out / "p2.png").exists()
    # another output size: nothing can be reused
    fourth = align_directory(src, out, config=dataclasses.replace(config, output_size=32), workers=1)
    assert fourth.reused == 0


def test_on_written_sees_each_photo_of_this_run_before_the_manifest_names_it(inbox, config, one, tmp_path) -> None:
    """The nightly flow's crash test kills the run there: a PNG written, the manifest not yet."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copyfile(inbox / "astronaut.png", src / "p1.png")
    out = tmp_path / "out"
    align_directory(src, out, config=config, workers=1, aligner=one)
    shutil.copyfile(inbox / "gray.jpg", src / "p2.jpg")
    seen = []

    def written(row: dict) -> None:
        pid = row["photo_id"]
        seen.append((pid, (out / f"{pid}.png").exists(), pid in read_manifest(out / "manifest.csv")))

    again = align_directory(src, out, config=config, workers=1, aligner=one, on_written=written)
    assert again.reused == 1 and seen == [("p2", True, False)]     # the reused p1 is not news


def test_a_damaged_or_foreign_png_in_the_output_is_redone(inbox, config, one, tmp_path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    shutil.copyfile(inbox / "astronaut.png", src / "p.png")
    out = tmp_path / "out"
    align_directory(src, out, config=config, workers=1, aligner=one)
    good = (out / "p.png").read_bytes()
    (out / "p.png").write_bytes(good[:100])      # as if a crash had cut it (it cannot: rename)
    again = align_directory(src, out, config=config, workers=1, aligner=one)
    assert again.reused == 0 and (out / "p.png").read_bytes() == good


def test_a_crash_while_writing_leaves_whole_files(inbox, config, one, tmp_path, monkeypatch) -> None:
    import embedding.align.batch as batch_mod

    src = tmp_path / "in"
    src.mkdir()
    shutil.copyfile(inbox / "astronaut.png", src / "p.png")
    out = tmp_path / "out"
    align_directory(src, out, config=config, workers=1, aligner=one)
    manifest = (out / "manifest.csv").read_bytes()
    png = (out / "p.png").read_bytes()
    shutil.copyfile(inbox / "gray.jpg", src / "q.jpg")

    def crash(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch_mod.os, "fsync", crash)
    with pytest.raises(OSError, match="No space left"):
        align_directory(src, out, config=config, workers=1, aligner=one)
    # q's PNG failed whole (its row says so), and the manifest write failed whole: the old one stands
    assert not (out / "q.png").exists()
    assert (out / "manifest.csv").read_bytes() == manifest and (out / "p.png").read_bytes() == png
    assert not list(out.glob(".*"))
    monkeypatch.undo()
    done = align_directory(src, out, config=config, workers=1, aligner=one)
    assert done.reused == 1 and done.aligned == 2


def test_long_runs_checkpoint_the_manifest(inbox, config, one, tmp_path, monkeypatch) -> None:
    import embedding.align.batch as batch_mod

    src = tmp_path / "in"
    src.mkdir()
    for name in ("astronaut.png", "gray.jpg", "dogs.jpg"):
        shutil.copyfile(inbox / name, src / name)
    out = tmp_path / "out"
    monkeypatch.setattr(batch_mod, "_CHECKPOINT_EVERY_S", -1.0)   # checkpoint after every photo
    seen: list[list[str]] = []

    def on_disk(row: dict) -> None:
        seen.append(sorted(read_manifest(out / "manifest.csv")))

    align_directory(src, out, config=config, workers=1, aligner=one, progress=on_disk)
    # each checkpoint names the photos finished so far, so an interrupted run keeps its progress
    assert seen[1:] == [["astronaut"], ["astronaut", "dogs"]]


def test_failing_worker_processes_lose_their_photos_not_the_batch(inbox, config, one, tmp_path) -> None:
    from embedding.align import ModelInfo, ModelSet

    src = tmp_path / "in"
    src.mkdir()
    for name in ("astronaut.png", "gray.jpg"):
        shutil.copyfile(inbox / name, src / name)
    # a model file that vanished after it was verified: every worker fails to start
    gone = dataclasses.replace(one.models.landmarks, path=str(tmp_path / "vanished.dat"))
    assert isinstance(gone, ModelInfo)
    result = align_directory(src, tmp_path / "out", config=config, workers=2,
                             models=ModelSet(landmarks=gone, detector=None))
    assert [(r["photo_id"], r["reason"]) for r in result.rows] == [("astronaut", "internal_error"),
                                                                  ("gray", "internal_error")]
    assert all(r["message"].startswith("worker process failed") for r in result.rows)
    assert (tmp_path / "out" / "manifest.csv").exists()


def test_bad_directories_are_refused(tmp_path: Path, config) -> None:
    from embedding.align import BatchInputError

    with pytest.raises(BatchInputError, match="not a directory of photos"):
        align_directory(tmp_path / "missing", tmp_path / "out", config=config)
    with pytest.raises(BatchInputError, match="must differ from the input directory"):
        align_directory(tmp_path, tmp_path, config=config)


def test_tiny_faces_are_quarantined(faces_dir, aligner) -> None:
    from embedding.align import Aligner, AlignRejected, align_image, decode_image, read_source

    strict = Aligner(dataclasses.replace(aligner.config, min_face_px=120), aligner.models)
    rgb = decode_image(read_source(faces_dir / "astronaut.png"), max_pixels=10**7).rgb
    with pytest.raises(AlignRejected, match=r"the face is 9\d px, under align\.min_face_px=120") as info:
        align_image(rgb, aligner=strict)
    assert info.value.reason == "face_too_small"


def test_model_files_are_verified(tmp_path: Path) -> None:
    info = resolve_model("landmarks68")
    assert info.sha256 == "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f"
    assert info.size == 99_693_937 and "300-W" in info.licence
    assert resolve_model("landmarks5").licence.startswith("CC0")
    fake = tmp_path / "shape_predictor_68_face_landmarks.dat"
    fake.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="is not the published shape_predictor_68_face_landmarks.dat"):
        resolve_model("landmarks68", fake)
    with pytest.raises(ModelFileError, match="does not exist"):
        resolve_model("landmarks68", tmp_path / "absent.dat")
    with pytest.raises(ValueError, match="unknown model role 'landmarks7'"):
        resolve_model("landmarks7")


def test_config_mirrors_params(params) -> None:
    from ground.config import AlignParams

    assert {f.name for f in dataclasses.fields(AlignParams)} == {f.name for f in dataclasses.fields(AlignConfig)}
    assert dataclasses.asdict(AlignConfig.from_object(params.align)) == dataclasses.asdict(params.align)
    with pytest.raises(ValueError, match="multi_face must be 'reject' or 'best'"):
        AlignConfig(multi_face="all")


def test_cli_aligns_a_folder(inbox, workspace, tmp_path, capsys) -> None:
    from facesurv.cli import main

    src = tmp_path / "in"
    src.mkdir()
    for name in ("astronaut.png", "dogs.jpg", "notes.jpg"):
        shutil.copyfile(inbox / name, src / name)
    out = tmp_path / "out"
    code = main(["align", str(src), str(out), "--workspace", str(workspace.root), "--output-size", "64",
                 "--workers", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "1 aligned, 2 quarantined (no_face 1, not_an_image 1)" in captured.out
    assert "quarantined dogs: no_face" in captured.err
    rows = read_manifest(out / "manifest.csv")
    assert rows["astronaut"]["output_size"] == "64" and rows["astronaut"]["status"] == "aligned"
    assert Image.open(out / "astronaut.png").size == (64, 64)


def test_cli_refuses_a_missing_folder(workspace, tmp_path, capsys) -> None:
    from facesurv.cli import main

    code = main(["align", str(tmp_path / "nope"), str(tmp_path / "out"), "--workspace", str(workspace.root)])
    assert code == 2
    assert "error:" in capsys.readouterr().err
