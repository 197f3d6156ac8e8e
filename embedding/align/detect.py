"""Face detection (dlib HOG or MMOD CNN), face choice under the multi-face policy, landmarks.

Tightly cropped faces (the face fills the frame, as in UTKFace) defeat the HOG detector: its
window needs some context around the face. `FaceModels.detect(rgb, pad=f)` searches the photo
with its edge pixels replicated f of each side further out, and `detect_fallback` runs the
MMOD CNN detector on a small copy; both return boxes in the photo's own pixels (reaching past
its edges), and `landmarks(..., edge_extended_window=True)` places the landmarks on the same
edge-extended photo, so everything downstream stays in source pixels.
"""

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


def edge_extended(rgb: np.ndarray, *, left: int, top: int, right: int, bottom: int) -> np.ndarray:
    """The window [left, right) x [top, bottom) of (H, W, C) `rgb`, which may reach past the
    photo's edges: outside the photo each pixel repeats the nearest edge pixel (numpy's 'edge'
    padding, to any distance). Returns a (bottom - top, right - left, C) copy."""
    h, w = rgb.shape[:2]
    ys = np.clip(np.arange(top, bottom), 0, h - 1)
    xs = np.clip(np.arange(left, right), 0, w - 1)
    return np.ascontiguousarray(rgb[ys[:, None], xs[None, :]])


def _resized(img: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """(img scaled by about `scale`, the exact horizontal scale used)."""
    from PIL import Image

    h, w = img.shape[:2]
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(img).resize(size, method)), size[0] / w


@dataclasses.dataclass(frozen=True)
class ModelSet:
    """The verified model files an aligner uses (paths + sha256), picklable for worker processes."""

    landmarks: ModelInfo
    detector: ModelInfo | None  # the MMOD model (detector or fallback_detector 'cnn'); None: HOG only

    @classmethod
    def resolve(cls, config: AlignConfig) -> ModelSet:
        lm = resolve_model(f"landmarks{config.landmarks}", config.landmark_model_path)
        uses_cnn = config.detector == "cnn" or config.fallback_detector == "cnn"
        det = resolve_model("mmod", config.detector_model_path) if uses_cnn else None
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
        if config.detector == "cnn" or config.fallback_detector == "cnn":
            assert models.detector is not None
            self._cnn = _load("cnn", models.detector.path, models.detector.sha256)
        self._predictor = _load("predictor", models.landmarks.path, models.landmarks.sha256)

    @property
    def has_fallback(self) -> bool:
        """Whether `detect_fallback` can run (a HOG primary with fallback_detector 'cnn')."""
        return self._hog is not None and self._cnn is not None

    def _run(self, img: np.ndarray, *, cnn: bool, upsample: int) -> list[tuple[int, int, int, int, float]]:
        img = np.ascontiguousarray(img, dtype=np.uint8)
        if not cnn:
            rects, scores, _ = self._hog.run(img, upsample, 0.0)
            return [(r.left(), r.top(), r.right() + 1, r.bottom() + 1, float(s))
                    for r, s in zip(rects, scores, strict=True)]
        return [(m.rect.left(), m.rect.top(), m.rect.right() + 1, m.rect.bottom() + 1, float(m.confidence))
                for m in self._cnn(img, upsample)]

    @staticmethod
    def _to_source(raw: list[tuple[int, int, int, int, float]], *, scale: float, dx: int = 0,
                   dy: int = 0) -> list[Detection]:
        """Boxes found in a copy scaled by `scale` and shifted by (dx, dy) -> source pixels, sorted."""
        found = [Detection(round((left - dx) / scale), round((top - dy) / scale), round((right - dx) / scale),
                           round((bottom - dy) / scale), score) for left, top, right, bottom, score in raw]
        return sorted(found, key=lambda d: (-d.area, -d.score, d.top, d.left))

    def detect(self, rgb: np.ndarray, *, pad: float = 0.0) -> list[Detection]:
        """All detections in (H, W, 3) uint8 RGB, largest first (ties: higher score first).

        A photo over config.detect_max_pixels is searched on a reduced copy (a portrait's face
        is large; the pyramid on a 12 MP original costs seconds for nothing) and the boxes are
        scaled back; landmarks are always placed on the full-resolution photo.

        pad > 0 searches the photo with its edge pixels replicated `pad` of its width (height)
        further out on the left and right (top and bottom): a face that fills the frame gets the
        margin the detector window needs. The copy is reduced first so that the padded search
        stays within detect_max_pixels; boxes come back in the photo's pixels (past its edges).
        """
        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = img.shape[:2]
        scale = 1.0
        budget = self.config.detect_max_pixels / (1.0 + 2.0 * pad) ** 2
        if h * w > budget:
            img, scale = _resized(img, (budget / (h * w)) ** 0.5)
        dx = dy = 0
        if pad > 0:
            sh, sw = img.shape[:2]
            dx, dy = round(sw * pad), round(sh * pad)
            img = edge_extended(img, left=-dx, top=-dy, right=sw + dx, bottom=sh + dy)
        raw = self._run(img, cnn=self._hog is None, upsample=self.config.upsample)
        return self._to_source(raw, scale=scale, dx=dx, dy=dy)

    def detect_fallback(self, rgb: np.ndarray) -> list[Detection]:
        """MMOD CNN detections (no pyramid up-step) on a copy scaled up or down to about
        config.fallback_pixels, in source pixels; for photos the HOG detector found no face in.

        The CNN is slow on a CPU (0.2-0.5 s for 200 x 200 on one core), so the copy is small:
        this finds faces that fill much of the frame (tight crops), which is what HOG misses.
        """
        if not self.has_fallback:
            return []
        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = img.shape[:2]
        img, scale = _resized(img, (self.config.fallback_pixels / (h * w)) ** 0.5)
        return self._to_source(self._run(img, cnn=True, upsample=0), scale=scale)

    def landmarks(self, rgb: np.ndarray, det: Detection, *, edge_extended_window: bool = False) -> np.ndarray:
        """(68, 2) or (5, 2) float64 landmark (x, y) for the face in `det`, in source pixels.

        edge_extended_window: place them on a window around the box cut from the photo with its
        edge pixels replicated outward (as `detect(pad=...)` saw it) instead of on the photo
        itself, where the predictor reads black past the edges.
        """
        import dlib

        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        dx = dy = 0
        if edge_extended_window:
            # half a box of margin: the same landmarks as on the photo edge-extended without limit
            # (checked on 120 UTKFace crops; a quarter box moved some by up to 6 px)
            mx, my = det.width // 2 + 1, det.height // 2 + 1
            dx, dy = det.left - mx, det.top - my
            img = edge_extended(img, left=dx, top=dy, right=det.right + mx, bottom=det.bottom + my)
        rect = dlib.rectangle(det.left - dx, det.top - dy, det.right - 1 - dx, det.bottom - 1 - dy)
        shape = self._predictor(img, rect)
        return np.array([(p.x + dx, p.y + dy) for p in shape.parts()], dtype=np.float64)


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
