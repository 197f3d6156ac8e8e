"""The current champion re-scored on a new training's test patients, for promotion to compare.

Promotion (training.registry.promote) compares a challenger with the champion on the same
frozen test split; the challenger's figures come from its own evaluation, the champion's from
here, recorded on the challenger's model version at registration.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def score_champion(client: Any, name: str, train_df: pd.DataFrame, test_df: pd.DataFrame, *, params: Any,
                   tracking_uri: str, horizon: float | None = None) -> dict[str, Any]:
    """Re-score the champion of `name` on test_df (no bootstrap); {} when there is no champion.

    The champion is loaded like a server loads it: its files must match the manifest recorded
    when it was registered; a refusal is recorded like any other failure to score it, as
    {"version", "error"}. Otherwise {"version", "metrics", "artifacts_sha256", "risk"}: risk is the
    (n,) per-patient log-risk on test_df's rows, and with a horizon (days) "survival", the (n,)
    predicted S(horizon): what the paired promotion gates (training.gates) compare.
    """
    from training.fit import evaluate_model
    from training.pyfunc import load_verified
    from training.registry import CHAMPION, alias_version

    champ = alias_version(client, name, CHAMPION)
    if champ is None:
        return {}
    try:
        verified = load_verified(client, name, version=str(champ.version), tracking_uri=tracking_uri)
        model = verified.pyfunc.unwrap_python_model().model
        ev = evaluate_model(model, train_df, test_df, params=params, bootstrap=0)
        risk = np.asarray(model.predict_risk(test_df), dtype=np.float64)
        surv = (np.asarray(model.survival_from_risk(risk, np.array([float(horizon)])), dtype=np.float64)[:, 0]
                if horizon is not None else None)
    except Exception as exc:  # noqa: BLE001 - an old champion that cannot read the new data is recorded, not fatal
        return {"version": str(champ.version), "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    out = {"version": str(champ.version), "metrics": ev.point, "artifacts_sha256": verified.manifest_sha256,
           "risk": risk}
    if surv is not None:
        out["survival"] = surv
    return out


def comparison_tags(comparison: dict[str, Any]) -> dict[str, Any]:
    """The model-version tags recording a score_champion result (what promotion reads)."""
    if comparison.get("metrics"):
        return {"champion_compared_version": comparison["version"],
                "champion_compared_artifacts_sha256": comparison["artifacts_sha256"],
                **{f"champion_same_split.{k}": v for k, v in comparison["metrics"].items() if math.isfinite(v)}}
    if comparison.get("error"):
        return {"champion_compared_version": comparison["version"], "champion_compare_error": comparison["error"]}
    return {}
