"""The alignment options, mirrored from params.yaml's `align` section.

embedding/ must not import facesurv, so this is its own frozen copy; `from_object` takes any
object (facesurv's AlignParams) or mapping with the same field names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Bump when a change alters any output pixel or manifest value: it is part of the cache key,
# so a bump makes `facesurv align` redo every photo.
ALIGNER_VERSION = "facesurv-align-ffhq-1"


@dataclasses.dataclass(frozen=True)
class AlignConfig:
    """See docs/alignment.md for each option."""

    output_size: int = 512
    transform_size: int = 2048
    enable_padding: bool = True
    detector: str = "hog"             # hog | cnn
    upsample: int = 1
    landmarks: int = 68               # 68 | 5
    landmark_model_path: str | None = None
    detector_model_path: str | None = None
    min_face_px: int = 48
    max_pixels: int = 40_000_000
    multi_face: str = "best"          # reject | best
    dominance_ratio: float = 2.0
    min_detector_score: float = 0.5
    detect_max_pixels: int = 4_000_000
    detect_pad: float = 0.35          # no face: search again with the edges replicated this far out (0 = off)
    fallback_detector: str = "cnn"    # none | cnn: still no face (HOG): MMOD CNN on a small copy
    fallback_pixels: int = 40_000     # the CNN fallback's copy is scaled to about this many pixels
    supersample_enlarged: bool = False  # also supersample when the quad is smaller than the output
    workers: int = 1

    def __post_init__(self) -> None:
        checks = (
            (self.output_size >= 8, "output_size must be >= 8"),
            (self.transform_size >= self.output_size, "transform_size must be >= output_size"),
            (self.detector in ("hog", "cnn"), "detector must be 'hog' or 'cnn'"),
            (0 <= self.upsample <= 4, "upsample must be between 0 and 4"),
            (self.landmarks in (5, 68), "landmarks must be 5 or 68"),
            (self.min_face_px >= 1, "min_face_px must be >= 1"),
            (self.max_pixels >= 1, "max_pixels must be >= 1"),
            (self.multi_face in ("reject", "best"), "multi_face must be 'reject' or 'best'"),
            (self.dominance_ratio >= 1.0, "dominance_ratio must be >= 1.0"),
            (self.workers >= 1, "workers must be >= 1"),
            (self.detect_max_pixels >= 10_000, "detect_max_pixels must be >= 10000"),
            (0.0 <= self.detect_pad <= 1.0, "detect_pad must be between 0 and 1"),
            (self.fallback_detector in ("none", "cnn"), "fallback_detector must be 'none' or 'cnn'"),
            (self.fallback_pixels >= 10_000, "fallback_pixels must be >= 10000"),
        )
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"align config: {msg}")

    @classmethod
    def from_object(cls, obj: Any) -> AlignConfig:
        """Build from a mapping or an object with these attribute names (unknown ones ignored)."""
        names = [f.name for f in dataclasses.fields(cls)]
        if isinstance(obj, Mapping):
            values = {n: obj[n] for n in names if n in obj}
        else:
            values = {n: getattr(obj, n) for n in names if hasattr(obj, n)}
        return cls(**values)

    def output_fingerprint(self, model_sha256: Mapping[str, str]) -> str:
        """sha256 over everything that decides the outputs (not workers, not file locations)."""
        import dlib
        import numpy
        import PIL

        d = dataclasses.asdict(self)
        for key in ("workers", "landmark_model_path", "detector_model_path"):
            d.pop(key)
        d["models"] = dict(sorted(model_sha256.items()))
        d["aligner_version"] = ALIGNER_VERSION
        d["libs"] = {"dlib": dlib.__version__, "pillow": PIL.__version__, "numpy": numpy.__version__}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()
