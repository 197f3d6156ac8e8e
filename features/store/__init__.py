"""The prognosis feature store (Feast): apply, write, materialise, retrieve.

    apply_repo(repo_dir, params) -> FeatureStore
    write_clinical(repo_dir, df, params) -> n_new
    write_latents(repo_dir, df, params) -> n_new        # rows from join_latents
    join_latents(latents, clinical, *, manifest=None, aligner_version=None) -> (rows, unmatched)
    materialize(repo_dir, params, *, end=None) -> {view: rows}
    training_set(repo_dir, entity_df, params) -> (frame, TrainingSetReport)
    online_features(repo_dir, patient_ids, params) -> DataFrame

Heavy imports (feast, pyarrow) happen inside the functions.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.feature_repo.schema import CLINICAL_VIEW, LATENT_VIEW
from features.store.latents import join_latents
from features.store.repo import (
    apply_repo,
    offline_locations,
    open_store,
    render_store_yaml,
    teardown_repo,
)
from features.store.retrieval import TrainingSetReport, materialize, online_features, training_set
from ground.config import Params


def write_clinical(repo_dir: Path | str, df: pd.DataFrame, params: Params) -> int:
    """Add clinical rows (clinical.csv schema; labels are ignored); returns how many were new.

    Deduplicated on (patient_id, record_known_at): a corrected record needs a new
    record_known_at, which is also what keeps training sets point-in-time correct.
    """
    from features.store.offline import write_rows

    return write_rows(repo_dir, params, CLINICAL_VIEW, df)


def write_latents(repo_dir: Path | str, df: pd.DataFrame, params: Params) -> int:
    """Add face_latent rows (from join_latents); returns how many were new.

    Deduplicated on (photo_sha256, generator_sha256): the same photo under the same
    generator adds nothing.
    """
    from features.store.offline import write_rows

    return write_rows(repo_dir, params, LATENT_VIEW, df)


__all__ = [
    "TrainingSetReport", "apply_repo", "join_latents", "materialize", "offline_locations", "online_features",
    "open_store", "render_store_yaml", "teardown_repo", "training_set", "write_clinical", "write_latents",
]
