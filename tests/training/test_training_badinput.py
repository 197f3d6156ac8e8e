"""Bad training input: a one-line error naming the problem, and no MLflow run recorded as successful."""

from __future__ import annotations

import numpy as np
import pytest

from ground.errors import DataError


@pytest.fixture()
def run_count(mlflow_store):
    from mlflow import MlflowClient

    def count(status: str | None = None) -> int:
        client = MlflowClient(tracking_uri=mlflow_store[0])
        exp = client.get_experiment_by_name("facesurv-training")
        if exp is None:
            return 0
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        return sum(1 for r in runs if status is None or r.info.status == status)

    return count


def _train(df, fast_params, mlflow_store, tmp_path, **over):
    from ground.config import with_overrides
    from training.pipeline import train

    params = with_overrides(fast_params, **over) if over else fast_params
    return train(df, params=params, tracking_uri=mlflow_store[0], artifact_root=mlflow_store[1],
                 split_path=tmp_path / "split.json")


def _case_all_censored(df):
    df["event"] = 0
    return df, r"all \d+ patients are censored"


def _case_nan_covariate(df):
    df.loc[7, "pnodes"] = np.nan
    return df, r"covariate 'pnodes' has 1 missing or non-numeric values \(first at row 7\)"


def _case_nonpositive_time(df):
    df.loc[3, "time_days"] = 0.0
    return df, r"time must be > 0 days; 1 values are not \(first at row 3"


def _case_few_events(df):
    df["event"] = 0
    df.loc[:4, "event"] = 1
    return df, r"too few events for the number of features \(\d events for \d+ features"


def _case_empty(df):
    return df.iloc[0:0], r"training data is empty \(0 rows\)"


@pytest.mark.parametrize("case", [_case_all_censored, _case_nan_covariate, _case_nonpositive_time,
                                  _case_few_events, _case_empty])
def test_bad_input_is_one_clear_error_and_no_successful_run(case, cohort_df, fast_params, mlflow_store, tmp_path,
                                                            run_count):
    df, pattern = case(cohort_df.copy())
    before = run_count("FINISHED")
    with pytest.raises(DataError, match=pattern) as info:
        _train(df, fast_params, mlflow_store, tmp_path)
    assert "\n" not in str(info.value)
    assert run_count("FINISHED") == before
    assert not (tmp_path / "split.json").exists()  # nothing frozen from bad data


def test_nan_latent_is_rejected(cohort_df, fast_params, mlflow_store, tmp_path):
    df = cohort_df.copy()
    df.at[5, "latent"] = np.full(16, np.nan)
    with pytest.raises(DataError, match=r"1 latents contain NaN or infinite values \(first at row 5\)"):
        _train(df, fast_params, mlflow_store, tmp_path)


def test_a_model_that_cannot_be_fitted_records_no_run(cohort_df, fast_params, mlflow_store, tmp_path, run_count,
                                                      monkeypatch):
    """Every model is fitted (training.fit) before the first run is created, so a failed fit leaves no run."""
    from training.coxph import CoxPHModel

    def boom(self, X, time, event):
        raise DataError("coxph: the Cox fit failed (synthetic failure)")

    monkeypatch.setattr(CoxPHModel, "_fit_matrix", boom)
    before_ok, before_failed = run_count("FINISHED"), run_count("FAILED")
    with pytest.raises(DataError, match="synthetic failure"):
        _train(cohort_df, fast_params, mlflow_store, tmp_path,
               training={"models": ["coxph_clinical"], "fusion_members": ["coxph_clinical"]})
    assert run_count("FINISHED") == before_ok
    assert run_count("FAILED") == before_failed


def test_failure_while_recording_marks_the_runs_failed(cohort_df, fast_params, mlflow_store, tmp_path, run_count,
                                                       monkeypatch):
    import training.plots

    def boom(*args, **kwargs):
        raise OSError("no space left on device (synthetic failure)")

    monkeypatch.setattr(training.plots, "evaluation_figures", boom)
    before_ok, before_failed = run_count("FINISHED"), run_count("FAILED")
    with pytest.raises(OSError, match="synthetic failure"):
        _train(cohort_df, fast_params, mlflow_store, tmp_path,
               training={"models": ["coxph_clinical"], "fusion_members": ["coxph_clinical"]})
    assert run_count("FINISHED") == before_ok
    assert run_count("FAILED") >= before_failed + 2  # the parent and the nested model run


def test_latent_only_models_without_latents_is_an_error(cohort_df, fast_params, mlflow_store, tmp_path):
    with pytest.raises(DataError, match="lists only latent models and the data has no `latent` column"):
        _train(cohort_df.drop(columns=["latent"]), fast_params, mlflow_store, tmp_path,
               training={"models": ["coxnet_latent"], "fusion_members": ["coxnet_latent"]})
