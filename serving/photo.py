"""A new photo -> aligned crop -> projected latent, with the models loaded once per server.

Uses the nightly flow's aligner and projection engine (embedding.project_batch.Projection, from
facesurv.components), the same preprocessing (embedding.project_batch.generator_input) and w+
reduction (features.latents.feature_latents), and seeds the projection by the photo's sha256 as
the flow does, so an uploaded photo gets the latent the flow would give it
(tests/flows/test_flows_photo_parity.py checks it).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from serving.scoring import EmbeddedPhoto, PhotoRejected


class PhotoPipeline:
    """Callable image bytes -> EmbeddedPhoto. One photo at a time (dlib objects are not thread-safe)."""

    def __init__(self, *, aligner: Any, projection: Any) -> None:
        """aligner: embedding.align.Aligner; projection: embedding.project_batch.Projection, the
        flow's engine (facesurv.components builds both, as it does for the flow)."""
        self.aligner, self.projection = aligner, projection
        self.generator_info = projection.generator_info
        self._lock = threading.Lock()

    def settings(self) -> dict[str, Any]:
        p = self.projection
        return {**p.settings, "seed": p.seed, "device": p.device}

    def __call__(self, image: bytes) -> EmbeddedPhoto:
        import numpy as np

        from embedding.align import align_bytes
        from embedding.project_batch import generator_input
        from features.latents import feature_latents

        sha = hashlib.sha256(image).hexdigest()
        with self._lock:
            outcome = align_bytes(image, aligner=self.aligner)
            if outcome.status != "aligned":
                raise PhotoRejected(f"{outcome.reason}: {outcome.message}")
            # the nightly flow's preprocessing and projection call: the same photo gets the same latent
            res = self.projection.run(generator_input(outcome.image, resolution=self.projection.G.img_resolution)[None],
                                      [sha])
        gi, pi = self.generator_info, self.projection.perceptual_info
        lineage = {
            "aligner_version": self.aligner.version,
            "landmark_model_sha256": self.aligner.models.landmarks.sha256,
            "aligner_fingerprint": self.aligner.fingerprint,
            "generator_sha256": gi.sha256,
            "generator_is_random_init": gi.is_random_init,
            "generator_version": getattr(gi, "version", None),  # the registry's name; None for a file or stand-in
            "generator_source": gi.source,
            "projection": {**self.settings(), "run_key": self.projection.key,
                           "final_loss": float(res.final_loss[0]), "mse": float(res.mse[0]),
                           "perceptual_loss": None if np.isnan(res.perceptual_loss[0])
                           else float(res.perceptual_loss[0]),
                           "perceptual_network": pi.network if pi else None,
                           "encoder_sha256": getattr(self.projection.encoder_info, "sha256", None),
                           "perceptual_is_stand_in": pi.is_stand_in if pi else None},
        }
        latent = feature_latents(res.latents, space=self.projection.settings["space"])[0]  # the flow's w+ reduction
        return EmbeddedPhoto(latent=[float(x) for x in latent], lineage=lineage)
