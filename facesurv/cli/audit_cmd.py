"""`facesurv audit`: a score's full provenance, and the ledger's integrity check."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from typer.core import TyperGroup

from facesurv.cli.common import WorkspaceOpt, console, open_workspace, out


class _AuditGroup(TyperGroup):
    """`facesurv audit SCORE_ID` is short for `facesurv audit show SCORE_ID`."""

    def resolve_command(self, ctx, args):  # type: ignore[override]
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().resolve_command(ctx, args)


audit_app = typer.Typer(cls=_AuditGroup, no_args_is_help=True,
                        help="Where a risk score came from, and whether the lineage ledger is intact. "
                             "`facesurv audit SCORE_ID` is short for `facesurv audit show SCORE_ID`.")


def _open(workspace):
    from serving.ledger import open_ledger
    from serving.wiring import ledger_target

    ws, params = open_workspace(workspace)
    target = ledger_target(ws, params)
    if "://" not in target and not ws.ledger_path.exists():
        from facesurv.errors import NotAvailableError

        raise NotAvailableError(f"{ws.ledger_path}: no ledger yet (scores are recorded by `facesurv serve`)")
    return open_ledger(target, schema=params.serving.ledger_schema)


@audit_app.command("show")
def show(
    score_id: Annotated[str, typer.Argument(help="The score_id a score response returned.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the ledger entry as JSON.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Print a score's full provenance (photo, data versions, aligner, generator, projection, features, model, code, params) and its place in the hash chain."""
    from facesurv.errors import DataError

    ledger = _open(workspace)
    entry = ledger.get(score_id.strip())
    if entry is None:
        raise DataError(f"no score {score_id!r} in the ledger ({ledger.describe()}); check the id")
    report = ledger.verify()
    if as_json:
        out.print_json(json.dumps({**entry.to_dict(), "ledger_ok": report.ok, "ledger_problems": report.problems}))
    else:
        from serving.audit import provenance_lines

        for line in provenance_lines(entry, where=ledger.describe()):
            out.print(line, markup=False)
        state = "intact" if report.ok else f"TAMPERED ({len(report.problems)} problem(s); run `facesurv audit verify`)"
        out.print(f"ledger chain: {state}, {report.records} records", markup=False)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("verify")
def verify(
    expect_head: Annotated[str | None, typer.Option(help="Head hash recorded earlier (e.g. in another system): "
                                                        "also catches a rewrite of the whole chain.")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Walk the hash chain: exit 0 if every record is intact, 1 naming each edited, deleted or reordered record."""
    ledger = _open(workspace)
    rep = ledger.verify()
    problems = list(rep.problems)
    if expect_head and expect_head != rep.head_hash:
        problems.append(f"head hash {rep.head_hash} differs from the expected {expect_head}: the chain was rewritten")
    if problems:
        for p in problems:
            console.print(f"TAMPERED: {p}", markup=False)
        console.print(f"ledger {ledger.describe()}: {rep.records} records, {len(problems)} problem(s)", markup=False)
        raise typer.Exit(1)
    out.print(f"ledger {ledger.describe()}: intact, {rep.records} records, head seq {rep.head_seq} "
              f"hash {rep.head_hash}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
