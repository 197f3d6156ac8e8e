"""A new photo -> aligned crop -> projected latent, with the models loaded once per server.

Uses the same settings as the nightly embedding flow (params.align, params.generator,
params.projection), the same preprocessing (embedding.project_batch.generator_input) and
w+ reduction (features.latents.feature_latents), and keys the projection seed by the photo's
sha256 as the batch projection does, so an uploaded photo gets the latent the flow would give it
(tests/serving/test_serving_photo_parity.py checks it).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from ground.config import Params
from serving.scoring import EmbeddedPhoto, PhotoRejected


class PhotoPipeline:
    """Callable image bytes -> EmbeddedPhoto. One photo at a time (dlib objects are not thread-safe)."""

    def __init__(self, params: Params, *, aligner: Any, generator: Any, generator_info: Any, perceptual: Any,
                 perceptual_info: Any, stats: Any, device: str) -> None:
        """The models come loaded (facesurv.components builds them, as it does for the flow)."""
        self.params, self.aligner, self.device, self.stats = params, aligner, device, stats
        self.G, self.generator_info = generator, generator_info
        self.perceptual, self.perceptual_info = perceptual, perceptual_info
        self._lock = threading.Lock()

    def settings(self) -> dict[str, Any]:
        p = self.params.projection
        return {**p.project_options(), "seed": p.seed, "device": self.device}

    def __call__(self, image: bytes) -> EmbeddedPhoto:
        import numpy as np

        from embedding.align import align_bytes
        from embedding.project_batch import generator_input
        from embedding.projection import project, stable_seed
        from features.latents import feature_latents

        sha = hashlib.sha256(image).hexdigest()
        p = self.params.projection
        with self._lock:
            outcome = align_bytes(image, aligner=self.aligner)
            if outcome.status != "aligned":
                raise PhotoRejected(f"{outcome.reason}: {outcome.message}")
            # the nightly flow's preprocessing, call for call: the same photo gets the same latent
            images = generator_input(outcome.image, resolution=self.G.img_resolution)[None]
            res = project(self.G, images, **p.project_options(), perceptual=self.perceptual,
                          seed=[stable_seed(p.seed, sha)], device=self.device, mixed_precision=p.mixed_precision,
                          stats=self.stats)
        gi, pi = self.generator_info, self.perceptual_info
        lineage = {
            "aligner_version": self.aligner.version,
            "landmark_model_sha256": self.aligner.models.landmarks.sha256,
            "aligner_fingerprint": self.aligner.fingerprint,
            "generator_sha256": gi.sha256,
            "generator_is_random_init": gi.is_random_init,
            "generator_source": gi.source,
            "projection": {**self.settings(), "final_loss": float(res.final_loss[0]), "mse": float(res.mse[0]),
                           "perceptual_loss": None if np.isnan(res.perceptual_loss[0])
                           else float(res.perceptual_loss[0]),
                           "perceptual_network": pi.network if pi else None,
                           "perceptual_is_stand_in": pi.is_stand_in if pi else None},
        }
        latent = feature_latents(res.latents, space=p.space)[0]  # the flow's w+ reduction
        return EmbeddedPhoto(latent=[float(x) for x in latent], lineage=lineage)
