"""One photo: decoded RGB -> detection -> landmarks -> FFHQ quad -> aligned square.

`Aligner` holds the loaded dlib models (about 1 s to load, so build one per process and reuse
it); `align_image` raises AlignRejected for a photo that cannot be aligned; `align_bytes` is the
serving entry point that never raises for bad input.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from embedding.align import reasons as R
from embedding.align.config import ALIGNER_VERSION, AlignConfig
from embedding.align.decode import DecodedImage, decode_image
from embedding.align.detect import Detection, FaceModels, ModelSet, choose_face
from embedding.align.ffhq import (
    align_to_quad,
    apply_transform,
    eye_centres,
    quad_from_landmarks,
    quad_to_output,
)
from embedding.align.reasons import AlignRejected


@dataclasses.dataclass(frozen=True)
class AlignedFace:
    """image: (S, S, 3) uint8. landmarks: (68|5, 2) in source pixels. quad: (4, 2) source pixels.
    transform: (2, 3) source pixel -> output pixel. eyes_out: (2, 2) eye centres in the output.
    detector: which search found the face: 'dlib_hog' or 'dlib_mmod_cnn' (the configured
    detector, on the photo), '<that>_padded' (on the photo with its edges extended,
    align.detect_pad) or 'dlib_mmod_cnn' as the fallback (align.fallback_detector)."""

    image: np.ndarray
    detection: Detection
    landmarks: np.ndarray
    quad: np.ndarray
    transform: np.ndarray
    eyes_out: np.ndarray
    counts: dict
    detector: str = ""


@dataclasses.dataclass(frozen=True)
class AlignOutcome:
    """What `align_bytes` returns: status 'aligned' (face set) or 'quarantined' (reason set)."""

    status: str
    reason: str
    message: str
    face: AlignedFace | None
    decoded: DecodedImage | None
    details: dict

    @property
    def image(self) -> np.ndarray | None:
        return None if self.face is None else self.face.image


class Aligner:
    """Detect, choose and align faces with one configuration and one set of verified model files."""

    def __init__(self, config: AlignConfig, models: ModelSet | None = None) -> None:
        self.config = config
        self.models = models if models is not None else ModelSet.resolve(config)
        self._face_models = FaceModels(config, self.models)
        self.detector_name = self._face_models.detector_name
        self.fingerprint = config.output_fingerprint(self.models.sha256s())
        self.version = ALIGNER_VERSION

    def align(self, rgb: np.ndarray) -> AlignedFace:
        """Align the one face in (H, W, 3) uint8 RGB; raise AlignRejected when there is not one."""
        c = self.config
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
        face, counts, landmarks, found_by = self._find_face(rgb)
        try:
            quad = quad_from_landmarks(landmarks)
        except ValueError as exc:
            raise AlignRejected(R.NO_FACE, f"the landmarks give no usable face geometry: {exc}",
                                details=counts) from None
        image = align_to_quad(rgb, quad, output_size=c.output_size, transform_size=c.transform_size,
                              enable_padding=c.enable_padding, supersample_enlarged=c.supersample_enlarged)
        transform = quad_to_output(quad, output_size=c.output_size)
        eyes = apply_transform(transform, np.stack(eye_centres(landmarks)))
        return AlignedFace(image=image, detection=face, landmarks=landmarks, quad=quad, transform=transform,
                           eyes_out=eyes, counts=counts, detector=found_by)

    def _choose(self, detections: list[Detection]) -> tuple[Detection, dict]:
        c = self.config
        return choose_face(detections, min_detector_score=c.min_detector_score, min_face_px=c.min_face_px,
                           multi_face=c.multi_face, dominance_ratio=c.dominance_ratio)

    def _find_face(self, rgb: np.ndarray) -> tuple[Detection, dict, np.ndarray, str]:
        """(face box, counts, landmarks, which search found it), all in source pixels.

        The configured detector searches the photo first; only when it finds no face at all
        (no_face: a tight crop, where the detector window lacks context) the photo is searched
        again with its edges extended (align.detect_pad), then by the MMOD CNN fallback
        (align.fallback_detector). A multiple_faces or face_too_small verdict is final at
        whichever search gave it, so photos with a face found on the first search align exactly
        as without the fallbacks.
        """
        fm = self._face_models
        try:
            face, counts = self._choose(fm.detect(rgb))
        except AlignRejected as first:
            if first.reason != R.NO_FACE:
                raise
            return self._find_face_again(rgb, first)
        return face, counts, fm.landmarks(rgb, face), self.detector_name

    def _find_face_again(self, rgb: np.ndarray, first: AlignRejected) -> tuple[Detection, dict, np.ndarray, str]:
        c, fm = self.config, self._face_models
        searches = []
        if c.detect_pad > 0:
            searches.append((f"{self.detector_name}_padded", lambda: fm.detect(rgb, pad=c.detect_pad),
                             f"with the edges extended by align.detect_pad={c.detect_pad:g}"))
        if fm.has_fallback:
            searches.append(("dlib_mmod_cnn", lambda: fm.detect_fallback(rgb),
                             "by the MMOD CNN fallback (align.fallback_detector=cnn)"))
        for name, search, _ in searches:
            try:
                face, counts = self._choose(search())
            except AlignRejected as rej:
                if rej.reason != R.NO_FACE:
                    raise
                continue
            return face, counts, fm.landmarks(rgb, face, edge_extended_window=True), name
        if not searches:
            raise first
        tried = " nor ".join(s[2] for s in searches)
        raise AlignRejected(R.NO_FACE, f"{first.message}; none either {tried}", details=first.details)


def align_image(image: np.ndarray, *, aligner: Aligner) -> AlignedFace:
    """(H, W, 3) uint8 RGB -> AlignedFace with image (S, S, 3) uint8; raises AlignRejected."""
    return aligner.align(image)


def align_bytes(data: bytes, *, aligner: Aligner) -> AlignOutcome:
    """Encoded photo bytes -> AlignOutcome, with the same gates as the batch. Never raises for
    bad input: an undecodable or faceless photo comes back quarantined with its reason.
    An Aligner is not thread-safe: give each thread its own, or hold a lock around this call."""
    decoded = None
    try:
        decoded = decode_image(data, max_pixels=aligner.config.max_pixels)
        face = aligner.align(decoded.rgb)
    except AlignRejected as rej:
        return AlignOutcome("quarantined", rej.reason, rej.message, None, decoded, rej.details)
    except Exception as exc:  # noqa: BLE001 - as in the batch: one odd photo is a row, not a crash
        return AlignOutcome("quarantined", R.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", None, decoded, {})
    return AlignOutcome("aligned", "", "", face, decoded, dict(face.counts))
