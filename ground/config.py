"""params.yaml -> frozen dataclasses, validated once at the entry point.

Every tunable lives in params.yaml; the dataclasses below carry no defaults on purpose, so
a key missing from the file is an error rather than a silently different run. Adding a
tunable means adding a field here and a key in params.yaml (a test checks they agree).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from ground.errors import ConfigError

PROFILES = ("local", "scale")
BASE_DATASETS = ("gbsg2", "whas500", "flchain", "veterans_lung_cancer", "aids")


_CONFIG = ConfigDict(extra="forbid")


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"params.yaml: {where} {msg}")


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


@dataclass(frozen=True, config=_CONFIG)
class CohortParams:
    base: str
    seed: int
    admission_start: str
    admission_span_days: int
    record_lag_days: int

    def __post_init__(self) -> None:
        _check(self.base in BASE_DATASETS, "cohort.base", f"must be one of {', '.join(BASE_DATASETS)}, got {self.base!r}")
        _check(self.admission_span_days >= 1, "cohort.admission_span_days", "must be >= 1")
        _check(self.record_lag_days >= 0, "cohort.record_lag_days", "must be >= 0")
        try:
            import datetime as _dt

            _dt.date.fromisoformat(self.admission_start)
        except ValueError:
            _check(False, "cohort.admission_start", f"must be an ISO date (YYYY-MM-DD), got {self.admission_start!r}")


@dataclass(frozen=True, config=_CONFIG)
class SynthParams:
    patients: int
    survival_seed: int | None
    gap_sd: float
    hr_per_decade: float
    strength: float
    direction: str
    space: str
    direction_samples: int
    direction_iterations: int
    cox_alpha: float
    folds: int

    def __post_init__(self) -> None:
        _check(self.patients >= 0, "synth.patients", "must be >= 0 (0 = every patient)")
        _check(self.gap_sd >= 0, "synth.gap_sd", "must be >= 0 (years)")
        _check(self.hr_per_decade > 0, "synth.hr_per_decade", "must be > 0 (1 = the face carries no signal)")
        _check(self.strength >= 0, "synth.strength", "must be >= 0")
        _check(self.direction in ("random", "visible"), "synth.direction", "must be 'random' or 'visible'")
        _check(self.space in ("z", "w"), "synth.space", "must be 'z' or 'w'")
        _check(self.direction_samples >= 1, "synth.direction_samples", "must be >= 1")
        _check(self.direction_iterations >= 1, "synth.direction_iterations", "must be >= 1")
        _check(self.cox_alpha >= 0, "synth.cox_alpha", "must be >= 0")
        _check(self.folds >= 2, "synth.folds", "must be >= 2")


@dataclass(frozen=True, config=_CONFIG)
class AlignParams:
    output_size: int
    transform_size: int
    enable_padding: bool
    detector: str
    upsample: int
    landmarks: int
    landmark_model_path: str | None
    detector_model_path: str | None
    min_face_px: int
    max_pixels: int
    multi_face: str
    dominance_ratio: float
    min_detector_score: float
    detect_max_pixels: int
    detect_pad: float
    fallback_detector: str
    fallback_pixels: int
    supersample_enlarged: bool
    workers: int

    def __post_init__(self) -> None:
        _check(self.output_size >= 8, "align.output_size", "must be >= 8")
        _check(self.transform_size >= self.output_size, "align.transform_size", "must be >= align.output_size")
        _check(self.detector in ("hog", "cnn"), "align.detector", "must be 'hog' or 'cnn'")
        _check(0 <= self.upsample <= 4, "align.upsample", "must be between 0 and 4")
        _check(self.landmarks in (5, 68), "align.landmarks", "must be 5 or 68")
        _check(self.min_face_px >= 1, "align.min_face_px", "must be >= 1")
        _check(self.max_pixels >= 1, "align.max_pixels", "must be >= 1")
        _check(self.multi_face in ("reject", "best"), "align.multi_face", "must be 'reject' or 'best'")
        _check(self.dominance_ratio >= 1.0, "align.dominance_ratio", "must be >= 1.0")
        _check(self.workers >= 1, "align.workers", "must be >= 1")
        _check(self.detect_max_pixels >= 10000, "align.detect_max_pixels", "must be >= 10000")
        _check(0 <= self.detect_pad <= 1, "align.detect_pad", "must be between 0 and 1")
        _check(self.fallback_detector in ("none", "cnn"), "align.fallback_detector", "must be 'none' or 'cnn'")
        _check(self.fallback_pixels >= 10000, "align.fallback_pixels", "must be >= 10000")


@dataclass(frozen=True, config=_CONFIG)
class GeneratorParams:
    checkpoint: str | None
    seed: int
    resolution: int
    z_dim: int
    w_dim: int
    mapping_layers: int
    channel_base: int
    channel_max: int
    lr_multiplier: float
    truncation_psi: float

    def __post_init__(self) -> None:
        _check(_is_pow2(self.resolution) and 8 <= self.resolution <= 1024, "generator.resolution",
               f"must be a power of two from 8 to 1024, got {self.resolution}")
        _check(self.z_dim >= 1 and self.w_dim >= 1, "generator.z_dim/w_dim", "must be >= 1")
        _check(self.mapping_layers >= 1, "generator.mapping_layers", "must be >= 1")
        _check(self.channel_base >= 1 and self.channel_max >= 1, "generator.channel_base/channel_max", "must be >= 1")
        _check(self.channel_base >= self.resolution, "generator.channel_base",
               f"must be >= generator.resolution ({self.resolution}) so every layer has a channel")
        _check(self.lr_multiplier > 0, "generator.lr_multiplier", "must be > 0")


@dataclass(frozen=True, config=_CONFIG)
class PerceptualParams:
    network: str
    vgg16_path: str | None
    resize: int

    def __post_init__(self) -> None:
        _check(self.network in ("auto", "lpips-vgg16", "stlpips", "vgg16"), "perceptual.network",
               "must be 'auto', 'lpips-vgg16', 'stlpips' or 'vgg16'")
        _check(self.network != "vgg16" or self.vgg16_path is not None, "perceptual.vgg16_path",
               "must name the torchvision-format VGG-16 weights file when perceptual.network is vgg16")
        _check(self.resize >= 16, "perceptual.resize", "must be >= 16")


@dataclass(frozen=True, config=_CONFIG)
class ProjectionParams:
    space: str
    steps: int
    batch_size: int
    learning_rate: float
    loss: str
    noise_regularize: float
    initial_noise_factor: float
    noise_ramp_length: float
    lr_rampdown_length: float
    lr_rampup_length: float
    seed: int
    device: str
    mixed_precision: bool
    noise_mode: str
    z_init: str
    w_avg_samples: int
    mse_weight: float
    batch_multiple: int
    clamp_output: bool
    # custom: this section's values; paper: Hagag et al.'s method (PAPER_PROJECTION, real LPIPS-VGG16, 512px photos)
    method: str = "custom"
    # mean: every photo starts at w_avg (z: the sampled z nearest it); encoder: at the generator's encoder's guess
    init: str = "mean"

    def __post_init__(self) -> None:
        _check(self.method in ("custom", "paper"), "projection.method", "must be 'custom' or 'paper'")
        _check(self.init in ("mean", "encoder"), "projection.init", "must be 'mean' or 'encoder'")
        _check(self.space in ("z", "w", "w+"), "projection.space", "must be 'z', 'w' or 'w+'")
        _check(self.noise_mode in ("optimize", "const", "none"), "projection.noise_mode",
               "must be 'optimize', 'const' or 'none'")
        _check(self.z_init in ("nearest_w_avg", "seeded"), "projection.z_init", "must be 'nearest_w_avg' or 'seeded'")
        _check(self.w_avg_samples >= 1, "projection.w_avg_samples", "must be >= 1")
        _check(self.mse_weight >= 0, "projection.mse_weight", "must be >= 0")
        _check(self.batch_multiple >= 1, "projection.batch_multiple", "must be >= 1")
        _check(self.noise_regularize >= 0, "projection.noise_regularize", "must be >= 0")
        _check(self.steps >= 1 or (self.steps == 0 and self.init == "encoder"), "projection.steps",
               "must be >= 1 (0 only with init: encoder, which then uses the encoder's guess as it is)")
        _check(self.batch_size >= 1, "projection.batch_size", "must be >= 1")
        _check(self.learning_rate > 0, "projection.learning_rate", "must be > 0")
        _check(self.loss in ("mse", "perceptual", "mse+perceptual"), "projection.loss",
               "must be 'mse', 'perceptual' or 'mse+perceptual'")
        _check(self.device in ("auto", "cpu", "cuda"), "projection.device", "must be 'auto', 'cpu' or 'cuda'")

    # the keyword options of embedding.projection.project these settings stand for; every
    # caller (CLI, flows, DVC stage, benchmarks) passes these, so no setting is silently dropped
    _PROJECT_OPTIONS = ("space", "steps", "learning_rate", "loss", "noise_regularize", "initial_noise_factor",
                        "noise_ramp_length", "lr_rampdown_length", "lr_rampup_length", "noise_mode", "z_init",
                        "w_avg_samples", "mse_weight", "batch_multiple", "clamp_output")

    def project_options(self) -> dict[str, Any]:
        """Keyword arguments for embedding.projection.project (all but seed, device, mixed_precision and the inputs)."""
        return {name: getattr(self, name) for name in self._PROJECT_OPTIONS}


@dataclass(frozen=True, config=_CONFIG)
class EncoderParams:
    """The generator's encoder (projection.init: encoder): trained on the generator's own samples."""

    steps: int
    batch_size: int
    learning_rate: float
    augment: bool
    pixel_weight: float
    width: int
    seed: int
    store: str | None

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "encoder.steps", "must be >= 1")
        _check(self.batch_size >= 1, "encoder.batch_size", "must be >= 1")
        _check(self.learning_rate > 0, "encoder.learning_rate", "must be > 0")
        _check(self.pixel_weight >= 0, "encoder.pixel_weight", "must be >= 0")
        _check(1 <= self.width <= 4096, "encoder.width", "must be from 1 to 4096")
        _check(self.seed >= 0, "encoder.seed", "must be >= 0")

    def training_options(self) -> dict[str, Any]:
        """Keyword options of embedding.encoder.train_encoder (all but G, stats, space, device, progress)."""
        return {"steps": self.steps, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "augment": self.augment, "pixel_weight": self.pixel_weight, "width": self.width, "seed": self.seed}


@dataclass(frozen=True, config=_CONFIG)
class FeatureScaleParams:
    postgres_host: str
    postgres_port: int
    postgres_db: str
    postgres_user: str
    redis_connection: str
    postgres_nestloop: bool

    def __post_init__(self) -> None:
        _check(0 < self.postgres_port < 65536, "features.scale.postgres_port", "must be a TCP port")
        _check(bool(self.postgres_host and self.postgres_db and self.postgres_user),
               "features.scale.postgres_host/postgres_db/postgres_user", "must not be empty")
        _check(":" in self.redis_connection, "features.scale.redis_connection", "must be host:port (e.g. 127.0.0.1:6379)")


@dataclass(frozen=True, config=_CONFIG)
class FeaturesParams:
    project: str
    feature_service: str
    ttl_days: int
    scale: FeatureScaleParams

    def __post_init__(self) -> None:
        _check(self.project.replace("_", "").isalnum(), "features.project", "must be letters, digits and '_'")
        _check(self.ttl_days >= 1, "features.ttl_days", "must be >= 1")


@dataclass(frozen=True, config=_CONFIG)
class ContractsParams:
    max_failing_fraction: float
    latent_dim: int
    latent_norm_min: float
    latent_norm_max: float
    max_projection_loss: float
    age_min: float
    age_max: float

    def __post_init__(self) -> None:
        _check(0 <= self.max_failing_fraction <= 1, "contracts.max_failing_fraction", "must be between 0 and 1")
        _check(self.latent_norm_min < self.latent_norm_max, "contracts.latent_norm_min", "must be < latent_norm_max")
        _check(self.age_min < self.age_max, "contracts.age_min", "must be < age_max")


@dataclass(frozen=True, config=_CONFIG)
class TrainingParams:
    seed: int
    test_fraction: float
    coxph_alpha: float
    coxnet_l1_ratio: float
    coxnet_alpha_min_ratio: float
    deepsurv_hidden: tuple[int, ...]
    deepsurv_dropout: float
    deepsurv_epochs: int
    deepsurv_batch_size: int
    deepsurv_lr: float
    deepsurv_weight_decay: float
    deepsurv_val_fraction: float
    deepsurv_patience: int
    coxnet_cv_folds: int
    models: tuple[str, ...]
    fusion_members: tuple[str, ...]
    fusion_folds: int
    min_events_per_feature: float
    horizons_days: tuple[int, ...]

    def __post_init__(self) -> None:
        _check(0 < self.test_fraction < 1, "training.test_fraction", "must be between 0 and 1 (exclusive)")
        _check(0 < self.coxnet_l1_ratio <= 1, "training.coxnet_l1_ratio", "must be in (0, 1]")
        _check(len(self.deepsurv_hidden) >= 1 and all(h >= 1 for h in self.deepsurv_hidden),
               "training.deepsurv_hidden", "must be a non-empty list of positive layer widths")
        _check(0 <= self.deepsurv_dropout < 1, "training.deepsurv_dropout", "must be in [0, 1)")
        _check(self.deepsurv_epochs >= 1, "training.deepsurv_epochs", "must be >= 1")
        _check(self.fusion_folds >= 2, "training.fusion_folds", "must be >= 2")
        _check(0 <= self.deepsurv_val_fraction < 0.9, "training.deepsurv_val_fraction", "must be in [0, 0.9)")
        _check(self.deepsurv_patience >= 1, "training.deepsurv_patience", "must be >= 1")
        _check(self.coxnet_cv_folds >= 2, "training.coxnet_cv_folds", "must be >= 2")
        known = ("coxph_clinical", "deepsurv_clinical", "coxnet_latent", "deepsurv_latent")
        _check(all(m in known for m in self.models), "training.models", f"must be a list of {', '.join(known)}")
        _check(all(m in known for m in self.fusion_members), "training.fusion_members",
               f"must be a list of {', '.join(known)}")
        _check(len(self.horizons_days) >= 1 and all(h > 0 for h in self.horizons_days),
               "training.horizons_days", "must be a non-empty list of positive day counts")


@dataclass(frozen=True, config=_CONFIG)
class EvaluationParams:
    bootstrap: int
    seed: int

    def __post_init__(self) -> None:
        _check(self.bootstrap >= 0, "evaluation.bootstrap", "must be >= 0")


@dataclass(frozen=True, config=_CONFIG)
class RegistryParams:
    model_name: str
    min_delta: float
    bootstrap: int
    level: float
    calibration_tolerance: float
    calibration_max_error: float
    subgroup_tolerance: float
    subgroup_min_events: int
    require_contracts: bool
    require_approval: bool
    experiment: str
    tracking_uri: str | None
    scale_database: str

    def __post_init__(self) -> None:
        _check(-1 < self.min_delta < 1, "registry.min_delta", f"must be in (-1, 1) (a C-index difference), got {self.min_delta}")
        _check(self.bootstrap >= 10, "registry.bootstrap", f"must be >= 10 resamples (e.g. 1000), got {self.bootstrap}")
        _check(0 < self.level < 1, "registry.level", f"must be in (0, 1) (e.g. 0.95), got {self.level}")
        for name in ("calibration_tolerance", "calibration_max_error", "subgroup_tolerance"):
            _check(0 <= getattr(self, name) <= 1, f"registry.{name}", f"must be in [0, 1], got {getattr(self, name)}")
        _check(self.subgroup_min_events >= 1, "registry.subgroup_min_events", "must be >= 1 (e.g. 20)")
        _check(self.scale_database.replace("_", "").isalnum(), "registry.scale_database", "must be letters, digits and '_'")


@dataclass(frozen=True, config=_CONFIG)
class FlowsParams:
    inbox: str
    embedding_cron: str
    training_cron: str
    lock_timeout_s: float
    dask_scheduler: str | None
    prefect_api_url: str | None
    dvc_remote: str | None
    dvc_endpoint_url: str | None

    def __post_init__(self) -> None:
        for name in ("embedding_cron", "training_cron"):
            _check(len(getattr(self, name).split()) == 5, f"flows.{name}", "must be a 5-field cron expression")
        _check(self.lock_timeout_s >= 0, "flows.lock_timeout_s", "must be >= 0")


@dataclass(frozen=True, config=_CONFIG)
class ServingParams:
    host: str
    port: int
    max_upload_bytes: int
    max_upload_pixels: int
    max_body_bytes: int
    rate_limit_per_minute: int
    upload_retention_s: float
    ledger_url: str | None
    ledger_schema: str
    anchor_key: str | None
    anchor_file: str | None
    anchor_every: int
    max_batch: int
    photo_scoring: bool
    score_log: bool
    stage_timers: bool
    rescore_after_promotion: bool

    def __post_init__(self) -> None:
        _check(0 < self.port < 65536, "serving.port", "must be a TCP port")
        _check(self.max_upload_bytes > 0, "serving.max_upload_bytes", "must be > 0")
        _check(self.max_upload_pixels > 0, "serving.max_upload_pixels", "must be > 0")
        _check(self.max_body_bytes >= 256, "serving.max_body_bytes", "must be >= 256 (a score request is ~50 bytes)")
        _check(self.rate_limit_per_minute > 0, "serving.rate_limit_per_minute", "must be > 0")
        _check(self.upload_retention_s >= 0, "serving.upload_retention_s", "must be >= 0 (0: uploads are never kept)")
        _check(self.ledger_url is None or self.ledger_url.startswith(("postgresql://", "postgres://", "sqlite:")),
               "serving.ledger_url", "must be null, postgresql://... or sqlite:PATH")
        _check(self.ledger_schema.replace("_", "").isalnum() and self.ledger_schema.islower(),
               "serving.ledger_schema", "must be lower-case letters, digits and '_'")
        _check(self.max_batch >= 1, "serving.max_batch", "must be >= 1")
        _check(self.anchor_every >= 0, "serving.anchor_every", "must be >= 0 (0: anchor only at shutdown and with `facesurv audit anchor`)")


@dataclass(frozen=True, config=_CONFIG)
class GeneratorTrainingParams:
    photos: str | None
    start: str
    kimg: float
    batch_size: int
    g_lr: float
    d_lr: float
    r1_gamma: float
    pl_weight: float
    style_mixing_prob: float
    ema_kimg: float
    ada_mode: str
    ada_target: float
    ada_p: float
    ada_speed_kimg: float
    augment_ops: str
    tick_kimg: float
    kid_fakes: int
    kid_subsets: int
    grid_samples: int
    slices: int
    seed: int
    device: str
    mixed_precision: bool
    registered_name: str
    runs_dir: str

    def __post_init__(self) -> None:
        _check(self.start in ("scratch", "finetune"), "generator_training.start",
               f"must be 'scratch' (a new generator of the generator section's architecture) or 'finetune' "
               f"(continue from generator.checkpoint), got {self.start!r}")
        _check(self.kimg > 0, "generator_training.kimg", "must be > 0 (thousands of real images shown in all)")
        _check(self.batch_size >= 1, "generator_training.batch_size", "must be >= 1")
        _check(self.g_lr > 0 and self.d_lr > 0, "generator_training.g_lr/d_lr", "must be > 0 (the paper: 0.002)")
        _check(self.r1_gamma >= 0 and self.pl_weight >= 0, "generator_training.r1_gamma/pl_weight", "must be >= 0 (0 = off)")
        _check(0 <= self.style_mixing_prob <= 1, "generator_training.style_mixing_prob", "must be in [0, 1]")
        _check(self.ema_kimg >= 0, "generator_training.ema_kimg", "must be >= 0")
        _check(self.ada_mode in ("ada", "fixed", "off"), "generator_training.ada_mode",
               f"must be 'ada', 'fixed' or 'off', got {self.ada_mode!r}")
        _check(0 < self.ada_target < 1, "generator_training.ada_target", "must be in (0, 1) (ADA: 0.6)")
        _check(0 <= self.ada_p < 1, "generator_training.ada_p", "must be in [0, 1)")
        _check(self.ada_mode != "off" or self.ada_p == 0, "generator_training.ada_p",
               "must be 0 when ada_mode is 'off' (use ada_mode: fixed for a constant probability)")
        _check(self.ada_speed_kimg > 0, "generator_training.ada_speed_kimg", "must be > 0")
        _check(self.tick_kimg > 0, "generator_training.tick_kimg", "must be > 0")
        _check(self.kid_fakes >= 2 and self.kid_subsets >= 1, "generator_training.kid_fakes/kid_subsets",
               "must be >= 2 and >= 1")
        _check(self.grid_samples >= 1, "generator_training.grid_samples", "must be >= 1")
        _check(self.slices >= 1 and self.batch_size % self.slices == 0, "generator_training.slices",
               f"must be >= 1 and divide batch_size ({self.batch_size}), got {self.slices}")
        _check(self.seed >= 0, "generator_training.seed", "must be >= 0")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "generator_training.device",
               f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _check(bool(self.registered_name.strip()), "generator_training.registered_name", "must not be empty")


CNN_MODELS = ("cnn_resnet18", "cnn_vgg16")


@dataclass(frozen=True, config=_CONFIG)
class CNNParams:
    models: tuple[str, ...]
    image_size: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    val_fraction: float
    patience: int
    vgg16_trainable_blocks: int
    augment: bool

    def __post_init__(self) -> None:
        _check(all(m in CNN_MODELS for m in self.models) and len(set(self.models)) == len(self.models),
               "cnn.models", f"must list each of {', '.join(CNN_MODELS)} at most once (or be [])")
        _check(16 <= self.image_size <= 1024, "cnn.image_size", "must be between 16 and 1024")
        _check(self.epochs >= 1, "cnn.epochs", "must be >= 1")
        _check(self.batch_size >= 2, "cnn.batch_size", "must be >= 2 (the Cox loss compares patients in a batch)")
        _check(self.lr > 0, "cnn.lr", "must be > 0")
        _check(self.weight_decay >= 0, "cnn.weight_decay", "must be >= 0")
        _check(0 < self.val_fraction < 0.9, "cnn.val_fraction", "must be in (0, 0.9)")
        _check(self.patience >= 1, "cnn.patience", "must be >= 1")
        _check(1 <= self.vgg16_trainable_blocks <= 5, "cnn.vgg16_trainable_blocks", "must be 1 to 5 (5: all)")


@dataclass(frozen=True, config=_CONFIG)
class AttributesParams:
    edit_betas: tuple[float, ...]
    loop_patients: int
    age_folds: int
    age_shuffles: int
    min_subgroup_events: int
    age_band_edges: tuple[float, ...]
    bootstrap: int

    def __post_init__(self) -> None:
        b = self.edit_betas
        _check(len(b) >= 3 and all(x < y for x, y in zip(b, b[1:], strict=False)) and 0.0 in b,
               "attributes.edit_betas", "must be at least 3 increasing amounts including 0 (the unedited row)")
        _check(self.loop_patients >= 1, "attributes.loop_patients", "must be >= 1")
        _check(self.age_folds >= 2, "attributes.age_folds", "must be >= 2")
        _check(self.age_shuffles >= 0, "attributes.age_shuffles", "must be >= 0")
        _check(self.min_subgroup_events >= 1, "attributes.min_subgroup_events", "must be >= 1")
        e = self.age_band_edges
        _check(len(e) >= 3 and all(x < y for x, y in zip(e, e[1:], strict=False)), "attributes.age_band_edges",
               "must be at least 3 increasing ages")
        _check(self.bootstrap >= 0, "attributes.bootstrap", "must be >= 0")


@dataclass(frozen=True, config=_CONFIG)
class DriftParams:
    clinical_alpha: float
    max_latent_shift_sd: float
    mmd_alpha: float
    permutations: int

    def __post_init__(self) -> None:
        _check(0 < self.clinical_alpha < 1, "drift.clinical_alpha", "must be in (0, 1)")
        _check(self.max_latent_shift_sd > 0, "drift.max_latent_shift_sd", "must be > 0")
        _check(0 < self.mmd_alpha < 1, "drift.mmd_alpha", "must be in (0, 1)")
        _check(self.permutations >= 0, "drift.permutations", "must be >= 0")
        _check(self.permutations == 0 or self.mmd_alpha >= 1 / (1 + self.permutations), "drift.mmd_alpha",
               f"must be >= 1/(1 + drift.permutations) = {1 / (1 + self.permutations):.4f}, or the test can never fire")


@dataclass(frozen=True, config=_CONFIG)
class OpenLineageParams:
    transport: str
    path: str
    url: str | None
    endpoint: str
    namespace: str
    timeout_s: float

    def __post_init__(self) -> None:
        _check(self.transport in ("file", "http"), "openlineage.transport", f"must be 'file' or 'http', got {self.transport!r}")
        _check(bool(self.path.strip()), "openlineage.path", "must name a folder (relative: under the workspace)")
        _check(self.transport != "http" or bool(self.url), "openlineage.url",
               "must be set when transport is http (e.g. http://localhost:5000 for Marquez)")
        _check(self.url is None or self.url.startswith(("http://", "https://")), "openlineage.url",
               f"must be null or an http(s):// URL, got {self.url!r}")
        _check(bool(self.namespace.strip()), "openlineage.namespace", "must not be empty")
        _check(self.timeout_s > 0, "openlineage.timeout_s", "must be > 0")


@dataclass(frozen=True, config=_CONFIG)
class DemoParams:
    patients: int
    seed: int
    out: str
    faces: str | None
    train_generator: bool

    def __post_init__(self) -> None:
        _check(self.patients >= 0, "demo.patients", "must be >= 0")


@dataclass(frozen=True, config=_CONFIG)
class Params:
    profile: str
    cohort: CohortParams
    synth: SynthParams
    align: AlignParams
    generator: GeneratorParams
    perceptual: PerceptualParams
    projection: ProjectionParams
    features: FeaturesParams
    contracts: ContractsParams
    training: TrainingParams
    evaluation: EvaluationParams
    registry: RegistryParams
    flows: FlowsParams
    serving: ServingParams
    demo: DemoParams
    generator_training: GeneratorTrainingParams
    encoder: EncoderParams
    cnn: CNNParams
    attributes: AttributesParams
    drift: DriftParams
    openlineage: OpenLineageParams
    # sha256 of the canonical JSON of the file's content; lineage records it
    params_hash: str = dataclasses.field(default="", compare=False)

    def __post_init__(self) -> None:
        _check(self.profile in PROFILES, "profile", f"must be one of {', '.join(PROFILES)}, got {self.profile!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("params_hash")
        return d


_TYPE_HINTS = {"int": "an integer", "bool": "true or false", "float": "a number", "string": "a string",
               "list": "a list", "tuple": "a list", "dict": "a mapping", "dataclass": "a mapping"}


def _problem(err: Mapping[str, Any]) -> ConfigError:
    """pydantic's first complaint as the one-line, key-naming error the rest of the project uses."""
    loc = [str(x) for x in err["loc"] if not str(x).startswith(("function-", "json-or-python"))]
    loc = [x for x in loc if x not in ("int", "str", "float", "bool", "none", "tuple", "list")]
    where = ".".join(p if not p.isdigit() else f"[{p}]" for p in loc).replace(".[", "[") or "top level"
    kind = err["type"]
    if kind == "missing":
        return ConfigError(f"params.yaml: {where} is missing")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        section: Any = Params
        for name in loc[:-1]:
            section = typing.get_type_hints(section).get(name, section)
        known = ", ".join(f.name for f in dataclasses.fields(section) if f.name != "params_hash")
        return ConfigError(f"params.yaml: {where} is not a known setting (known: {known})")
    expected = next((v for k, v in _TYPE_HINTS.items() if kind.startswith(k)), None)
    if expected:
        return ConfigError(f"params.yaml: {where} must be {expected}, got {err.get('input')!r}")
    return ConfigError(f"params.yaml: {where}: {err['msg']}")


