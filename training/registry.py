"""Model registry: register every trained model, alias new versions `challenger`, and promote.

Promotion moves the `champion` alias of the served model only when the challenger beats
the champion on the same frozen test split by `registry.promote_margin` (or when there is no
champion). The comparison uses figures recorded at training time: the challenger's test
metric and, when a champion existed then, the champion re-scored on the challenger's test
patients. The decision and its figures are written as model-version tags and as an MLflow
run, so an auditor can see why a model serves. Aliases only; the deprecated stages are never used.
Everything goes through an MlflowClient of the given URI; MLflow's process-wide URI is never set.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ground.errors import DataError
from training.runs import scoped_tracking_uri

CHALLENGER = "challenger"
CHAMPION = "champion"
LOWER_IS_BETTER = {"ibs", "brier_365d", "brier_1095d", "brier_1825d"}


@dataclass(frozen=True)
class PromotionDecision:
    model_name: str
    promoted: bool
    reason: str
    challenger_version: str
    champion_version: str | None      # the champion before the decision
    metric: str
    challenger_metric: float
    champion_metric: float | None
    margin: float
    split_id: str
    run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def alias_version(client: Any, name: str, alias: str):
    """The model version behind an alias, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register_version(client: Any, *, name: str, model_uri: str, run_id: str, tags: dict[str, str],
                     description: str = "") -> str:
    """Register `model_uri` as a new version of `name`, tag it and alias it `challenger`."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=description or None)
    # MLflow's SQL registry looks the LoggedModel behind a models:/<model_id> source up through the
    # process-wide tracking URI, not the client's (a TODO in its sqlalchemy_store, MLflow 3.17)
    with scoped_tracking_uri(client.tracking_uri):
        mv = client.create_model_version(name, model_uri, run_id=run_id, tags={k: str(v) for k, v in tags.items()})
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return str(mv.version)


def _tag_float(tags: dict[str, str], key: str) -> float | None:
    try:
        v = float(tags[key])
    except (KeyError, ValueError):
        return None
    return v if math.isfinite(v) else None


def decide(*, challenger_metric: float, champion_metric: float | None, metric: str, margin: float) -> tuple[bool, str]:
    """Pure promotion rule: (promote?, reason)."""
    if champion_metric is None:
        return True, "no champion yet"
    better = (champion_metric - challenger_metric) if metric in LOWER_IS_BETTER else (challenger_metric - champion_metric)
    if better >= margin:
        return True, f"challenger {metric} {challenger_metric:.4f} beats champion {champion_metric:.4f} by {better:+.4f} (margin {margin:g})"
    return False, f"challenger {metric} {challenger_metric:.4f} does not beat champion {champion_metric:.4f} by the margin {margin:g} (difference {better:+.4f})"


def promote(*, tracking_uri: str, model_name: str, metric: str, margin: float, experiment: str,
            artifact_root: Path | None = None) -> PromotionDecision:
    """Compare `challenger` with `champion` of `model_name` and move `champion` if it wins.

    Raises DataError when there is no challenger, or when the champion was never scored on the
    challenger's test split (retrain so both are compared on the same patients).
    """
    import tempfile

    from mlflow import MlflowClient

    from training.plots import promotion_plot
    from training.runs import open_run
    from training.tracking import clean_metrics, ensure_experiment, quiet_environment

    quiet_environment()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    challenger = alias_version(client, model_name, CHALLENGER)
    if challenger is None:
        raise DataError(f"registered model {model_name!r} has no '{CHALLENGER}' version; run `facesurv train` first")
    champion = alias_version(client, model_name, CHAMPION)
    ctags = dict(challenger.tags)
    split_id = ctags.get("split_id", "")
    c_metric = _tag_float(ctags, f"test.{metric}")
    if c_metric is None:
        raise DataError(f"challenger version {challenger.version} of {model_name!r} has no recorded test.{metric}; "
                        "retrain it with `facesurv train`")
    champion_version = str(champion.version) if champion is not None else None
    champ_metric: float | None = None
    if champion is not None and champion_version == str(challenger.version):
        promoted, reason = False, f"version {challenger.version} is already the champion"
        champ_metric = c_metric
    else:
        if champion is not None:
            if ctags.get("champion_compared_version") == champion_version:
                champ_metric = _tag_float(ctags, f"champion_same_split.{metric}")
            elif dict(champion.tags).get("split_id") == split_id:
                champ_metric = _tag_float(dict(champion.tags), f"test.{metric}")
            if champ_metric is None:
                raise DataError(
                    f"champion version {champion_version} of {model_name!r} was not scored on the challenger's "
                    f"test split {split_id or '?'}; retrain (facesurv train) so both are compared on the same patients")
        promoted, reason = decide(challenger_metric=c_metric, champion_metric=champ_metric, metric=metric, margin=margin)

    exp_id = ensure_experiment(client, experiment, artifact_root)
    with open_run(client, experiment_id=exp_id, name=f"promote-{model_name}-v{challenger.version}") as run:
        decision = PromotionDecision(model_name, promoted, reason, str(challenger.version), champion_version, metric,
                                     c_metric, champ_metric, margin, split_id, run.run_id)
        run.set_tags({"facesurv.kind": "promotion", "promotion.decision": "promoted" if promoted else "kept",
                      "promotion.reason": reason, "model_name": model_name,
                      "challenger_version": str(challenger.version), "champion_version": champion_version or "",
                      "split_id": split_id})
        run.log_params({"metric": metric, "margin": margin})
        run.log_metrics(clean_metrics({f"challenger_{metric}": c_metric,
                                       f"champion_{metric}": champ_metric if champ_metric is not None else math.nan,
                                       "promoted": float(promoted)}))
        run.log_json(decision.to_dict(), "promotion.json")
        with tempfile.TemporaryDirectory(prefix="facesurv-promote-") as tmp:
            fig = promotion_plot(metric=metric, challenger=c_metric, champion=champ_metric, margin=margin,
                                 challenger_version=str(challenger.version), champion_version=champion_version,
                                 promoted=promoted, path=Path(tmp) / "promotion.png")
            run.log_artifact(fig)
    if promoted and champion_version != str(challenger.version):
        client.set_registered_model_alias(model_name, CHAMPION, challenger.version)
        if champion is not None:
            client.set_model_version_tag(model_name, champion.version, "retired_by", str(challenger.version))
    for k, v in {"promotion.decision": "promoted" if promoted else "kept", "promotion.reason": reason,
                 "promotion.at": _now(), "promotion.run_id": decision.run_id,
                 "promotion.compared_to": champion_version or "none"}.items():
        client.set_model_version_tag(model_name, challenger.version, k, v)
    return decision
