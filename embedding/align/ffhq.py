"""FFHQ-style alignment as pure functions (landmarks and pixels in, quad and pixels out).

This follows the procedure NVIDIA used to build FFHQ (its `recreate_aligned_images` step),
re-derived from the published description and written here from the math:

1. An oriented square ("quad") from the landmarks: eye centres e_l, e_r (means of the six
   points of each eye), mouth corners m_l, m_r. With a = e_r - e_l and b = mid(m) - mid(e),
   the quad's horizontal half-axis is x = a - rot(b) (rot turns b a quarter turn so that it
   points along a), normalised and scaled to max(2|a|, 1.8|b|); the vertical half-axis is x
   turned a quarter turn; the centre is mid(e) + 0.1 b. Side 2|x|.
2. Shrink: when the quad is at least 4 times the output size, downscale the photo by the whole
   factor floor(side / output / 2) first (a cheap antialias for the large reduction).
3. Crop to the quad's bounding box plus a border of 10% of the side (at least 3 px).
4. Pad: when the quad still leaves the photo, mirror-pad by at least 30% of the side, blur the
   padding (Gaussian, sigma 2% of the side) more the further it is from the photo, and fade
   it towards the photo's median colour.
5. Sample the quad into a transform_size square (bilinear), then resize to output_size
   (Lanczos): the supersampling keeps the result sharp and alias-free. When the quad is no
   larger than output_size (a small photo: the transform only enlarges, nothing can alias)
   and supersample_enlarged is off, the quad is sampled straight at output_size: on 200 px
   UTKFace crops that is 5x cheaper and about 0.1 grey level on average from the supersampled
   result. A quad larger than the output (every photo the shrink step reduces) is unaffected.

Coordinates are (x, y) pixel indices, the dlib landmark convention (pixel centres at integers).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

EYE_LEFT = slice(36, 42)    # the eye on the image's left (the subject's right eye)
EYE_RIGHT = slice(42, 48)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54

# 5-point model: indices 2,3 are the corners of the eye on the image's left, 0,1 of the other,
# 4 the base of the nose. There is no mouth, so the mouth midpoint is estimated at
# MOUTH_DROP interocular distances below the eye midpoint, perpendicular to the eye line
# (the mean over the 66 faces of ../shared/faces measured with the 68-point model; sd 0.13).
MOUTH_DROP = 1.085


def _rot90(v: np.ndarray) -> np.ndarray:
    # (x, y) -> (-y, x): with y pointing down, a quarter turn clockwise on screen
    return np.array([-v[1], v[0]], dtype=np.float64)


def quad_from_points(eye_left: np.ndarray, eye_right: np.ndarray, mouth_avg: np.ndarray) -> np.ndarray:
    """The FFHQ quad from the two eye centres and the mouth midpoint, each (2,) (x, y).

    Returns (4, 2) float64 corners in the order top-left, bottom-left, bottom-right, top-right
    (the order Pillow's QUAD transform takes).
    """
    eye_left = np.asarray(eye_left, dtype=np.float64)
    eye_right = np.asarray(eye_right, dtype=np.float64)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = np.asarray(mouth_avg, dtype=np.float64) - eye_avg
    # a minus b turned a quarter turn: both terms point along the eye line of an upright face
    x = eye_to_eye - _rot90(eye_to_mouth)
    norm = math.hypot(*x)
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("degenerate landmarks: eyes and mouth give no orientation")
    x = x / norm * max(math.hypot(*eye_to_eye) * 2.0, math.hypot(*eye_to_mouth) * 1.8)
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) dlib landmarks -> (4, 2) FFHQ quad (exact FFHQ); (5, 2) -> approximate quad."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape == (68, 2):
        mouth_avg = (lm[MOUTH_LEFT] + lm[MOUTH_RIGHT]) * 0.5
        return quad_from_points(lm[EYE_LEFT].mean(axis=0), lm[EYE_RIGHT].mean(axis=0), mouth_avg)
    if lm.shape == (5, 2):
        eye_left, eye_right = eye_centres(lm)
        a = eye_right - eye_left
        mouth_avg = (eye_left + eye_right) * 0.5 + _rot90(a) * MOUTH_DROP
        return quad_from_points(eye_left, eye_right, mouth_avg)
    raise ValueError(f"landmarks must have shape (68, 2) or (5, 2), got {lm.shape}")


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image-left eye centre, image-right eye centre), each (2,), from 68 or 5 landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape == (68, 2):
        return lm[EYE_LEFT].mean(axis=0), lm[EYE_RIGHT].mean(axis=0)
    if lm.shape == (5, 2):
        return lm[2:4].mean(axis=0), lm[0:2].mean(axis=0)
    raise ValueError(f"landmarks must have shape (68, 2) or (5, 2), got {lm.shape}")


def quad_to_output(quad: np.ndarray, *, output_size: int) -> np.ndarray:
    """(2, 3) similarity matrix taking source pixel (x, y, 1) to aligned-output pixel (x, y).

    Exact for the quad sampling; the shrink step shifts points by under half a shrunk pixel.
    """
    q = np.asarray(quad, dtype=np.float64)
    ex, ey = q[3] - q[0], q[1] - q[0]
    rows = np.stack([ex / (ex @ ex), ey / (ey @ ey)]) * output_size
    # the quad goes to Pillow +0.5 (pixel centres at half-integers there); output pixel index
    # = continuous coordinate - 0.5
    offset = -(rows @ q[0]) - 0.5
    return np.concatenate([rows, offset[:, None]], axis=1)


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(2, 3) matrix applied to (N, 2) points -> (N, 2)."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def canonical_eye_positions(output_size: int) -> np.ndarray:
    """Where FFHQ alignment puts the eye centres, (2, 2) (image-left eye, image-right eye).

    Derived by running the quad construction on an upright face whose eye-to-mouth distance
    equals its interocular distance: x = 0.375 and 0.625 of the size, y = 0.475. (The eyes land
    exactly on those x whenever eye-to-mouth <= 10/9 of interocular; y is 0.5 - 0.025 * ratio.)
    """
    eyes = np.array([[-50.0, 0.0], [50.0, 0.0]])
    quad = quad_from_points(eyes[0], eyes[1], np.array([0.0, 100.0]))
    return apply_transform(quad_to_output(quad, output_size=output_size), eyes)


def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _fast_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (FFT lengths with only small factors are the fast ones)."""
    best = 1 << max(n - 1, 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _convolve_last(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'same'-size convolution along the last (contiguous) axis, by FFT, edges mirrored."""
    r = (kernel.size - 1) // 2
    # half-sample symmetric edges (d c b a | a b c d), as scipy.ndimage's 'reflect'
    padded = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(r, r)], mode="symmetric")
    n = _fast_length(padded.shape[-1] + kernel.size - 1)
    spectrum = np.fft.rfft(padded, n=n, axis=-1)
    spectrum *= np.fft.rfft(kernel.astype(a.dtype), n=n)
    return np.fft.irfft(spectrum, n=n, axis=-1)[..., 2 * r: 2 * r + a.shape[-1]]


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Blur the two spatial axes of (H, W, C) with a Gaussian (truncated at 4 sigma), edges mirrored.

    float32 throughout (about 1e-4 from a float64 filter on 0..255 data: far below the uint8
    rounding that follows); each pass runs along a contiguous axis, which keeps the FFTs fast.
    """
    chw = np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1))
    if sigma <= 0:
        return chw.transpose(1, 2, 0).copy()
    kernel = _gaussian_kernel(sigma)
    along_w = _convolve_last(chw, kernel)
    along_h = _convolve_last(np.ascontiguousarray(along_w.transpose(0, 2, 1)), kernel)  # (C, W, H)
    return np.ascontiguousarray(along_h.transpose(2, 1, 0))


def _pad_blurred(img: np.ndarray, pad: tuple[int, int, int, int], qsize: float) -> np.ndarray:
    left, top, right, bottom = pad
    arr = np.pad(img.astype(np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w, _ = arr.shape
    yy = np.arange(h, dtype=np.float32)[:, None, None]
    xx = np.arange(w, dtype=np.float32)[None, :, None]
    # 0 on the photo's edge, 1 at the padding's outer edge (and negative inside the photo)
    mask = np.maximum(1.0 - np.minimum(xx / left, (w - 1 - xx) / right),
                      1.0 - np.minimum(yy / top, (h - 1 - yy) / bottom))
    blurred = gaussian_blur(arr, qsize * 0.02)
    arr = arr + (blurred - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    arr = arr + (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def align_to_quad(image: np.ndarray, quad: np.ndarray, *, output_size: int, transform_size: int,
                  enable_padding: bool, supersample_enlarged: bool = True) -> np.ndarray:
    """Cut the FFHQ quad out of `image` (H, W, 3) uint8 -> (output_size, output_size, 3) uint8.

    supersample_enlarged=False samples a quad whose side is at most output_size straight at
    output_size instead of via transform_size (see step 5 above)."""
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB")
    quad = np.array(quad, dtype=np.float64)
    qsize = math.hypot(*(quad[3] - quad[0]))

    shrink = int(math.floor(qsize / output_size * 0.5))
    if shrink > 1:
        size = (int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink)))
        img = img.resize(size, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink

    border = max(int(np.rint(qsize * 0.1)), 3)
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    crop = (max(lo[0] - border, 0), max(lo[1] - border, 0),
            min(hi[0] + border, img.size[0]), min(hi[1] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    pad = (max(-lo[0] + border, 0), max(-lo[1] + border, 0),
           max(hi[0] - img.size[0] + border, 0), max(hi[1] - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        least = int(np.rint(qsize * 0.3))
        pad = tuple(max(p, least) for p in pad)
        img = Image.fromarray(_pad_blurred(np.asarray(img), pad, qsize), "RGB")
        quad += pad[:2]

    if not supersample_enlarged and qsize <= output_size:
        transform_size = output_size
    img = img.transform((transform_size, transform_size), Image.Transform.QUAD,
                        tuple((quad + 0.5).flatten()), Image.Resampling.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return np.asarray(img)
