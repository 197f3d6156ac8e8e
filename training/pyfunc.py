"""The served model: one MLflow pyfunc holding a fitted survival model (the fusion and its members).

Input: a DataFrame, one row per patient, with the clinical covariates the model was trained
on and, when the model uses photos (`needs_latent`), a `latent` column of 512 floats per
row. Output: risk_score (log relative hazard, higher = worse), risk_percentile (0-100 among
the training cohort) and survival_<h>d for every configured horizon h in days.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.base import SurvivalModel


def output_columns(horizons: Sequence[int]) -> list[str]:
    return ["risk_score", "risk_percentile", *[f"survival_{int(h)}d" for h in horizons]]


def predict_frame(model: SurvivalModel, df: pd.DataFrame, horizons: Sequence[int]) -> pd.DataFrame:
    """The served output for `df` (see module docstring); index follows df."""
    risk = model.predict_risk(df)
    surv = model.survival_from_risk(risk, np.asarray(horizons, dtype=np.float64))
    out = pd.DataFrame({"risk_score": risk, "risk_percentile": model.risk_percentile(risk)}, index=df.index)
    for j, h in enumerate(horizons):
        out[f"survival_{int(h)}d"] = surv[:, j]
    return out


def _prognosis_model_class() -> type:
    """Build the pyfunc class on first use: importing mlflow has side effects (it sets a
    telemetry environment variable), and nothing may happen when this module is imported."""
    from mlflow.pyfunc import PythonModel

    class PrognosisModel(PythonModel):
        """pyfunc wrapper: artifacts["model"] is the pickled SurvivalModel."""

        def __init__(self, horizons: Sequence[int]) -> None:
            self.horizons = [int(h) for h in horizons]
            self.model: SurvivalModel | None = None

        def load_context(self, context: Any) -> None:
            with open(context.artifacts["model"], "rb") as fh:
                self.model = pickle.load(fh)

        def predict(self, context: Any, model_input: pd.DataFrame,
                    params: dict[str, Any] | None = None) -> pd.DataFrame:
            df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
            return predict_frame(self.model, df.reset_index(drop=True), self.horizons)

    # importable as training.pyfunc.PrognosisModel, so pickles refer to it by name
    PrognosisModel.__module__ = __name__
    PrognosisModel.__qualname__ = "PrognosisModel"
    return PrognosisModel


def __getattr__(name: str) -> Any:
    if name == "PrognosisModel":
        cls = _prognosis_model_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def save_model_pickle(model: SurvivalModel, path: Path) -> Path:
    with open(path, "wb") as fh:
        pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def input_example(df: pd.DataFrame, model: SurvivalModel, n: int = 2) -> pd.DataFrame:
    """The columns the model reads, as a small example frame (latent as lists of floats)."""
    p = getattr(model, "members", None)
    cols: list[str] = []
    for m in (p.values() if p else [model]):
        cols += [c for c in (*m.preprocessor.numeric, *m.preprocessor.categorical) if c not in cols]
    ex = df[cols].head(n).reset_index(drop=True).copy()
    if model.needs_latent:
        ex["latent"] = [np.asarray(v, dtype=np.float64).tolist() for v in df["latent"].head(n)]
    return ex


def signature_for(example: pd.DataFrame, output: pd.DataFrame):
    """Explicit model signature: numbers as double, categories as string, latent as Array(double)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    specs = []
    for col in example.columns:
        if col == "latent":
            specs.append(ColSpec(Array("double"), col))
        elif pd.api.types.is_numeric_dtype(example[col]) and not pd.api.types.is_bool_dtype(example[col]):
            specs.append(ColSpec("double", col))
        else:
            specs.append(ColSpec("string", col))
    outs = Schema([ColSpec("double", c) for c in output.columns])
    return ModelSignature(inputs=Schema(specs), outputs=outs)


def health_direction_of(model: SurvivalModel) -> np.ndarray | None:
    """The Coxnet risk direction (raw latent scale, toward HIGHER risk) inside a served model, if any."""
    candidates = list(getattr(model, "members", {}).values()) or [model]
    for m in candidates:
        if hasattr(m, "health_direction") and getattr(m, "coef_", None) is not None:
            return np.asarray(m.health_direction, dtype=np.float64)
    return None


def load_served(tracking_uri: str, model_name: str, alias: str = "champion"):
    """(pyfunc, SurvivalModel) of `models:/<model_name>@<alias>` in the given store."""
    import mlflow

    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}@{alias}")
    return loaded, loaded.unwrap_python_model().model
