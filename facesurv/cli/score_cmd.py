"""`facesurv score`: score patients from the online store without the HTTP API, every score to the ledger.

`facesurv score --all` re-scores every patient the feature store knows (after a promotion);
`facesurv score --patient-id ID` scores one. Both load the champion, the online store and the
ledger the way `facesurv serve` does (facesurv.components) and score through the API's own
Scorer.score_patients, so the records are the ones the API would have written.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from facesurv.cli.common import WorkspaceOpt, console, open_workspace, out

FAILURES_SHOWN = 10


def _score(
    all_patients: Annotated[bool, typer.Option("--all", help="Re-score every patient the feature store knows.")] = False,
    patient_id: Annotated[str | None, typer.Option("--patient-id", help="Score this one patient.")] = None,
    chunk: Annotated[int, typer.Option("--chunk", help="Patients per online read, model call and ledger "
                                       "transaction.")] = 1000,
    requested_by: Annotated[str, typer.Option("--requested-by", help="Who asked, as written to every record.")]
    = "rescore",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary (with every failure) as JSON.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Score patients with the champion and online features; every score goes to the lineage ledger."""
    from facesurv.components import build_scorer, open_scoring_ledger
    from ground.errors import ConfigError, DataError, NotAvailableError
    from serving.bulk import store_patients

    if all_patients == (patient_id is not None):
        raise ConfigError("give either --all or --patient-id ID (one of them)")
    if chunk < 1:
        raise ConfigError(f"--chunk must be >= 1 (got {chunk}); 1000 suits most stores")
    if not requested_by.strip():
        raise ConfigError("--requested-by must be a non-empty name")
    ws, params = open_workspace(workspace)
    ids = store_patients(ws.feature_repo_dir, params) if all_patients else [patient_id]
    if not ids:
        raise NotAvailableError(f"the feature store at {ws.feature_repo_dir} holds no patients; write and "
                                "materialize features first (the nightly-embedding flow)")
    console.print(f"loading the champion and the stores of {ws.root} ...", markup=False)
    scorer, _notes = build_scorer(ws, params, photo_scoring=False)
    if scorer.read_features is None:
        raise NotAvailableError(f"no feature repo at {ws.feature_repo_dir}: run `facesurv features apply` "
                                "and materialize first")
    ledger = open_scoring_ledger(ws, params)
    try:
        summary = _run(scorer, ledger, ids, chunk=chunk, requested_by=requested_by, show=all_patients)
        if patient_id is not None:
            if summary.failed:
                raise DataError(summary.failed[0][1])
            _print_one(ledger, summary.score_ids[0], as_json=as_json)
            return
    finally:
        ledger.close()
    for _pid, why in summary.failed[:FAILURES_SHOWN]:
        console.print(f"not scored: {why}", markup=False)
    if len(summary.failed) > FAILURES_SHOWN:
        console.print(f"... and {len(summary.failed) - FAILURES_SHOWN} more; by reason:", markup=False)
        for why, n in sorted(summary.reasons().items(), key=lambda kv: -kv[1]):
            console.print(f"  {n} x {why}", markup=False)
    out.print(json.dumps(summary.to_dict(), indent=1) if as_json else summary.line(), markup=False)


def _print_one(ledger, score_id: str, *, as_json: bool) -> None:
    from serving.scoring import response_from_record

    entry = ledger.get(score_id)
    doc = response_from_record(entry.record)
    if as_json:
        out.print(json.dumps({**doc, "ledger_seq": entry.seq}, indent=1), markup=False)
        return
    m = doc["model"]
    out.print(f"patient {doc['patient_id']}: risk score {doc['risk_score']:.4g} (percentile "
              f"{doc['risk_percentile']:.3g}) from {m['name']} v{m['version']}; score {doc['score_id']} at "
              f"ledger seq {entry.seq} (`facesurv audit {doc['score_id']}`)", markup=False)


def _run(scorer, ledger, ids, *, chunk: int, requested_by: str, show: bool):
    from flows.progress import Progress
    from serving.bulk import rescore_all

    if not show:
        return rescore_all(scorer, ledger, ids, chunk=chunk, requested_by=requested_by)
    with Progress(f"re-scoring with {scorer.model.name} v{scorer.model.version}", total=len(ids),
                  unit="patients") as bar:
        return rescore_all(scorer, ledger, ids, chunk=chunk, requested_by=requested_by,
                           progress=lambda done, _total: bar.update(done))


def register(app: typer.Typer) -> None:
    app.command("score")(_score)
