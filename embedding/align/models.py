"""dlib model files: where they are, what they are, and proof (sha256) that they are the right ones.

The files come from the installed `face_recognition_models` distribution (found without importing
it: its __init__ needs pkg_resources, which current setuptools no longer ships) or from a path the
user gives. Each file is hashed once per process (the 68-point model is 100 MB) and compared with
the published file's hash, so a truncated download or a different model cannot slip in silently.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import threading
from pathlib import Path

from embedding.fileio import sha256_file

# role -> (file name inside face_recognition_models/models, sha256, licence note)
KNOWN_MODELS: dict[str, tuple[str, str, str]] = {
    "landmarks68": (
        "shape_predictor_68_face_landmarks.dat",
        "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
        "trained on iBUG 300-W, whose licence excludes commercial use",
    ),
    "landmarks5": (
        "shape_predictor_5_face_landmarks.dat",
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        "CC0 (public domain)",
    ),
    "mmod": (
        "mmod_human_face_detector.dat",
        "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
        "dlib's MMOD CNN face detector (trained on dlib's own labelled face set)",
    ),
}

PACKAGE = "face_recognition_models"


class ModelFileError(RuntimeError):
    """A dlib model file is missing or is not the expected file; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    role: str
    path: str
    sha256: str
    size: int
    licence: str

    def as_record(self) -> dict[str, str]:
        return {"role": self.role, "path": self.path, "sha256": self.sha256, "licence": self.licence}


_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def _cached_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key not in _hash_cache:
            _hash_cache[key] = sha256_file(path)
        return _hash_cache[key]


def package_models_dir() -> Path | None:
    """The models/ folder of the installed face_recognition_models distribution, or None."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def resolve_model(role: str, path: str | os.PathLike[str] | None = None) -> ModelInfo:
    """Locate, hash and verify the model file for `role` ('landmarks68', 'landmarks5', 'mmod').

    `path` None means the file from the installed face_recognition_models package. Raises
    ModelFileError when the file is missing or its sha256 differs from the published file's.
    """
    if role not in KNOWN_MODELS:
        raise ValueError(f"unknown model role {role!r}; expected one of {', '.join(KNOWN_MODELS)}")
    name, expected, licence = KNOWN_MODELS[role]
    if path is None:
        models_dir = package_models_dir()
        if models_dir is None:
            raise ModelFileError(
                f"dlib model {name} not found: install it with `pip install face-recognition-models==0.3.0` "
                f"or set the model path in params.yaml (align section)")
        file = models_dir / name
    else:
        file = Path(path).expanduser()
    file = file.resolve()
    if not file.is_file():
        raise ModelFileError(f"dlib model file {file} does not exist; fix the path in params.yaml (align section) "
                             f"or install face-recognition-models==0.3.0")
    digest = _cached_sha256(file)
    if digest != expected:
        raise ModelFileError(
            f"{file}: sha256 {digest[:16]}... is not the published {name} ({expected[:16]}...); "
            f"the file is damaged or a different model: replace it with the original from face-recognition-models 0.3.0")
    return ModelInfo(role=role, path=str(file), sha256=digest, size=file.stat().st_size, licence=licence)


def landmark_model_info(landmarks: int = 68, path: str | os.PathLike[str] | None = None) -> ModelInfo:
    """Verified info on the 5- or 68-point shape predictor file."""
    if landmarks not in (5, 68):
        raise ValueError(f"landmarks must be 5 or 68, got {landmarks!r}")
    return resolve_model(f"landmarks{landmarks}", path)
