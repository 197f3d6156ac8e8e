"""Model registry: register every trained model, alias new versions `challenger`, and promote.

Promotion moves the `champion` alias of the served model only when the challenger passes every
gate of training.gates on the same frozen test patients: a paired bootstrap of the C-index
difference, calibration, every subgroup's C-index, and the training data's contracts (or when
there is no champion, in which case the comparisons pass as "no champion"). The per-patient
predictions the gates compare were recorded at training time (training.record); the contract
results are recorded by the caller that knows them (record_contracts). Each gate's result is
tagged on the challenger's version (`gate.<name>.passed|detail|figures`) and kept with the
decision in an MLflow run (`gates.json`, `promotion.json`). With `registry.require_approval`,
passing gates only mark the version `awaiting_approval`; a person's decision
(record_decision, `facesurv promote --approve|--reject`) moves the alias. Aliases only; the
deprecated stages are never used. Everything goes through an MlflowClient of the given URI;
MLflow's process-wide URI is never set.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ground.errors import DataError
from training.runs import scoped_tracking_uri

CHALLENGER = "challenger"
CHAMPION = "champion"
AWAITING = "awaiting_approval"
DECISIONS = ("approved", "rejected")
CONTRACTS_TAG = "contracts.sources"   # JSON list of the training data's source files and their contract results
TAG_TEXT_MAX = 4000                   # gate details/figures on a version tag; the full record is in gates.json


@dataclass(frozen=True)
class PromotionDecision:
    model_name: str
    promoted: bool
    reason: str
    challenger_version: str
    champion_version: str | None      # the champion before the decision
    split_id: str
    status: str = "kept"              # promoted | kept | awaiting_approval
    gates: list[dict[str, Any]] = field(default_factory=list)   # GateResult.to_dict() per gate
    run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HumanDecision:
    """A person's decision on one version, as recorded (record_decision)."""

    model_name: str
    version: str
    decision: str                     # approved | rejected
    reason: str
    by: str
    at: str
    override_gates: bool
    gates_passed: bool | None         # None: the gates never ran on this version
    champion_before: str | None
    champion_after: str | None
    run_id: str
    run_id_of_version: str
    artifacts_sha256: str
    note: str = ""

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


