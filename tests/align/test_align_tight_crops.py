"""Tightly cropped faces (the face fills the frame, as in UTKFace): HOG alone finds nothing, the
padded search and the MMOD CNN fallback find the face, and everything stays in source pixels.

The crops are cut here from the real photos of ../shared/faces (to the bounding box of the face's
68 landmarks); no UTKFace photo is used (benchmarks/align_utkface.py measures those).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from PIL import Image

from embedding.align import (
    AlignConfig,
    AlignRejected,
    align_directory,
    align_image,
    apply_transform,
    canonical_eye_positions,
    decode_image,
    eye_centres,
    ffhq,
    read_source,
)
from embedding.align.detect import edge_extended

PHOTOS = {"astronaut": "astronaut.png", "Tom_Cruise_avp_2014_4": "Tom_Cruise_avp_2014_4.jpg"}
LEGACY = {"detect_pad": 0.0, "fallback_detector": "none"}   # the aligner before tight crops were handled


def _variant(aligner, **options):
    from embedding.align import Aligner

    return Aligner(dataclasses.replace(aligner.config, **options), aligner.models)


@pytest.fixture(scope="module")
def legacy(aligner):
    return _variant(aligner, **LEGACY)


@pytest.fixture(scope="module")
def padded_only(aligner):
    return _variant(aligner, fallback_detector="none")


@pytest.fixture(scope="module")
def cnn_only(aligner):
    return _variant(aligner, detect_pad=0.0)


@pytest.fixture(scope="module")
def tight(faces_dir, legacy):
    """photo_id -> (full photo, its AlignedFace, tight crop, (x, y) of the crop in the photo)."""
    out = {}
    for photo_id, name in PHOTOS.items():
        rgb = decode_image(read_source(faces_dir / name), max_pixels=10**8).rgb
        full = align_image(rgb, aligner=legacy)
        lo = np.floor(full.landmarks.min(axis=0)).astype(int)
        hi = np.ceil(full.landmarks.max(axis=0)).astype(int)
        crop = np.ascontiguousarray(rgb[lo[1]:hi[1], lo[0]:hi[0]])
        out[photo_id] = (rgb, full, crop, lo)
    return out


def _side(quad: np.ndarray) -> float:
    return math.hypot(*(quad[3] - quad[0]))


def _eyes_close(eyes: np.ndarray, size: int) -> float:
    return float(np.abs(eyes - canonical_eye_positions(size)).max() / size)


def _check_same_face(face, full, offset: np.ndarray, size: int) -> None:
    """The crop's face, mapped back by the crop offset, is the photo's face: same landmarks and
    quad (to 2% of the quad side), and the recorded transform puts its eyes on FFHQ's."""
    side = _side(full.quad)
    assert np.abs(face.landmarks + offset - full.landmarks).max() < 0.02 * side
    assert np.abs(face.quad + offset - full.quad).max() < 0.02 * side
    assert _eyes_close(face.eyes_out, size) < 0.02
    np.testing.assert_allclose(face.eyes_out, apply_transform(face.transform, np.stack(eye_centres(face.landmarks))))
    assert face.image.shape == (size, size, 3) and face.image.dtype == np.uint8


@pytest.mark.parametrize("photo_id", PHOTOS)
def test_tight_crop_defeats_hog_alone(tight, legacy, photo_id) -> None:
    _, full, crop, _ = tight[photo_id]
    assert full.detector == "dlib_hog"        # the whole photo: found by the first search
    with pytest.raises(AlignRejected) as info:
        align_image(crop, aligner=legacy)
    assert info.value.reason == "no_face"


@pytest.mark.parametrize("photo_id", PHOTOS)
def test_padded_search_finds_the_tight_crop_in_source_pixels(tight, padded_only, photo_id) -> None:
    _, full, crop, offset = tight[photo_id]
    face = align_image(crop, aligner=padded_only)
    assert face.detector == "dlib_hog_padded"
    d = face.detection
    # the box is in the crop's pixels, reaching past its edges, where the photo's box is
    assert min(d.left, d.top) < 0 or d.right > crop.shape[1] or d.bottom > crop.shape[0]
    box = np.array([d.left, d.top, d.right, d.bottom]) + np.tile(offset, 2)
    full_box = np.array([full.detection.left, full.detection.top, full.detection.right, full.detection.bottom])
    assert np.abs(box - full_box).max() < 0.15 * full.detection.size
    _check_same_face(face, full, offset, padded_only.config.output_size)


@pytest.mark.parametrize("photo_id", PHOTOS)
def test_cnn_fallback_finds_the_tight_crop(tight, cnn_only, photo_id) -> None:
    _, full, crop, offset = tight[photo_id]
    face = align_image(crop, aligner=cnn_only)
    assert face.detector == "dlib_mmod_cnn" and face.detection.score >= 0.5
    _check_same_face(face, full, offset, cnn_only.config.output_size)


def test_repository_options_align_tight_crops(tight, aligner) -> None:
    for photo_id, (_, full, crop, offset) in tight.items():
        face = align_image(crop, aligner=aligner)
        assert face.detector in ("dlib_hog_padded", "dlib_mmod_cnn"), photo_id
        _check_same_face(face, full, offset, aligner.config.output_size)


def test_faceless_photos_are_still_quarantined_after_every_search(faces_dir, aligner) -> None:
    rgb = decode_image(read_source(faces_dir / "dogs.jpg"), max_pixels=10**8).rgb
    flat = np.full((150, 150, 3), 128, np.uint8)
    for img in (rgb, flat):
        with pytest.raises(AlignRejected) as info:
            align_image(img, aligner=aligner)
        assert info.value.reason == "no_face"
        assert "align.detect_pad=0.35" in info.value.message and "MMOD CNN fallback" in info.value.message


