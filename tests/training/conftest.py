"""Training-area fixtures: one MLflow SQLite store per session, a small seeded cohort with
synthetic latents carrying a known signal, and fast parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

LATENT_DIM_TEST = 16
TRUE_DIRECTION = np.zeros(LATENT_DIM_TEST)
TRUE_DIRECTION[:3] = [1.0, -0.7, 0.5]


def synth_frame(n: int, *, seed: int, dim: int = LATENT_DIM_TEST) -> pd.DataFrame:
    """Real gbsg2 clinical rows + seeded latents; hazard = exp(z @ TRUE_DIRECTION + 0.4 * pnodes_std).

    Latent dimensions get different scales so that mapping coefficients back to the raw
    latent scale matters.
    """
    from features.cohort import import_cohort

    base = import_cohort("gbsg2", seed=0, admission_start="2012-01-01", admission_span_days=1000,
                         record_lag_days=3)
    rng = np.random.default_rng(seed)
    df = base.sample(n, random_state=seed).reset_index(drop=True)
    z = rng.normal(size=(n, dim))
    scales = np.linspace(0.5, 2.0, dim)
    lp = z @ TRUE_DIRECTION[:dim] + 0.4 * (df["pnodes"] - df["pnodes"].mean()) / df["pnodes"].std()
    t = rng.exponential(900.0 * np.exp(-lp))
    c = rng.uniform(300, 2600, n)
    df["time_days"] = np.maximum(np.minimum(t, c), 1.0).round(1)
    df["event"] = (t <= c).astype(int)
    df["latent"] = list(z * scales)
    return df


@pytest.fixture(scope="session")
def cohort_df() -> pd.DataFrame:
    return synth_frame(220, seed=1)


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    """(tracking_uri, artifact_root) shared by the whole session: a fresh SQLite DB costs seconds."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", root / "artifacts"


@pytest.fixture(scope="session")
def fast_params(params):
    from ground.config import with_overrides

    return with_overrides(
        params,
        training={"models": ["coxph_clinical", "coxnet_latent"], "fusion_members": ["coxnet_latent", "coxph_clinical"],
                  "fusion_folds": 3, "coxnet_cv_folds": 3, "deepsurv_epochs": 5, "deepsurv_hidden": [8]},
        evaluation={"bootstrap": 20},
        # tables made here pass no data contract; tests of the contracts gate record their own results
        registry={"model_name": "test-prognosis", "require_contracts": False, "bootstrap": 200},
    )


@pytest.fixture(scope="session")
def trained(cohort_df, mlflow_store, fast_params, tmp_path_factory):
    """One full training (tracked and registered) shared by the pipeline/registry tests."""
    from training.pipeline import train

    uri, art = mlflow_store
    split_path = tmp_path_factory.mktemp("split") / "test_split.json"
    res = train(cohort_df, params=fast_params, tracking_uri=uri, artifact_root=art, split_path=split_path,
                data_versions={"photos": "md5-photos-1", "clinical": "md5-clinical-1"}, feature_service="prognosis_v1",
                out_dir=tmp_path_factory.mktemp("figs"))
    return res, split_path


@pytest.fixture(scope="session")
def true_direction() -> np.ndarray:
    """The hidden risk direction of the synthetic latents, on the raw (scaled) latent scale."""
    return TRUE_DIRECTION / np.linspace(0.5, 2.0, LATENT_DIM_TEST)
