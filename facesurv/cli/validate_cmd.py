"""`facesurv validate clinical|manifest|latents FILE --out DIR`: run one data contract on a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facesurv.cli.common import WorkspaceOpt, open_workspace, out

FileArg = Annotated[Path, typer.Argument(help="Table to validate (UTF-8 CSV; for latents also parquet or a "
                                        "projection shard .npz); a file that is not one exits non-zero, a "
                                        "malformed line is quarantined.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Directory for valid.csv, quarantine.csv, report.html, results.json.")]
FractionOpt = Annotated[float | None, typer.Option("--max-failing-fraction",
                        help="Fail above this fraction of failing rows (default: contracts.max_failing_fraction).")]


def _validate(kind: str, file: Path, out_dir: Path, workspace: Path | None, max_failing_fraction: float | None) -> None:
    from features.contracts import read_table, run_contract, save_contract_outputs
    from ground.atomic import ensure_writable_dir
    from ground.config import with_overrides
    from ground.errors import DataError

    _, params = open_workspace(workspace)
    params = with_overrides(params, contracts={"max_failing_fraction": max_failing_fraction})
    df = read_table(file)
    ensure_writable_dir(out_dir)
    result = run_contract(kind, df, params, docs_dir=out_dir / "data_docs")
    save_contract_outputs(result, out_dir)
    s = result.summary
    out.print(f"{kind}: {s['rows']} rows, {s['valid']} valid, {s['failing']} quarantined "
              f"({s['failing_fraction']:.1%}, threshold {s['threshold']:.1%}); report: {out_dir / 'report.html'}")
    for f in s["failures"]:
        out.print(f"  {f['expectation']}: {f['rows']} rows - {f['reason']}")
    if not result.passed:
        raise DataError(result.failure_message())


def register(app: typer.Typer) -> None:
    validate_app = typer.Typer(help="Data contracts (Great Expectations): valid rows proceed, failing rows are "
                               "quarantined with a reason.", no_args_is_help=True)

    @validate_app.command("clinical")
    def clinical(file: FileArg, out_dir: OutOpt, max_failing_fraction: FractionOpt = None,
                 workspace: WorkspaceOpt = None) -> None:
        """Clinical table: schema of cohort.base, ids, types, ranges, levels, labels, no future record, no
        leaking column; a later record_known_at of a patient is a correction (both rows kept)."""
        _validate("clinical", file, out_dir, workspace, max_failing_fraction)

    @validate_app.command("manifest")
    def manifest(file: FileArg, out_dir: OutOpt, max_failing_fraction: FractionOpt = None,
                 workspace: WorkspaceOpt = None) -> None:
        """Alignment manifest: statuses, aligner version, output sizes."""
        _validate("manifest", file, out_dir, workspace, max_failing_fraction)

    @validate_app.command("latents")
    def latents(file: FileArg, out_dir: OutOpt, max_failing_fraction: FractionOpt = None,
                workspace: WorkspaceOpt = None) -> None:
        """Latents: dimension, finite values, norm bounds, projection loss threshold."""
        _validate("latents", file, out_dir, workspace, max_failing_fraction)

    app.add_typer(validate_app, name="validate")