def test_batch_records_which_search_found_the_face(tight, faces_dir, aligner, tmp_path) -> None:
    _, full, crop, offset = tight["astronaut"]
    inbox = tmp_path / "in"
    inbox.mkdir()
    Image.fromarray(crop).save(inbox / "tight.png")
    Image.open(faces_dir / "astronaut.png").convert("RGB").save(inbox / "whole.png")
    (inbox / "dogs.jpg").write_bytes((faces_dir / "dogs.jpg").read_bytes())
    result = align_directory(inbox, tmp_path / "out", config=aligner.config, workers=1, aligner=aligner)
    rows = {r["photo_id"]: r for r in result.rows}
    assert (rows["tight"]["status"], rows["whole"]["status"]) == ("aligned", "aligned")
    assert rows["whole"]["detector"] == "dlib_hog"
    assert rows["tight"]["detector"] in ("dlib_hog_padded", "dlib_mmod_cnn")
    assert (rows["dogs"]["status"], rows["dogs"]["reason"], rows["dogs"]["detector"]) == ("quarantined", "no_face",
                                                                                          "dlib_hog")
    assert rows["tight"]["source_width"] == str(crop.shape[1])
    assert int(rows["tight"]["face_left"]) + offset[0] == pytest.approx(full.detection.left,
                                                                        abs=0.15 * full.detection.size)


def test_edge_extended_is_edge_padding_to_any_distance() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(edge_extended(img, left=-4, top=-9, right=5 + 3, bottom=7 + 20),
                                  np.pad(img, ((9, 20), (4, 3), (0, 0)), mode="edge"))
    np.testing.assert_array_equal(edge_extended(img, left=1, top=2, right=4, bottom=6), img[2:6, 1:4])
    np.testing.assert_array_equal(edge_extended(img, left=-10, top=-10, right=-8, bottom=-9),
                                  np.broadcast_to(img[0, 0], (1, 2, 3)))


def test_landmarks_are_placed_on_the_edge_extended_photo(tight, aligner) -> None:
    from embedding.align import Detection

    _, _, crop, _ = tight["astronaut"]
    models = aligner._face_models
    det = models.detect(crop, pad=0.35)[0]
    assert det.left < 0 or det.top < 0                      # the box reaches past the crop
    found = models.landmarks(crop, det, edge_extended_window=True)
    far = 3 * max(crop.shape)                                # edge-extended far beyond any feature
    big = edge_extended(crop, left=-far, top=-far, right=crop.shape[1] + far, bottom=crop.shape[0] + far)
    moved = Detection(det.left + far, det.top + far, det.right + far, det.bottom + far, det.score)
    np.testing.assert_array_equal(found, models.landmarks(big, moved) - far)


def test_padded_detection_maps_boxes_back_to_source_pixels(faces_dir, aligner) -> None:
    rgb = decode_image(read_source(faces_dir / "astronaut.png"), max_pixels=10**8).rgb
    models = aligner._face_models
    plain, padded = models.detect(rgb)[0], models.detect(rgb, pad=0.35)[0]
    np.testing.assert_allclose([padded.left, padded.top, padded.right, padded.bottom],
                               [plain.left, plain.top, plain.right, plain.bottom], atol=2)
    # a large photo is reduced first, so that the padded copy stays within detect_max_pixels
    big = np.asarray(Image.fromarray(rgb).resize((1536, 1536), Image.Resampling.LANCZOS))
    reduced = _variant(aligner, detect_max_pixels=300_000)._face_models
    found = reduced.detect(big, pad=0.35)[0]
    assert found.size == pytest.approx(3 * plain.size, rel=0.2)
    assert (found.left + found.right) / 2 == pytest.approx(3 * (plain.left + plain.right) / 2, abs=0.1 * found.size)


def test_small_quads_skip_the_supersampling_and_large_ones_keep_it() -> None:
    rng = np.random.default_rng(1)
    img = np.asarray(Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).resize((200, 200)))
    small = ffhq.quad_from_points(np.array([80.0, 90]), np.array([120.0, 90]), np.array([100.0, 130]))  # side 160
    kw = {"output_size": 256, "transform_size": 1024, "enable_padding": True}
    a = ffhq.align_to_quad(img, small, supersample_enlarged=True, **kw)
    b = ffhq.align_to_quad(img, small, supersample_enlarged=False, **kw)
    assert not np.array_equal(a, b)
    assert np.abs(a.astype(float) - b).mean() < 1.5          # the supersampling only smoothed an enlargement
    np.testing.assert_array_equal(b, ffhq.align_to_quad(img, small, output_size=256, transform_size=256,
                                                        enable_padding=True))
    large = ffhq.quad_from_points(np.array([40.0, 60]), np.array([160.0, 60]), np.array([100.0, 180]))  # side 480
    kw = {"output_size": 128, "transform_size": 512, "enable_padding": True}
    np.testing.assert_array_equal(ffhq.align_to_quad(img, large, supersample_enlarged=True, **kw),
                                  ffhq.align_to_quad(img, large, supersample_enlarged=False, **kw))


def test_new_options_are_checked() -> None:
    for bad, match in (({"detect_pad": 1.5}, "detect_pad must be between 0 and 1"),
                       ({"fallback_detector": "mmod"}, "fallback_detector must be 'none' or 'cnn'"),
                       ({"fallback_pixels": 100}, "fallback_pixels must be >= 10000")):
        with pytest.raises(ValueError, match=match):
            AlignConfig(**bad)
