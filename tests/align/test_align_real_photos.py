"""Real photographs (../shared/faces): single faces align onto FFHQ's eye positions, group
photos follow the multi-face policy, the dog photo has no face."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from embedding.align import (
    AlignRejected,
    align_bytes,
    align_image,
    apply_transform,
    canonical_eye_positions,
    decode_image,
    eye_centres,
    read_source,
)

SINGLE = ("astronaut", "Tom_Cruise_avp_2014_4")
GROUPS = ("2007_007763", "2008_001009", "2008_001322", "2008_002079", "2008_002470", "2008_002506",
          "2008_004176", "2008_007676", "2009_004587", "bald_guys")
# Under the repository's policy (best, dominance_ratio 2.0, min_detector_score 0.5): the group
# photos whose largest face has at least twice the next one's area keep it.
DOMINANT = {"2008_001009": 2.04, "bald_guys": 2.07}


def _rows(faces_batch) -> dict[str, dict[str, str]]:
    return {r["photo_id"]: r for r in faces_batch[0].rows}


def _eyes_close(eyes: np.ndarray, size: int) -> float:
    """Largest distance (fraction of the output size) of the eyes from FFHQ's canonical positions."""
    return float(np.abs(eyes - canonical_eye_positions(size)).max() / size)


def test_every_photo_has_exactly_one_row_and_readme_is_ignored(faces_batch, faces_dir) -> None:
    result, out = faces_batch
    photos = sorted(p.stem for p in faces_dir.iterdir() if p.suffix != ".md")
    assert [r["photo_id"] for r in result.rows] == photos
    assert result.ignored == ["README.md"]
    with open(out / "manifest.csv", newline="") as fh:
        assert [r["photo_id"] for r in csv.DictReader(fh)] == photos
    pngs = sorted(p.stem for p in out.glob("*.png"))
    assert pngs == sorted(r["photo_id"] for r in result.rows if r["status"] == "aligned")


@pytest.mark.parametrize("photo_id", SINGLE)
def test_single_face_photos_align_onto_ffhq_eye_positions(faces_batch, photo_id) -> None:
    row = _rows(faces_batch)[photo_id]
    out = faces_batch[1]
    assert row["status"] == "aligned", row["message"]
    size = int(row["output_size"])
    image = np.asarray(Image.open(out / row["output_file"]))
    assert image.shape == (size, size, 3)
    assert hashlib.sha256((out / row["output_file"]).read_bytes()).hexdigest() == row["output_sha256"]
    # the landmarks recorded in the manifest, carried through the recorded transform
    landmarks = np.array(json.loads(row["landmarks"]))
    assert landmarks.shape == (68, 2)
    eyes = apply_transform(np.array(json.loads(row["transform"])), np.stack(eye_centres(landmarks)))
    assert _eyes_close(eyes, size) < 0.02
    recorded = np.array([[float(row["eye_left_x"]), float(row["eye_left_y"])],
                         [float(row["eye_right_x"]), float(row["eye_right_y"])]])
    np.testing.assert_allclose(recorded, eyes, atol=1e-3)
    assert row["detector"] == "dlib_hog" and float(row["detector_score"]) > 0.5
    assert row["landmark_model_sha256"].startswith("fbdc2cb8")


def test_astronaut_ignores_the_weak_mission_patch_detection(faces_batch) -> None:
    row = _rows(faces_batch)["astronaut"]
    assert row["faces_detected"] == "2" and row["faces_weak"] == "1" and row["faces_usable"] == "1"


@pytest.mark.slow
@pytest.mark.parametrize("landmarks", [68, 5])
def test_eyes_redetected_in_the_aligned_image_sit_on_ffhq_positions(faces_dir, params, landmarks) -> None:
    """Independent of the recorded transform: find the eyes again in the output pixels."""
    from embedding.align import AlignConfig, Aligner

    config = dataclasses.replace(AlignConfig.from_object(params.align), output_size=256, transform_size=1024,
                                 landmarks=landmarks)
    aligner = Aligner(config)
    checker = Aligner(dataclasses.replace(config, landmarks=68))
    for photo_id, ext in (("astronaut", "png"), ("Tom_Cruise_avp_2014_4", "jpg")):
        rgb = decode_image(read_source(faces_dir / f"{photo_id}.{ext}"), max_pixels=config.max_pixels).rgb
        face = align_image(rgb, aligner=aligner)
        assert _eyes_close(face.eyes_out, 256) < 0.02, photo_id
        again = checker.align(face.image)   # detect + landmark the aligned output itself
        found = np.stack(eye_centres(again.landmarks))
        assert _eyes_close(found, 256) < 0.02, (photo_id, found)


