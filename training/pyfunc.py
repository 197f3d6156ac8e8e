"""The served model: one MLflow pyfunc holding a fitted survival model (the fusion and its members).

Input: a DataFrame, one row per patient, with the clinical covariates the model was trained
on and, when the model uses photos (`needs_latent`), a `latent` column of 512 floats per
row. Output: risk_score (log relative hazard, higher = worse), risk_percentile (0-100 among
the training cohort) and survival_<h>d for every configured horizon h in days.

Logged with MLflow's "models from code": the wrapper is the source file served_model.py (MLflow
copies it and runs the copy at load), the fitted model is a directory of JSON and safetensors
written by training.model_io (artifacts/model), the horizons are the model_config. Nothing is
pickled, and every load goes through training.integrity, which checks each file's sha256
against the manifest recorded in the registry before MLflow runs anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ground.errors import DataError
from training.base import SurvivalModel

# The models-from-code file MLflow copies into every logged model and runs at load (after the
# manifest check): it only names PrognosisModel, so no object of ours is ever cloudpickled.
SERVED_MODEL_CODE = Path(__file__).with_name("served_model.py")
MODEL_ARTIFACT = "model"  # artifacts/<MODEL_ARTIFACT>/ holds training.model_io's saved model


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


def served_horizons(config: Any) -> list[int]:
    """The horizons (days) recorded in a logged model's model_config; DataError when malformed."""
    h = (config or {}).get("horizons_days") if isinstance(config, dict) else None
    if not isinstance(h, list) or not h or not all(type(d) is int and d > 0 for d in h):
        raise DataError("the served model's model_config lacks horizons_days (positive whole days); "
                        "retrain it (facesurv train)")
    return list(h)


def _prognosis_model_class() -> type:
    """Build the pyfunc class on first use: importing mlflow has side effects (it sets a
    telemetry environment variable), and nothing may happen when this module is imported."""
    from mlflow.pyfunc import PythonModel

    class PrognosisModel(PythonModel):
        """pyfunc wrapper: artifacts["model"] is a directory written by training.model_io.save_model;
        model_config["horizons_days"] the survival horizons of the output."""

        def __init__(self) -> None:
            self.horizons: list[int] = []
            self.model: SurvivalModel | None = None

        def load_context(self, context: Any) -> None:
            from training.model_io import load_model

            self.horizons = served_horizons(context.model_config)
            self.model = load_model(Path(context.artifacts[MODEL_ARTIFACT]))

        def predict(self, context: Any, model_input: pd.DataFrame,
                    params: dict[str, Any] | None = None) -> pd.DataFrame:
            df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
            assert self.model is not None  # MLflow calls load_context before predict
            return predict_frame(self.model, df.reset_index(drop=True), self.horizons)

    PrognosisModel.__module__ = __name__
    PrognosisModel.__qualname__ = "PrognosisModel"
    return PrognosisModel


def prognosis_model() -> Any:
    """A fresh, unloaded PrognosisModel (what served_model.py hands to mlflow.models.set_model)."""
    return __getattr__("PrognosisModel")()


def __getattr__(name: str) -> Any:
    if name == "PrognosisModel":
        cls = globals().get(name) or _prognosis_model_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from mlflow.types.schema import Array, ColSpec, Schema, TensorSpec

    specs: list[ColSpec | TensorSpec] = []
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


def served_requirements() -> list[str]:
    """pip requirements of the served model: the versions installed here, pinned."""
    from importlib import metadata

    reqs = []
    for dist in ("mlflow", "scikit-survival", "pycox", "torchtuples", "torch", "safetensors", "pandas", "numpy",
                 "scikit-learn"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def log_served_model(client: Any, run_id: str, name: str, model: SurvivalModel, *, example_df: pd.DataFrame,
                     horizons: Sequence[int], workdir: Path, pip_requirements: Sequence[str]
                     ) -> tuple[str, dict[str, str]]:
    """Log `model` as a models-from-code pyfunc in run `run_id` of `client`'s store; (model_uri, artifact manifest).

    The estimator is written by training.model_io (JSON + safetensors), the wrapper is the
    SERVED_MODEL_CODE file; the manifest hashes every file the artifact store now holds for it.
    """
    from training.integrity import logged_model_manifest
    from training.logged_model import log_pyfunc
    from training.model_io import save_model

    saved = save_model(model, Path(workdir) / name / MODEL_ARTIFACT)
    horizons = [int(h) for h in horizons]
    ex = input_example(example_df, model)
    sig = signature_for(ex, predict_frame(model, example_df.head(2), horizons))
    model_id, model_uri = log_pyfunc(client, run_id=run_id, name=name, python_model=SERVED_MODEL_CODE,
                                     artifacts={MODEL_ARTIFACT: str(saved)}, model_config={"horizons_days": horizons},
                                     signature=sig, pip_requirements=pip_requirements,
                                     metadata={"needs_latent": model.needs_latent, "kind": model.kind,
                                               "horizons_days": horizons})
    files = logged_model_manifest(model_id, tracking_uri=client.tracking_uri,
                                  written={f"artifacts/{MODEL_ARTIFACT}": saved, SERVED_MODEL_CODE.name: SERVED_MODEL_CODE})
    return model_uri, files


def load_verified(client: Any, model_name: str, *, alias: str | None = None, version: str | None = None,
                  tracking_uri: str | None = None):
    """training.integrity.VerifiedModel of `model_name` at `alias` (or `version`): hashes checked first."""
    from training.integrity import load_verified_pyfunc

    if version is None:
        if alias is None:
            raise ValueError("load_verified needs an alias or a version")
        version = str(client.get_model_version_by_alias(model_name, alias).version)
    return load_verified_pyfunc(client, name=model_name, version=version, tracking_uri=tracking_uri)


def load_served(tracking_uri: str, model_name: str, alias: str = "champion"):
    """(pyfunc, SurvivalModel) of `models:/<model_name>@<alias>` in the given store, after every
    artifact matched the manifest recorded at registration (ArtifactIntegrityError otherwise)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    loaded = load_verified(client, model_name, alias=alias, tracking_uri=tracking_uri).pyfunc
    return loaded, loaded.unwrap_python_model().model
