"""The two halves of a training: fitting without MLflow, and recording that never touches MLflow's
process-wide state."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from training.runs import scoped_tracking_uri


def _process_uri() -> tuple[str | None, str | None]:
    """MLflow's process-wide tracking URI as set (None: never set) and the variable it writes."""
    from mlflow.tracking._tracking_service import utils

    return utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")


def test_fit_and_evaluate_gives_trains_models_and_table_without_mlflow(trained, cohort_df, fast_params, tmp_path):
    """The demo's oracle calls the pure half alone: same split, same Table 1, nothing tracked."""
    from training.fit import fit_and_evaluate
    from training.splits import read_split

    res, split_path = trained
    sentinel = tmp_path / "sentinel.db"
    with scoped_tracking_uri(f"sqlite:///{sentinel}"):
        fitted = fit_and_evaluate(cohort_df, params=fast_params, split=read_split(split_path))
    assert not sentinel.exists()  # no store was opened, not even the process-wide one
    assert fitted.split.split_id == res.split.split_id
    assert list(fitted.models) == list(res.models) and list(fitted.evaluations) == list(res.evaluations)
    pd.testing.assert_frame_equal(fitted.table1, res.table1)
    np.testing.assert_array_equal(fitted.health_direction, res.health_direction)
    assert fitted.fusion_only == []


FIT_ALONE = r"""
import sys
from tests.training.conftest import synth_frame
from ground.config import load_params, with_overrides
from training.fit import fit_and_evaluate

params = with_overrides(load_params(sys.argv[1]), training={"models": ["coxph_clinical", "coxnet_latent"],
    "fusion_members": ["coxph_clinical", "coxnet_latent"], "fusion_folds": 3, "coxnet_cv_folds": 3},
    evaluation={"bootstrap": 5})
fitted = fit_and_evaluate(synth_frame(220, seed=1), params=params)
print(list(fitted.table1["model"]), sorted(m for m in sys.modules if m.split(".")[0] == "mlflow"))
"""


def test_fit_and_evaluate_never_imports_mlflow(repo_root, tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", FIT_ALONE, str(repo_root / "params.yaml")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(repo_root)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "['coxph_clinical', 'coxnet_latent', 'fusion'] []"
    assert not list(tmp_path.iterdir())  # and writes nothing when given no split path


def test_training_and_promotion_leave_mlflows_global_tracking_uri_alone(cohort_df, fast_params, tmp_path):
    from mlflow import MlflowClient

    from ground.config import with_overrides
    from training.gates import GatePolicy
    from training.pipeline import train
    from training.registry import promote

    params = with_overrides(fast_params, training={"models": ["coxph_clinical"], "fusion_members": ["coxph_clinical"]},
                            evaluation={"bootstrap": 0}, registry={"model_name": "global-state"})
    store = f"sqlite:///{tmp_path / 'store.db'}"
    sentinel_db = tmp_path / "sentinel.db"
    sentinel = f"sqlite:///{sentinel_db}"
    with scoped_tracking_uri(sentinel):
        res = train(cohort_df.drop(columns=["latent"]), params=params, tracking_uri=store,
                    artifact_root=tmp_path / "artifacts", split_path=tmp_path / "split.json")
        assert _process_uri() == (sentinel, sentinel)
        decision = promote(tracking_uri=store, model_name="global-state", policy=GatePolicy.from_params(params),
                           experiment=params.registry.experiment, artifact_root=tmp_path / "artifacts")
        assert _process_uri() == (sentinel, sentinel)
    assert not sentinel_db.exists()  # nothing was written through the process-wide URI either
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    assert client.get_run(res.parent_run_id).info.status == "FINISHED" and decision.promoted
    assert str(client.get_model_version_by_alias("global-state", "champion").version) == res.served_version

    before = _process_uri()  # whatever the session holds, set or not, is what remains
    promote(tracking_uri=store, model_name="global-state", policy=GatePolicy.from_params(params),
            experiment=params.registry.experiment, artifact_root=tmp_path / "artifacts")
    assert _process_uri() == before


def test_scoped_tracking_uri_restores_an_unset_uri_and_the_variable(monkeypatch):
    import mlflow
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with scoped_tracking_uri("sqlite:///elsewhere.db"):
        assert mlflow.get_tracking_uri() == "sqlite:///elsewhere.db"
    assert _process_uri() == (None, None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-the-environment.db")
    with scoped_tracking_uri("sqlite:///elsewhere.db"):
        pass
    assert _process_uri() == (None, "sqlite:///from-the-environment.db")