# The paper's projection (Hagag et al., NVIDIA's projector in z): what `projection.method: paper` selects
PAPER_PROJECTION: dict[str, Any] = {
    "space": "z", "loss": "perceptual", "steps": 1000, "learning_rate": 0.1, "noise_regularize": 1e5,
    "initial_noise_factor": 0.05, "noise_ramp_length": 0.75, "lr_rampdown_length": 0.25, "lr_rampup_length": 0.05,
    "noise_mode": "optimize", "z_init": "nearest_w_avg", "clamp_output": False, "init": "mean"}
PAPER_PERCEPTUAL: dict[str, Any] = {"network": "lpips-vgg16", "resize": 256}
PAPER_ALIGN_SIZE = 512


def _apply_method(params: Params) -> Params:
    """projection.method: paper replaces the settings it names (the rest of the section still applies)."""
    if params.projection.method != "paper":
        return params
    return dataclasses.replace(
        params, projection=dataclasses.replace(params.projection, **PAPER_PROJECTION),
        perceptual=dataclasses.replace(params.perceptual, **PAPER_PERCEPTUAL),
        align=dataclasses.replace(params.align, output_size=PAPER_ALIGN_SIZE))


def parse_params(raw: dict[str, Any]) -> Params:
    """Validate an already-parsed params mapping; raise ConfigError naming the bad key."""
    from pydantic import TypeAdapter, ValidationError

    if not isinstance(raw, dict):
        raise ConfigError(f"params.yaml: top level must be a mapping, got {type(raw).__name__}")
    try:
        # strict JSON mode: "yes" is not a bool nor "3" an int, and a YAML list fills a tuple
        params = TypeAdapter(Params).validate_json(json.dumps({**raw, "params_hash": ""}, default=str), strict=True)
    except ValidationError as exc:
        raise _problem(exc.errors()[0]) from None
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()
    try:
        params = _apply_method(params)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"params.yaml: projection.method paper: {exc}") from None
    return dataclasses.replace(params, params_hash=digest)


def load_params(path: Path) -> Params:
    """Read and validate params.yaml. Errors are one line and name the file and key."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no params.yaml here (pass --workspace DIR, or run `facesurv init DIR`)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: malformed YAML{at}: {problem}") from None
    if raw is None:
        raise ConfigError(f"{path}: file is empty")
    try:
        return parse_params(raw)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("params.yaml:", f"{path}:", 1)) from None


def with_overrides(params: Params, **sections: dict[str, Any]) -> Params:
    """Return a copy with some section fields replaced (CLI options), revalidated."""
    raw = params.to_dict()
    for section, values in sections.items():
        for key, value in values.items():
            if value is not None:
                raw[section][key] = list(value) if isinstance(value, tuple) else value
    return parse_params(json.loads(json.dumps(raw)))
