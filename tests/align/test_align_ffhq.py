"""The FFHQ quad / crop / pad / transform math, on synthetic faces whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embedding.align import ffhq


def _face68(eye_left, eye_right, mouth_left, mouth_right) -> np.ndarray:
    """68 landmarks with the given eye centres and mouth corners (other points irrelevant)."""
    lm = np.zeros((68, 2))
    lm[36:42] = eye_left
    lm[42:48] = eye_right
    lm[48] = mouth_left
    lm[54] = mouth_right
    return lm


def _transform_points(points, angle_deg, scale, shift):
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.asarray(points, float) @ rot.T * scale + shift


def test_canonical_eye_positions_follow_from_the_quad() -> None:
    # upright face, eye-to-mouth = interocular: side 4e centred 0.1 m below the eyes
    eyes = ffhq.canonical_eye_positions(1024)
    np.testing.assert_allclose(eyes, [[0.375 * 1024 - 0.5, 0.475 * 1024 - 0.5],
                                      [0.625 * 1024 - 0.5, 0.475 * 1024 - 0.5]], atol=1e-9)


def test_quad_of_upright_face_is_the_published_geometry() -> None:
    # eyes 100 apart at y=0, mouth 100 below: x = (e + m) normalised * max(2e, 1.8m) = 200
    quad = ffhq.quad_from_points(np.array([-50.0, 0]), np.array([50.0, 0]), np.array([0.0, 100]))
    np.testing.assert_allclose(quad, [[-200, -190], [-200, 210], [200, 210], [200, -190]], atol=1e-9)
    # a long face: 1.8 m wins over 2 e
    quad = ffhq.quad_from_points(np.array([-50.0, 0]), np.array([50.0, 0]), np.array([0.0, 200]))
    assert math.hypot(*(quad[3] - quad[0])) == pytest.approx(2 * 1.8 * 200)


@pytest.mark.parametrize(("angle", "scale", "shift"), [(0, 1, (300, 200)), (25, 0.6, (120, 500)), (-40, 3.0, (900, 50))])
def test_eyes_land_on_canonical_positions_under_any_similarity(angle, scale, shift) -> None:
    base = [(-50, 0), (50, 0), (-40, 100), (40, 100)]
    el, er, ml, mr = _transform_points(base, angle, scale, np.array(shift))
    lm = _face68(el, er, ml, mr)
    matrix = ffhq.quad_to_output(ffhq.quad_from_landmarks(lm), output_size=256)
    eyes = ffhq.apply_transform(matrix, np.stack(ffhq.eye_centres(lm)))
    np.testing.assert_allclose(eyes, ffhq.canonical_eye_positions(256), atol=1e-6)


def _marker_image(h, w, points, radius):
    img = np.full((h, w, 3), 90, np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for (x, y), colour in zip(points, ((255, 0, 0), (0, 0, 255)), strict=True):
        img[(xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2] = colour
    return img


def _centroid(img, channel):
    other = [c for c in range(3) if c != channel]
    mask = (img[:, :, channel].astype(int) > 180) & (img[:, :, other].astype(int).max(axis=2) < 100)
    ys, xs = np.nonzero(mask)
    assert xs.size, "marker not found in the aligned image"
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize(
    ("h", "w", "centre", "angle", "scale", "padding"),
    [
        (900, 1200, (600, 420), 12, 2.0, False),   # big face: the shrink step runs (side 800 > 2 * 64)
        (400, 400, (90, 120), -20, 1.0, True),     # face at the corner: the quad leaves the photo, padding runs
    ],
)
def test_pixels_follow_the_quad(h, w, centre, angle, scale, padding) -> None:
    base = [(-50, 0), (50, 0), (-40, 100), (40, 100)]
    el, er, ml, mr = _transform_points(base, angle, scale, np.array(centre))
    img = _marker_image(h, w, [el, er], radius=6 * scale)
    lm = _face68(el, er, ml, mr)
    out = ffhq.align_to_quad(img, ffhq.quad_from_landmarks(lm), output_size=64, transform_size=256,
                             enable_padding=padding)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    expected = ffhq.canonical_eye_positions(64)
    np.testing.assert_allclose(_centroid(out, 0), expected[0], atol=0.6)
    np.testing.assert_allclose(_centroid(out, 2), expected[1], atol=0.6)


def test_padding_fills_outside_the_photo_and_no_padding_leaves_black() -> None:
    img = np.full((200, 200, 3), 150, np.uint8)
    lm = _face68((10, 20), (60, 20), (15, 70), (55, 70))   # the quad reaches far past the top-left
    quad = ffhq.quad_from_landmarks(lm)
    bare = ffhq.align_to_quad(img, quad, output_size=32, transform_size=128, enable_padding=False)
    padded = ffhq.align_to_quad(img, quad, output_size=32, transform_size=128, enable_padding=True)
    assert bare[0, 0].max() == 0                       # outside the photo, nothing to sample
    assert padded[0, 0].min() > 100                    # mirrored, blurred, faded to the median grey


def test_gaussian_blur_matches_scipy() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    img = rng.random((41, 67, 3)).astype(np.float32) * 255
    for sigma in (0.8, 3.5, 30.0):   # 30: the kernel is wider than the image (repeated mirroring)
        ref = ndimage.gaussian_filter(img.astype(np.float64), [sigma, sigma, 0], mode="reflect")
        np.testing.assert_allclose(ffhq.gaussian_blur(img, sigma), ref, atol=1e-3)


def test_five_point_quad_estimates_the_mouth_below_the_eyes() -> None:
    # 5-point layout: 0,1 corners of the image-right eye, 2,3 of the image-left eye, 4 nose
    lm5 = np.array([[70, 0], [60, 0], [-70, 0], [-60, 0], [0, 60]], float)
    quad = ffhq.quad_from_landmarks(lm5)
    eyes = ffhq.apply_transform(ffhq.quad_to_output(quad, output_size=100), np.stack(ffhq.eye_centres(lm5)))
    np.testing.assert_allclose(eyes[:, 0], [37.5 - 0.5, 62.5 - 0.5], atol=1e-6)
    assert eyes[0, 1] == pytest.approx(50 - 5 * ffhq.MOUTH_DROP / 2 - 0.5)


def test_bad_landmark_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"shape \(68, 2\) or \(5, 2\), got \(10, 2\)"):
        ffhq.quad_from_landmarks(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="degenerate landmarks"):
        ffhq.quad_from_landmarks(np.zeros((68, 2)))


def test_padding_matches_the_published_recipe() -> None:
    """Mirror pad, blend to a blurred copy (weight 3*mask+1), fade to the median (weight mask)."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    img = (rng.random((50, 70, 3)) * 255).astype(np.uint8)
    left, top, right, bottom, qsize = 12, 9, 15, 20, 120.0
    got = ffhq._pad_blurred(img, (left, top, right, bottom), qsize)
    ref = np.pad(img.astype(np.float64), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = ref.shape[:2]
    y, x = np.mgrid[:h, :w].astype(np.float64)
    mask = np.maximum(1 - np.minimum(x / left, (w - 1 - x) / right), 1 - np.minimum(y / top, (h - 1 - y) / bottom))
    mask = mask[:, :, None]
    ref += (ndimage.gaussian_filter(ref, [qsize * 0.02, qsize * 0.02, 0]) - ref) * np.clip(3 * mask + 1, 0, 1)
    ref += (np.median(ref, axis=(0, 1)) - ref) * np.clip(mask, 0, 1)
    assert got.shape == (50 + top + bottom, 70 + left + right, 3)
    assert np.abs(got.astype(int) - np.clip(np.rint(ref), 0, 255)).max() <= 1
    np.testing.assert_array_equal(got[top + 20:top + 30, left + 20:left + 40], img[20:30, 20:40])  # photo kept
