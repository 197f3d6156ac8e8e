"""`facesurv audit`: a score's full provenance, and the ledger's integrity check."""

from __future__ import annotations

import json
from pathlib import Path
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


def _open(workspace, *, signing: bool = False, public_key: Path | None = None):
    """The workspace ledger, opened read-only: checking never writes to what it checks. With the
    ledger's public key (signatures are checked) or, for `anchor`, its private key."""
    from serving.anchor import anchor_settings
    from serving.ledger import open_ledger
    from serving.wiring import ledger_target

    ws, params = open_workspace(workspace)
    target = ledger_target(ws, params)
    if "://" not in target and not ws.ledger_path.exists():
        from ground.errors import NotAvailableError

        raise NotAvailableError(f"{ws.ledger_path}: no ledger yet (scores are recorded by `facesurv serve`)")
    settings = anchor_settings(ws, params)
    key = settings.signing_key() if signing else None
    if public_key is not None:
        from serving.anchor import LedgerKey

        key = LedgerKey.load_public(public_key)
    return open_ledger(target, schema=params.serving.ledger_schema, anchoring=settings, read_only=True,
                       key=key), settings, params


@audit_app.command("show")
def show(
    score_id: Annotated[str, typer.Argument(help="The score_id a score response returned.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the ledger entry as JSON.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Print a score's full provenance (photo, data versions, aligner, generator, projection, features, model, code, params) and its place in the hash chain."""
    from ground.errors import DataError
    from serving.ledger import TamperedRecord

    ledger, _, _ = _open(workspace)
    try:
        entry = ledger.get(score_id.strip())
    except TamperedRecord as exc:
        out.print(f"TAMPERED: {exc}", markup=False)
        raise typer.Exit(1) from None
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
    anchor: Annotated[list[Path] | None, typer.Option(
        help="A file of signed anchors (JSON lines, e.g. a copy of serving/anchors.jsonl kept elsewhere); "
             "repeatable. Each must be a prefix of the chain. Default: the workspace's anchors file.")] = None,
    public_key: Annotated[Path | None, typer.Option(
        help="The ledger's Ed25519 public key (PEM). Default: serving.anchor_key + '.pub'.")] = None,
    expect_head: Annotated[str | None, typer.Option(
        help="Deprecated (use --anchor): a head hash recorded earlier; it must occur in the chain.")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Walk the chain: exit 0 if every record, signature and anchor checks out, 1 naming each problem.

    Opens the ledger read-only: it reports dropped triggers or a deleted head, and repairs nothing.
    """
    from serving.anchor import Anchor, AnchorLog, expected_hash

    ledger, settings, _ = _open(workspace, public_key=public_key)
    problems: list[str] = []
    anchors: list[Anchor] | None = None  # None: the workspace's anchors file (ledger.verify reads it)
    if anchor or expect_head:
        anchors = []
        for path in anchor or [settings.anchor_file]:
            if anchor and not path.is_file():
                problems.append(f"{path}: no such anchors file")
                continue
            found, bad = AnchorLog(path).read()
            anchors, problems = anchors + found, problems + bad
        if expect_head:
            console.print("note: --expect-head is deprecated: keep a copy of the anchors file and pass --anchor",
                          markup=False)
            anchors.append(expected_hash(expect_head.strip()))
    rep = ledger.verify(anchors).plus(problems)
    if ledger.key is None and rep.signed_records:
        rep = rep.plus([f"the records are signed but there is no public key at {settings.public_key_path}: "
                        "pass --public-key"])
    for note in rep.notes:
        console.print(f"note: {note}", markup=False)
    if not rep.ok:
        for p in rep.problems:
            console.print(f"TAMPERED: {p}", markup=False)
        console.print(f"ledger {ledger.describe()}: {rep.records} records, {len(rep.problems)} problem(s)",
                      markup=False)
        raise typer.Exit(1)
    signed = "signatures checked" if rep.signatures_checked else "signatures NOT checked (no ledger key)"
    out.print(f"ledger {ledger.describe()}: intact, {rep.records} records, {signed}, {rep.anchors_matched} "
              f"anchor(s) matched, head seq {rep.head_seq} hash {rep.head_hash}", markup=False)


@audit_app.command("anchor")
def anchor_now(workspace: WorkspaceOpt = None) -> None:
    """Check the records since the latest anchor and append a signed anchor of the head to the anchors file
    (the server also anchors every serving.anchor_every appends and at shutdown)."""
    ledger, settings, _ = _open(workspace, signing=True)
    taken = ledger.checkpoint("on demand")
    if taken is None:
        out.print(f"nothing to anchor: no record since the latest anchor in {settings.anchor_file}", markup=False)
        return
    out.print(f"anchored seq {taken.seq} hash {taken.hash} in {settings.anchor_file}", markup=False)


@audit_app.command("grant")
def grant(
    role: Annotated[str, typer.Argument(help="The PostgreSQL role the server connects as.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """PostgreSQL ledger: as its owner, let ROLE only INSERT and SELECT (creating ROLE, LOGIN, if needed).
    Then point serving.ledger_url at ROLE: it cannot UPDATE, DELETE or drop the triggers."""
    from ground.errors import ConfigError
    from serving.ledger import grant_serving_role
    from serving.wiring import ledger_target

    ws, params = open_workspace(workspace)
    target = ledger_target(ws, params)
    if "://" not in target:
        raise ConfigError("`audit grant` is for a PostgreSQL ledger; a SQLite ledger has no roles (its file is 0600)")
    grant_serving_role(target, schema=params.serving.ledger_schema, role=role)
    out.print(f"role {role} may INSERT and SELECT on schema {params.serving.ledger_schema} and nothing else; "
              f"connect the server as {role} through serving.ledger_url (set a password with ALTER ROLE)",
              markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
