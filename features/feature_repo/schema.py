"""Column-level schema of the two feature views, as plain data (no Feast import).

The clinical view's covariates differ per base dataset (features.cohort), so its schema
is built from the cohort spec of the workspace's `cohort.base`: numeric covariates are
Float64, categorical ones String. One feature repo holds one base; a workspace that
switches base re-applies the repo and the registry then holds the new schema.
Survival labels (time_days, event) are never here: they travel with the entity dataframe.
"""

from __future__ import annotations

from ground.types import LATENT_DIM

ENTITY = "patient"
JOIN_KEY = "patient_id"
CLINICAL_VIEW = "clinical"
OFFLINE_DIR = "offline"  # <feature_repo>/offline/<view>/: the views' parquet parts
LATENT_VIEW = "face_latent"
CLINICAL_TS = "record_known_at"
LATENT_TS = "photo_taken_at"
CREATED_TS = "written_at"  # when the row reached the store: breaks ties, drives materialisation

# The face_latent view: (feature name, kind). Kinds map to Feast types in definitions.py
# and to pyarrow types in the offline writer, so both sides agree on one list.
LATENT_FEATURES: tuple[tuple[str, str], ...] = (
    ("latent", "float32_list"),
    ("space", "string"),
    ("steps", "int64"),
    ("perceptual_loss", "float32"),
    ("mse", "float32"),
    ("generator_sha256", "string"),
    ("generator_is_random_init", "bool"),
    ("generator_version", "string"),
    ("perceptual_network", "string"),
    ("perceptual_is_stand_in", "bool"),
    ("encoder_sha256", "string"),
    ("aligner_version", "string"),
    ("photo_id", "string"),
    ("photo_sha256", "string"),
    # the OpenLineage run (flows.openlineage_events) of the flow that wrote the row: score -> run graph
    ("openlineage_run_id", "string"),
    ("openlineage_namespace", "string"),
)

# Every face_latent feature but the latent: how a photo was embedded and by which run, never a
# patient property, so never a model input (training.preprocess, serving.online read this).
LATENT_PROVENANCE: tuple[str, ...] = tuple(name for name, _ in LATENT_FEATURES if name != "latent")

# face_latent features added after rows were first stored, all nullable: rows to write may lack them
# (a latents.parquet written before they existed), and stored rows without them (parquet parts,
# PostgreSQL tables) are brought up to the schema with nulls (features.store.offline.ensure_offline).
LATENT_ADDED_LATER: tuple[str, ...] = ("generator_version", "encoder_sha256", "openlineage_run_id",
                                       "openlineage_namespace")

# Keys that make a written row "the same row": writing it again adds nothing.
LATENT_DEDUPE = ("photo_sha256", "generator_sha256")
CLINICAL_DEDUPE = ("patient_id", "record_known_at")


def clinical_features(base: str) -> tuple[tuple[str, str], ...]:
    """The clinical view's (feature, kind) list for a base dataset: age, sex, cancer_type, covariates."""
    from features.cohort import covariate_columns

    numeric, categorical = covariate_columns(base)
    return (("age", "float64"), ("sex", "string"), ("cancer_type", "string"),
            *((c, "float64") for c in numeric), *((c, "string") for c in categorical))


def latent_dim() -> int:
    return LATENT_DIM
