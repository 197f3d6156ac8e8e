"""Train and register a small real champion (CoxPH on gbsg2 numeric covariates) in an MLflow
registry: used by the serving tests and benchmarks/serving_load.py until the training
part's champion is wired in. Real MLflow, real scikit-survival, nothing mocked.

Registered like training registers: the fitted numbers as JSON, the wrapper as a models-from-code
file, and the sha256 manifest of every logged file as model-version tags (training.integrity),
so the serving loader's verification runs on it."""

from __future__ import annotations

import json
from pathlib import Path

FEATURES = ["age", "estrec", "pnodes", "progrec", "tsize"]
CODE = Path(__file__).with_name("coxph_pyfunc.py")


def cohort():
    from features.cohort import import_cohort

    return import_cohort("gbsg2", seed=0, admission_start="2012-01-01", admission_span_days=1460,
                         record_lag_days=14)


def register_reference_champion(root: Path, *, model_name: str, horizons=(365, 1095, 1825)) -> str:
    """Register version 1 of `model_name` with alias champion under root; returns the tracking URI."""
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    df = cohort()
    X = df[FEATURES].to_numpy(dtype=float)
    y = Surv.from_arrays(event=df["event"].astype(bool), time=df["time_days"])
    est = CoxPHSurvivalAnalysis(alpha=1e-4).fit(X, y)
    s0 = est._baseline_model.baseline_survival_
    state = {"coef": [float(c) for c in est.coef_], "columns": FEATURES,
             "train_risk": [float(r) for r in est.predict(X)], "horizons": [int(h) for h in horizons],
             "baseline_survival": {str(h): float(s0(min(h, s0.domain[1]))) for h in horizons}}
    state_file = root / "estimator.json"
    state_file.write_text(json.dumps(state), encoding="utf-8")

    from training.runs import scoped_tracking_uri

    uri = f"sqlite:///{root / 'mlflow.db'}"
    # a plain MLflow user's fluent calls, with the process-wide URI put back afterwards: a test
    # that leaves it set hides a library that forgets to pass its own
    with scoped_tracking_uri(uri):
        exp = mlflow.create_experiment("serving-reference", artifact_location=(root / "artifacts").as_uri())
        example = df[FEATURES].head(3)
        out = {"risk_score": np.zeros(3), "risk_percentile": np.zeros(3),
               **{f"survival_{h}d": np.zeros(3) for h in horizons}}
        import pandas as pd

        from training.integrity import logged_model_manifest, manifest_tags

        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        with mlflow.start_run(experiment_id=exp) as run:
            info = mlflow.pyfunc.log_model(name="model", python_model=str(CODE), artifacts={"estimator": str(state_file)},
                                           signature=infer_signature(example, pd.DataFrame(out)),
                                           # explicit: skips MLflow's requirement inference (a slow subprocess)
                                           pip_requirements=["mlflow", "scikit-survival", "pandas"])
            files = logged_model_manifest(info.model_id, tracking_uri=uri,
                                          written={"artifacts/estimator.json": state_file, CODE.name: CODE})
        client.create_registered_model(model_name)
        mv = client.create_model_version(model_name, info.model_uri, run_id=run.info.run_id, tags=manifest_tags(files))
        client.set_registered_model_alias(model_name, "champion", mv.version)
    return uri
