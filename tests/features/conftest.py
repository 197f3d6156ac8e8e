"""Feature-store fixtures: a tiny seeded gbsg2 cohort, its latents, one applied local store per session.

`import feast` and a first apply cost tens of seconds on this machine, so one applied
store is shared; tests that add rows use their own patient ids so they do not interact.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

N_PATIENTS = 30
N_WITH_LATENT = 25


@pytest.fixture(scope="session")
def feat_params(params):
    """Repository params with the local profile and the gbsg2 base the fixtures use."""
    import dataclasses

    from ground.config import with_overrides

    return dataclasses.replace(with_overrides(params, cohort={"base": "gbsg2"}), profile="local")


@pytest.fixture(scope="session")
def cohort(feat_params) -> pd.DataFrame:
    from features.cohort import import_cohort

    c = feat_params.cohort
    df = import_cohort("gbsg2", seed=0, admission_start=c.admission_start,
                       admission_span_days=c.admission_span_days, record_lag_days=c.record_lag_days)
    return df.head(N_PATIENTS).reset_index(drop=True)


_NO_COLUMN = object()


def _latents(photo_ids: list[str], *, seed: int, generator_sha256: str = "a" * 64, scale: float = 1.0,
             generator_version: Any = _NO_COLUMN) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(photo_ids)
    df = pd.DataFrame({
        "photo_id": photo_ids,
        "latent": list((rng.standard_normal((n, 512)) * scale).astype(np.float32)),
        "space": "w", "steps": 10,
        "perceptual_loss": rng.uniform(0.1, 0.5, n).astype(np.float32),
        "mse": rng.uniform(0.01, 0.1, n).astype(np.float32),
        "generator_sha256": generator_sha256, "generator_is_random_init": True,
        "perceptual_network": "stlpips", "perceptual_is_stand_in": True,
        "photo_sha256": [hashlib.sha256(f"{p}:{seed}".encode()).hexdigest() for p in photo_ids],
    })
    if generator_version is not _NO_COLUMN:  # by default the table of an older facesurv: no such column
        df["generator_version"] = generator_version
    return df


@pytest.fixture(scope="session")
def make_latents():
    """make_latents(photo_ids, *, seed, generator_sha256=..., scale=1.0[, generator_version]) ->
    latents.parquet-shaped frame; without generator_version it has no such column, as a table
    written before versions were recorded (the session store is written from one)."""
    return _latents


@dataclass
class LocalStore:
    repo: Path
    store: Any
    params: Any
    cohort: pd.DataFrame
    latents: pd.DataFrame


@pytest.fixture(scope="session")
def local_store(tmp_path_factory, feat_params, cohort) -> LocalStore:
    import features.store as fs

    repo = tmp_path_factory.mktemp("feature_repo")
    store = fs.apply_repo(repo, feat_params)
    lat = _latents(cohort["photo_id"].head(N_WITH_LATENT).tolist(), seed=1)
    rows, unmatched = fs.join_latents(lat, cohort, aligner_version="test-aligner-1")
    assert unmatched.empty
    assert fs.write_clinical(repo, cohort, feat_params, ) == N_PATIENTS
    assert fs.write_latents(repo, rows, feat_params) == N_WITH_LATENT
    return LocalStore(repo=repo, store=store, params=feat_params, cohort=cohort, latents=lat)