def _version(client: Any, name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise DataError(f"registered model {name!r} has no version {version}; list them in the MLflow UI or "
                        "pass the version `facesurv train` printed") from None


def paired_scores_of(client: Any, mv: Any) -> Any:
    """training.gates.PairedScores a version's training recorded (its sha256 checked); DataError when absent."""
    import hashlib
    import tempfile

    from training.gates import PAIRED_SCORES_TAG, PairedScores

    tags = dict(mv.tags)
    path = tags.get(PAIRED_SCORES_TAG)
    if not path:
        raise DataError(f"version {mv.version} of {mv.name!r} has no recorded paired test scores (trained before "
                        "promotion gates); retrain it with `facesurv train`")
    with tempfile.TemporaryDirectory(prefix="facesurv-gates-") as tmp:
        local = Path(client.download_artifacts(mv.run_id, path, tmp))
        text = local.read_text(encoding="utf-8")
    if hashlib.sha256(text.encode()).hexdigest() != tags.get(f"{PAIRED_SCORES_TAG}_sha256"):
        raise DataError(f"the paired test scores of version {mv.version} of {mv.name!r} changed since training "
                        "(sha256 mismatch); retrain it")
    return PairedScores.from_json(text)


def _against_champion(client: Any, paired: Any, challenger: Any, champion: Any) -> Any:
    """paired with the current champion's predictions on the challenger's test patients: those recorded
    at training when that champion was re-scored, else the champion's own if it was trained on the same
    split (same patients, same horizon). DataError otherwise: retrain so both meet the same patients."""
    import dataclasses

    import numpy as np

    version = str(champion.version)
    if paired.champion_version == version and paired.has_champion:
        return paired
    ctags = dict(challenger.tags)
    split_id = ctags.get("split_id", "")
    refusal = DataError(f"champion version {version} of {challenger.name!r} was not scored on the challenger's "
                        f"test split {split_id or '?'}; retrain (facesurv train) so both are compared on the same "
                        "patients")
    if ctags.get("champion_compared_version") == version or dict(champion.tags).get("split_id") != split_id \
            or not split_id:
        raise refusal  # this champion could not score the challenger's data, or met other patients
    try:
        own = paired_scores_of(client, champion)
    except DataError:
        raise refusal from None
    if own.patient_ids != paired.patient_ids or own.horizon_days != paired.horizon_days or \
            not np.array_equal(own.time, paired.time):
        raise refusal
    return dataclasses.replace(paired, champion_risk=own.challenger_risk, champion_survival=own.challenger_survival,
                               champion_version=version)


def contract_sources_of(mv: Any) -> list[dict[str, Any]] | None:
    """The contract results record_contracts tagged on a version; None when none were recorded."""
    raw = dict(mv.tags).get(CONTRACTS_TAG)
    if raw is None:
        return None
    try:
        sources = json.loads(raw)
    except ValueError:
        return [{"name": "(unreadable contracts tag)", "passed": False}]
    return sources if isinstance(sources, list) else [{"name": "(unreadable contracts tag)", "passed": False}]


def record_contracts(*, tracking_uri: str, model_name: str, version: str, sources: list[dict[str, Any]]) -> None:
    """Tag a version with the data contracts its training data passed (or failed): one dict per source
    file, e.g. {"kind", "name", "sha256", "rows", "failing", "passed"}; the contracts gate reads it."""
    from mlflow import MlflowClient

    if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
        raise DataError("record_contracts: sources must be a list of dicts (one per source file)")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    _version(client, model_name, version)
    client.set_model_version_tag(model_name, str(version), CONTRACTS_TAG, json.dumps(sources, sort_keys=True,
                                                                                     default=str))
    client.set_model_version_tag(model_name, str(version), "contracts.passed",
                                 str(bool(sources) and all(bool(s.get("passed")) for s in sources)).lower())


def _short(text: str) -> str:
    return text if len(text) <= TAG_TEXT_MAX else text[:TAG_TEXT_MAX] + " ... (truncated; see gates.json)"


def gate_tags(results: list[Any]) -> dict[str, str]:
    """gate.<name>.passed|detail|figures for each GateResult, and promotion.gates_passed."""
    tags = {"promotion.gates_passed": str(all(r.passed for r in results)).lower(),
            "promotion.gates": ",".join(r.name for r in results)}
    for r in results:
        tags[f"gate.{r.name}.passed"] = str(r.passed).lower()
        tags[f"gate.{r.name}.detail"] = _short(r.detail)
        tags[f"gate.{r.name}.figures"] = _short(json.dumps(r.figures, sort_keys=True, default=str))
    return tags


def _decision_reason(results: list[Any], *, no_champion: bool, require_approval: bool, version: str) -> tuple[str, str]:
    failed = [r for r in results if not r.passed]
    if failed:
        return "kept", "gate(s) failed: " + "; ".join(f"{r.name}: {r.detail}" for r in failed)
    base = f"all {len(results)} gates passed" + (" (no champion yet)" if no_champion else "")
    if require_approval:
        return AWAITING, (f"{base}; awaiting a person's approval: `facesurv promote --approve --version {version} "
                          "--reason TEXT`")
    return "promoted", base


def promote(*, tracking_uri: str, model_name: str, policy: Any, experiment: str, artifact_root: Path | None = None,
            require_approval: bool = False) -> PromotionDecision:
    """Run every gate (training.gates) on `challenger` vs `champion` of `model_name`; move `champion` when
    all pass (and require_approval is false; otherwise mark the version awaiting_approval).

    policy: training.gates.GatePolicy (params.yaml `registry:`; GatePolicy.from_params).
    Raises DataError when there is no challenger, when it has no recorded paired test scores, or
    when the champion was never scored on the challenger's test split (retrain so both are
    compared on the same patients).
    """
    import tempfile

    from mlflow import MlflowClient

    from training.gates import run_gates
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
    version = str(challenger.version)
    split_id = ctags.get("split_id", "")
    champion_version = str(champion.version) if champion is not None else None
    results: list[Any] = []
    if champion_version == version:
        status, reason = "kept", f"version {version} is already the champion"
    elif ctags.get("decision") == "rejected":
        status, reason = "kept", (f"version {version} was rejected by {ctags.get('decision.by', '?')}: "
                                  f"{ctags.get('decision.reason', '')}")
    else:
        paired = paired_scores_of(client, challenger)
        if champion is not None:
            paired = _against_champion(client, paired, challenger, champion)
        else:
            paired = dataclasses.replace(paired, champion_risk=None, champion_survival=None, champion_version=None)
        results = run_gates(paired=paired, contracts=contract_sources_of(challenger), policy=policy)
        status, reason = _decision_reason(results, no_champion=champion is None, require_approval=require_approval,
                                          version=version)
    promoted = status == "promoted"
    gates = [r.to_dict() for r in results]

    exp_id = ensure_experiment(client, experiment, artifact_root)
    with open_run(client, experiment_id=exp_id, name=f"promote-{model_name}-v{version}") as run:
        decision = PromotionDecision(model_name, promoted, reason, version, champion_version, split_id, status,
                                     gates, run.run_id)
        run.set_tags({"facesurv.kind": "promotion", "promotion.decision": status, "promotion.reason": _short(reason),
                      "model_name": model_name, "challenger_version": version,
                      "champion_version": champion_version or "", "split_id": split_id,
                      **({"promotion.gates_passed": str(all(r.passed for r in results)).lower()} if results else {})})
        run.log_params({f"gate_policy.{k}": v for k, v in _as_dict(policy).items()}
                       | {"require_approval": require_approval})
        numbers = {f"{r.name}.{k}": v for r in results for k, v in r.figures.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}
        run.log_metrics(clean_metrics({**numbers, **{f"{r.name}.passed": float(r.passed) for r in results},
                                       "promoted": float(promoted)}))
        run.log_json(gates, "gates.json")
        run.log_json(decision.to_dict(), "promotion.json")
        delta: dict[str, Any] = next((r.figures for r in results if r.name == "delta_c"), {})
        if "challenger_c_index" in delta:
            with tempfile.TemporaryDirectory(prefix="facesurv-promote-") as tmp:
                fig = promotion_plot(metric="c_index", challenger=delta["challenger_c_index"],
                                     champion=delta.get("champion_c_index"), margin=delta.get("min_delta", 0.0),
                                     challenger_version=version, champion_version=champion_version,
                                     promoted=promoted, path=Path(tmp) / "promotion.png")
                run.log_artifact(fig)
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
        if champion is not None:
            client.set_model_version_tag(model_name, champion.version, "retired_by", version)
    tags = {"promotion.decision": status, "promotion.reason": _short(reason), "promotion.at": _now(),
            "promotion.run_id": decision.run_id, "promotion.compared_to": champion_version or "none",
            **(gate_tags(results) if results else {})}
    for k, v in tags.items():
        client.set_model_version_tag(model_name, version, k, v)
    return decision


def _as_dict(obj: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return dict(vars(obj))


def record_decision(*, tracking_uri: str, model_name: str, decision: str, reason: str, by: str, experiment: str,
                    version: str | None = None, override_gates: bool = False,
                    artifact_root: Path | None = None, before_writing: Any = None) -> HumanDecision:
    """Record a person's decision on a version (default: the challenger) in the registry.

    decision "approved" moves `champion` to the version; it is refused (DataError) when the gates
    failed or never ran on it, unless override_gates (then recorded as such). "rejected" never
    moves an alias: a rejected champion keeps serving until another version is approved, and a
    rejected challenger is never promoted automatically. The decision is a run
    (`decision-<name>-v<N>`, decision.json) and version tags decision, decision.reason|by|at|
    override_gates|run_id. before_writing: called with no argument once every check passed and before
    anything is written (the CLI opens the ledger there, so a ledger that cannot open stops it cleanly).
    """
    from mlflow import MlflowClient

    from training.integrity import DIGEST_TAG
    from training.runs import open_run
    from training.tracking import ensure_experiment, quiet_environment

    if decision not in DECISIONS:
        raise DataError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    reason, by = (reason or "").strip(), (by or "").strip()
    if not reason:
        raise DataError("a decision needs a reason: pass --reason TEXT (it is kept in the registry and the ledger)")
    if not by:
        raise DataError("a decision needs who made it: pass --by NAME")
    quiet_environment()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if version is None:
        mv = alias_version(client, model_name, CHALLENGER)
        if mv is None:
            raise DataError(f"registered model {model_name!r} has no '{CHALLENGER}' version; pass --version N")
    else:
        mv = _version(client, model_name, str(version))
    version = str(mv.version)
    tags = dict(mv.tags)
    gates_passed = {"true": True, "false": False}.get(tags.get("promotion.gates_passed", ""))
    champion = alias_version(client, model_name, CHAMPION)
    before = str(champion.version) if champion is not None else None
    note = ""
    if decision == "approved" and gates_passed is not True and not override_gates:
        if gates_passed is None:
            why = "its promotion gates never ran (run `facesurv promote` first)"
        else:
            failed = [k.split(".")[1] for k, v in tags.items() if k.startswith("gate.") and k.endswith(".passed")
                      and v == "false"]
            why = f"it failed promotion gate(s) {', '.join(sorted(failed)) or '?'}"
        raise DataError(f"version {version} of {model_name!r} cannot be approved: {why}; pass --override-gates "
                        "to approve it anyway (recorded as an override)")
    after = before
    if decision == "approved":
        after = version
        if before == version:
            note = f"version {version} is already the champion"
    elif before == version:
        note = (f"version {version} is the champion and keeps serving: a rejection never moves the alias; approve "
                "another version (--approve --version M) to replace it")
    if before_writing is not None:
        before_writing()
    at = _now()
    exp_id = ensure_experiment(client, experiment, artifact_root)
    with open_run(client, experiment_id=exp_id, name=f"decision-{model_name}-v{version}") as run:
        record = HumanDecision(model_name, version, decision, reason, by, at, bool(override_gates), gates_passed,
                               before, after, run.run_id, str(mv.run_id or ""), tags.get(DIGEST_TAG, ""), note)
        run.set_tags({"facesurv.kind": "promotion_decision", "decision": decision, "decision.reason": _short(reason),
                      "decision.by": by, "model_name": model_name, "version": version,
                      "decision.override_gates": str(bool(override_gates)).lower(),
                      "champion_before": before or "", "champion_after": after or ""})
        run.log_json(record.to_dict(), "decision.json")
    if decision == "approved" and before != version:
        client.set_registered_model_alias(model_name, CHAMPION, version)
        if champion is not None:
            client.set_model_version_tag(model_name, champion.version, "retired_by", version)
    for k, v in {"decision": decision, "decision.reason": _short(reason), "decision.by": by, "decision.at": at,
                 "decision.override_gates": str(bool(override_gates)).lower(), "decision.run_id": record.run_id,
                 **({"promotion.decision": "promoted"} if decision == "approved" else {})}.items():
        client.set_model_version_tag(model_name, version, k, v)
    return record