def test_dogs_have_no_face(faces_batch) -> None:
    row = _rows(faces_batch)["dogs"]
    assert (row["status"], row["reason"]) == ("quarantined", "no_face")
    assert row["message"] and row["output_file"] == ""


@pytest.mark.parametrize("photo_id", GROUPS)
def test_group_photos_follow_the_best_policy(faces_batch, photo_id) -> None:
    row = _rows(faces_batch)[photo_id]
    assert int(row["faces_detected"]) - int(row["faces_weak"]) >= 2
    if photo_id in DOMINANT:
        assert row["status"] == "aligned", row["message"]
        assert float(row["dominance"]) == pytest.approx(DOMINANT[photo_id], abs=0.01)
        assert int(row["face_right"]) - int(row["face_left"]) >= 48
    else:
        assert (row["status"], row["reason"]) == ("quarantined", "multiple_faces")
        assert float(row["dominance"]) < 2.0
        assert "dominance_ratio=2.0" in row["message"]


@pytest.fixture(scope="module")
def reject_aligner(aligner):
    from embedding.align import Aligner

    return Aligner(dataclasses.replace(aligner.config, multi_face="reject"), aligner.models)


@pytest.mark.parametrize("photo_id", [g for g in GROUPS if g != "bald_guys"])  # bald_guys: slow, same path
def test_group_photos_are_refused_under_the_reject_policy(faces_dir, reject_aligner, photo_id) -> None:
    reject = reject_aligner
    rgb = decode_image(read_source(faces_dir / f"{photo_id}.jpg"), max_pixels=10**8).rgb
    with pytest.raises(AlignRejected, match="align.multi_face is 'reject'") as info:
        align_image(rgb, aligner=reject)
    assert info.value.reason == "multiple_faces"


def test_single_image_api_for_serving(faces_dir, aligner) -> None:
    ok = align_bytes((faces_dir / "astronaut.png").read_bytes(), aligner=aligner)
    assert ok.status == "aligned" and ok.image.shape == (128, 128, 3) and ok.image.dtype == np.uint8
    assert ok.face.landmarks.shape == (68, 2)
    dogs = align_bytes((faces_dir / "dogs.jpg").read_bytes(), aligner=aligner)
    assert (dogs.status, dogs.reason, dogs.image) == ("quarantined", "no_face", None)
    junk = align_bytes(b"GIF89a not really", aligner=aligner)
    assert (junk.status, junk.reason) == ("quarantined", "corrupt")


def test_rerun_redoes_nothing_and_gives_identical_outputs(faces_batch, faces_dir, small_config) -> None:
    from embedding.align import align_directory

    result, out = faces_batch
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = align_directory(faces_dir, out, config=small_config, workers=2)
    assert again.reused == len(result.rows)
    assert again.rows == result.rows
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before


def test_large_photos_are_detected_on_a_reduced_copy(faces_dir, aligner) -> None:
    from embedding.align import Aligner

    rgb = decode_image(read_source(faces_dir / "astronaut.png"), max_pixels=10**8).rgb
    big = np.asarray(Image.fromarray(rgb).resize((1536, 1536), Image.Resampling.LANCZOS))
    reduced = Aligner(dataclasses.replace(aligner.config, detect_max_pixels=300_000), aligner.models)
    face = align_image(big, aligner=reduced)
    full = align_image(rgb, aligner=aligner)
    # the box comes back in the big photo's pixels: about 3x the face box in the 512 px original
    assert face.detection.size == pytest.approx(3 * full.detection.size, rel=0.2)  # HOG pyramid steps
    assert _eyes_close(face.eyes_out, 128) < 0.02


@pytest.mark.slow
def test_mmod_cnn_detector_aligns_the_astronaut(faces_dir, aligner) -> None:
    from embedding.align import Aligner

    cnn = Aligner(dataclasses.replace(aligner.config, detector="cnn", upsample=0))
    assert cnn.detector_name == "dlib_mmod_cnn" and cnn.models.detector.sha256.startswith("4cb19393")
    rgb = decode_image(read_source(faces_dir / "astronaut.png"), max_pixels=10**8).rgb
    face = align_image(rgb, aligner=cnn)
    assert _eyes_close(face.eyes_out, 128) < 0.02
