"""Face detection (dlib HOG or MMOD CNN), face choice under the multi-face policy, landmarks."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from embedding.align import reasons as R
from embedding.align.config import AlignConfig
from embedding.align.models import ModelInfo, resolve_model
from embedding.align.reasons import AlignRejected


@dataclasses.dataclass(frozen=True)
class Detection:
    """A face box in source pixels (right/bottom exclusive, may reach past the image edge)."""

    left: int
    top: int
    right: int
    bottom: int
    score: float

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def size(self) -> int:
        """The face's size in pixels: the box's shorter side."""
        return min(self.width, self.height)

    @property
    def area(self) -> int:
        return self.width * self.height

    def as_record(self) -> dict[str, object]:
        return {"left": self.left, "top": self.top, "right": self.right, "bottom": self.bottom,
                "score": round(self.score, 4)}


@dataclasses.dataclass(frozen=True)
class ModelSet:
    """The verified model files an aligner uses (paths + sha256), picklable for worker processes."""

    landmarks: ModelInfo
    detector: ModelInfo | None  # None for HOG (built into dlib)

    @classmethod
    def resolve(cls, config: AlignConfig) -> ModelSet:
        lm = resolve_model(f"landmarks{config.landmarks}", config.landmark_model_path)
        det = resolve_model("mmod", config.detector_model_path) if config.detector == "cnn" else None
        return cls(landmarks=lm, detector=det)

    def sha256s(self) -> dict[str, str]:
        out = {self.landmarks.role: self.landmarks.sha256}
        if self.detector is not None:
            out[self.detector.role] = self.detector.sha256
        return out


@functools.lru_cache(maxsize=4)
def _load(kind: str, path: str, sha256: str) -> Any:
    # keyed by the verified hash too, so a replaced file is loaded again; loading the 100 MB
    # 68-point model takes about a second, and aligners with other options share it
    import dlib

    if kind == "hog":
        return dlib.get_frontal_face_detector()  # built into dlib, but deserialising it takes ~1 s too
    return dlib.shape_predictor(path) if kind == "predictor" else dlib.cnn_face_detection_model_v1(path)


class FaceModels:
    """Loaded dlib objects (shared within a process). Not thread-safe: one per thread."""

    def __init__(self, config: AlignConfig, models: ModelSet) -> None:
        self.config = config
        self.models = models
        self.detector_name = "dlib_hog" if config.detector == "hog" else "dlib_mmod_cnn"
        self._hog: Any = None
        self._cnn: Any = None
        if config.detector == "hog":
            self._hog = _load("hog", "", "")
        else:
            assert models.detector is not None
            self._cnn = _load("cnn", models.detector.path, models.detector.sha256)
        self._predictor = _load("predictor", models.landmarks.path, models.landmarks.sha256)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """All detections in (H, W, 3) uint8 RGB, largest first (ties: higher score first).

        A photo over config.detect_max_pixels is searched on a reduced copy (a portrait's face
        is large; the pyramid on a 12 MP original costs seconds for nothing) and the boxes are
        scaled back; landmarks are always placed on the full-resolution photo.
        """
        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = img.shape[:2]
        scale = 1.0
        if h * w > self.config.detect_max_pixels:
            from PIL import Image

            scale = (self.config.detect_max_pixels / (h * w)) ** 0.5
            size = (max(1, int(w * scale)), max(1, int(h * scale)))
            img = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BOX))
            scale = size[0] / w
        raw: list[tuple[int, int, int, int, float]] = []
        if self._hog is not None:
            rects, scores, _ = self._hog.run(img, self.config.upsample, 0.0)
            raw = [(r.left(), r.top(), r.right() + 1, r.bottom() + 1, float(s))
                   for r, s in zip(rects, scores, strict=True)]
        else:
            raw = [(m.rect.left(), m.rect.top(), m.rect.right() + 1, m.rect.bottom() + 1, float(m.confidence))
                   for m in self._cnn(img, self.config.upsample)]
        found = [Detection(round(left / scale), round(top / scale), round(right / scale), round(bottom / scale),
                           score) for left, top, right, bottom, score in raw]
        return sorted(found, key=lambda d: (-d.area, -d.score, d.top, d.left))

    def landmarks(self, rgb: np.ndarray, det: Detection) -> np.ndarray:
        """(68, 2) or (5, 2) float64 landmark (x, y) for the face in `det`."""
        import dlib

        rect = dlib.rectangle(det.left, det.top, det.right - 1, det.bottom - 1)
        shape = self._predictor(np.ascontiguousarray(rgb, dtype=np.uint8), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def choose_face(detections: list[Detection], *, min_detector_score: float, min_face_px: int,
                multi_face: str, dominance_ratio: float) -> tuple[Detection, dict[str, float]]:
    """(the one face to align, counts), or AlignRejected(no_face | multiple_faces | face_too_small).

    Detections scoring under min_detector_score are ignored (HOG also fires weakly on logos and
    mission patches). Several faces: policy 'reject' refuses the photo; 'best' keeps the largest
    when its box area is at least dominance_ratio times the runner-up's. Small faces compete too
    (a group photo of small faces is still a group photo), and the chosen face must then be at
    least min_face_px on its shorter side.
    """
    strong = sorted((d for d in detections if d.score >= min_detector_score),
                    key=lambda d: (-d.area, -d.score, d.top, d.left))
    weak = len(detections) - len(strong)
    details: dict[str, float] = {"faces_detected": len(detections), "faces_weak": weak,
                                 "faces_usable": sum(d.size >= min_face_px for d in strong)}
    if not strong:
        extra = (f" ({weak} weak detection(s) scored under align.min_detector_score={min_detector_score})"
                 if weak else "")
        raise AlignRejected(R.NO_FACE, f"no face found{extra}", details=details)
    best = strong[0]
    if len(strong) > 1:
        ratio = best.area / max(strong[1].area, 1)
        details["dominance"] = round(ratio, 3)
        if multi_face == "reject":
            raise AlignRejected(R.MULTIPLE_FACES, f"{len(strong)} faces and align.multi_face is 'reject': "
                                "crop the photo to the patient", details=details)
        if ratio < dominance_ratio:
            raise AlignRejected(R.MULTIPLE_FACES, f"{len(strong)} faces and the largest has only {ratio:.2f} times "
                                f"the next one's area (align.dominance_ratio={dominance_ratio}): crop the photo "
                                "to the patient", details=details)
    if best.size < min_face_px:
        raise AlignRejected(R.FACE_TOO_SMALL, f"the face is {best.size} px, under align.min_face_px={min_face_px}: "
                            "use a closer or higher-resolution photo", details=details)
    return best, details
