"""Face alignment: dlib detection + 68-point landmarks, FFHQ-style crops, quality gates.

    from embedding.align import AlignConfig, Aligner, align_bytes, align_image, align_directory
    aligner = Aligner(AlignConfig(output_size=512))        # loads and verifies the dlib models
    outcome = align_bytes(jpeg_bytes, aligner=aligner)     # .status, .reason, .message, .image
    result = align_directory(in_dir, out_dir, config=cfg)  # <photo_id>.png + manifest.csv
"""

from embedding.align.batch import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    BatchInputError,
    BatchResult,
    align_directory,
    list_inputs,
    read_manifest,
)
from embedding.align.config import ALIGNER_VERSION, AlignConfig
from embedding.align.decode import IMAGE_EXTENSIONS, DecodedImage, decode_image, read_source
from embedding.align.detect import Detection, ModelSet, choose_face
from embedding.align.ffhq import (
    align_to_quad,
    apply_transform,
    canonical_eye_positions,
    eye_centres,
    quad_from_landmarks,
    quad_to_output,
)
from embedding.align.models import ModelFileError, ModelInfo, landmark_model_info, resolve_model
from embedding.align.pipeline import AlignedFace, Aligner, AlignOutcome, align_bytes, align_image
from embedding.align.reasons import ALL_REASONS, AlignRejected

__all__ = [
    "ALIGNER_VERSION", "ALL_REASONS", "IMAGE_EXTENSIONS", "MANIFEST_COLUMNS", "MANIFEST_NAME",
    "AlignConfig", "AlignOutcome", "AlignRejected", "AlignedFace", "Aligner", "BatchInputError",
    "BatchResult", "DecodedImage", "Detection", "ModelFileError", "ModelInfo", "ModelSet",
    "align_bytes", "align_directory", "align_image", "align_to_quad", "apply_transform",
    "canonical_eye_positions", "choose_face", "decode_image", "eye_centres", "landmark_model_info",
    "list_inputs", "quad_from_landmarks", "quad_to_output", "read_manifest", "read_source",
    "resolve_model",
]
