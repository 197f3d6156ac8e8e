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

from facesurv.config import Params
from facesurv.errors import ConfigError
from facesurv.workspace import Workspace
from serving.scoring import EmbeddedPhoto, PhotoRejected


class PhotoPipeline:
    """Callable image bytes -> EmbeddedPhoto. One photo at a time (dlib objects are not thread-safe)."""

    def __init__(self, params: Params, *, workspace: Workspace | None = None) -> None:
        from embedding.align import AlignConfig, Aligner
        from embedding.projection import latent_statistics, resolve_device
        from embedding.stylegan2 import GeneratorConfig, load_generator

        self.params = params
        self.aligner = Aligner(AlignConfig.from_object(params.align))
        g = params.generator
        cfg = GeneratorConfig.from_params(g)
        p = params.projection
        try:
            self.device = resolve_device(p.device)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        # params.yaml's file paths are relative to the workspace
        where = workspace.setting_path if workspace is not None else (lambda v: v)
        self.G, self.generator_info = load_generator(where(g.checkpoint), config=cfg, seed=g.seed, device=self.device)
        # drawn once per server, not per request (10k mapping passes: seconds on a CPU)
        self.stats = latent_statistics(self.G, samples=p.w_avg_samples, device=self.device)
        self.perceptual, self.perceptual_info = None, None
        try:
            from embedding.perceptual import load_perceptual

            net, info = load_perceptual(params.perceptual.network, where(params.perceptual.vgg16_path),
                                        resize=params.perceptual.resize)
            self.perceptual, self.perceptual_info = net.to(self.device), info
        except (OSError, ValueError):
            if p.loss != "mse":
                raise
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
