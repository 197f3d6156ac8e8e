"""One training end to end: fit and evaluate (training.fit), then track and register (training.record).

    result = train(df, params=params, tracking_uri=uri, data_versions={...}, feature_service="prognosis_v1",
                   split_path=ws.artifacts_dir / "splits" / "test_split.json")

Every check on the input and every fit runs before the first MLflow run is created, so bad
input or a model that cannot be fitted records nothing; a failure while recording marks the
runs FAILED. Callers that want the models and Table 1 without MLflow (the demo's oracle) call
training.fit.fit_and_evaluate alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from training.fit import fit_and_evaluate
from training.record import TrainResult, record_training

__all__ = ["TrainResult", "train"]


def train(df: pd.DataFrame, *, params: Any, tracking_uri: str, data_versions: Mapping[str, str] | None = None,
          feature_service: str | None = None, split_path: Path | None = None, artifact_root: Path | None = None,
          out_dir: Path | None = None, register: bool = True, base: str | None = None,
          data_source: str | None = None, progress: Callable[[str], None] | None = None) -> TrainResult:
    """Train, evaluate, track and (optionally) register every model.

    The served model (registered as params.registry.model_name) is the fusion; the others are
    registered as <model_name>-<model>. Every new version gets the alias `challenger`.
    """
    fitted = fit_and_evaluate(df, params=params, split=split_path, data_versions=data_versions, base=base,
                              progress=progress)
    return record_training(fitted, params=params, tracking_uri=tracking_uri, data_versions=data_versions,
                           feature_service=feature_service, split_path=split_path, artifact_root=artifact_root,
                           out_dir=out_dir, register=register, data_source=data_source)
