"""`facesurv promote`: run the promotion gates, or record a person's decision on a model version.

    facesurv promote                                    # gates on the challenger; champion moves if all pass
    facesurv promote --approve --reason "reviewed" [--version N] [--by NAME] [--override-gates]
    facesurv promote --reject --reason "subgroup drop" [--version N]

A decision is recorded on the model version (tags decision, decision.reason|by|at), as an MLflow
run, and as a `promotion_decision` record in the lineage ledger (the scoring ledger: the same
hash chain, signatures and anchors), so `facesurv audit` shows who put which model in service.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from facesurv.cli.common import WorkspaceOpt, console, open_workspace, out


def _who(by: str | None) -> str:
    import getpass

    if by is not None:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def ledger_record(decision: Any, *, code_version: str, params_hash: str) -> dict[str, Any]:
    """A training.registry.HumanDecision as a ledger record (serving.ledger_base PROMOTION_KIND)."""
    import datetime as dt
    import uuid

    from serving.ledger_base import NO_PATIENT, PROMOTION_ID_PREFIX, PROMOTION_KIND

    return {"kind": PROMOTION_KIND, "score_id": f"{PROMOTION_ID_PREFIX}{uuid.uuid4().hex}", "patient_id": NO_PATIENT,
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
            "model_name": decision.model_name, "version": decision.version, "decision": decision.decision,
            "reason": decision.reason, "by": decision.by, "override_gates": decision.override_gates,
            "gates_passed": decision.gates_passed, "champion_before": decision.champion_before,
            "champion_after": decision.champion_after, "mlflow_run_id": decision.run_id,
            "model": {"name": decision.model_name, "version": decision.version, "run_id": decision.run_id_of_version,
                      "artifacts_sha256": decision.artifacts_sha256},
            "code_version": code_version, "params_hash": params_hash}


def _run_gates(ws: Any, params: Any, model_name: str) -> None:
    from facesurv.components import components
    from training.gates import GatePolicy
    from training.registry import promote as run_promote

    r = params.registry
    d = run_promote(tracking_uri=components(ws, params).tracking_uri, model_name=model_name,
                    policy=GatePolicy.from_params(params), experiment=r.experiment,
                    artifact_root=ws.mlflow_dir / "artifacts", require_approval=r.require_approval)
    for g in d.gates:
        out.print(f"  [{'PASS' if g['passed'] else 'FAIL'}] {g['name']}: {g['detail']}", markup=False)
    verdict = {"promoted": "PROMOTED", "kept": "KEPT", "awaiting_approval": "AWAITING APPROVAL"}[d.status]
    out.print(f"{verdict}: {d.model_name} challenger v{d.challenger_version} vs champion "
              f"{'v' + d.champion_version if d.champion_version else '(none)'} on split {d.split_id}: {d.reason}",
              markup=False)
    out.print(f"decision recorded in MLflow run {d.run_id}", markup=False)


def _decide(ws: Any, params: Any, *, model_name: str, decision: str, reason: str, by: str, version: str | None,
            override_gates: bool) -> None:
    from facesurv.components import components, open_scoring_ledger
    from ground.workspace import code_version
    from training.registry import record_decision

    opened: list[Any] = []

    def open_the_ledger() -> None:
        # after the registry's checks, before its writes: a ledger that cannot open stops the decision cleanly
        opened.append(open_scoring_ledger(ws, params))

    try:
        d = record_decision(tracking_uri=components(ws, params).tracking_uri, model_name=model_name,
                            decision=decision, reason=reason, by=by, version=version, override_gates=override_gates,
                            experiment=params.registry.experiment, artifact_root=ws.mlflow_dir / "artifacts",
                            before_writing=open_the_ledger)
        ledger = opened[0]
        entry = ledger.append(ledger_record(d, code_version=code_version(), params_hash=params.params_hash))
    finally:
        for led in opened:
            led.close()
    if d.decision == "approved":
        moved = (f"v{d.version} is the champion (was {'v' + d.champion_before if d.champion_before else 'none'})"
                 if d.champion_before != d.version else f"v{d.version} stays the champion")
        head = f"APPROVED{' (gates overridden)' if d.override_gates else ''}: {d.model_name} {moved}"
    else:
        head = f"REJECTED: {d.model_name} v{d.version}; the champion is unchanged " \
               f"({'v' + d.champion_after if d.champion_after else 'none'})"
    out.print(f"{head}; by {d.by}: {d.reason}", markup=False)
    if d.note:
        console.print(f"note: {d.note}", markup=False)
    out.print(f"recorded on the version, in MLflow run {d.run_id} and in the ledger as {entry.score_id} "
              f"(seq {entry.seq}, {ledger.describe()})", markup=False)


def promote(
    approve: Annotated[bool, typer.Option("--approve", help="Record a person's approval: moves `champion` to the "
                                          "version (refused when its gates failed, unless --override-gates).")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="Record a person's rejection: never moves an alias; a "
                                         "rejected challenger is never promoted automatically.")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (required with --approve/--reject).")] = None,
    version: Annotated[str | None, typer.Option("--version", help="The model version (default: the challenger).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Registered model (default: registry.model_name).")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who decides (default: the login name).")] = None,
    override_gates: Annotated[bool, typer.Option("--override-gates", help="Approve although the version's gates "
                                                 "failed or never ran (recorded as an override).")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Run the promotion gates on the challenger (paired bootstrap of the C-index difference, calibration, subgroups,
    data contracts) and move `champion` when all pass; or, with --approve/--reject, record a person's decision."""
    from ground.errors import DataError
    from training.tracking import quiet_environment

    if approve and reject:
        raise DataError("pass one of --approve and --reject, not both")
    if not (approve or reject):
        extra = [name for name, v in (("--reason", reason), ("--version", version), ("--by", by),
                                      ("--override-gates", override_gates or None)) if v is not None]
        if extra:
            raise DataError(f"{', '.join(extra)} go(es) with --approve or --reject; without them "
                            "`facesurv promote` runs the gates on the challenger")
    elif not (reason or "").strip():
        raise DataError("a decision needs a reason: pass --reason TEXT (kept in the registry and the ledger)")
    elif reject and override_gates:
        raise DataError("--override-gates goes with --approve (a rejection moves nothing)")
    if version is not None and not version.strip().isdigit():
        raise DataError(f"--version must be a model version number, got {version!r}")
    quiet_environment()
    ws, params = open_workspace(workspace)
    model_name = model or params.registry.model_name
    if not (approve or reject):
        _run_gates(ws, params, model_name)
        return
    who = _who(by)
    if not who.strip():
        raise DataError("a decision needs who made it: pass --by NAME")
    _decide(ws, params, model_name=model_name, decision="approved" if approve else "rejected",
            reason=(reason or "").strip(), by=who.strip(), version=version.strip() if version else None,
            override_gates=override_gates)


def register(app: typer.Typer) -> None:
    app.command("promote")(promote)
