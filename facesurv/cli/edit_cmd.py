"""`facesurv edit --patient-id ID --attribute health|age [--betas ...]`: one patient's edit grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facesurv.cli.common import WorkspaceOpt, open_workspace, out

PatientOpt = Annotated[str, typer.Option("--patient-id", help="A patient of the training set (one with a latent).")]
AttributeOpt = Annotated[str, typer.Option("--attribute", help="health: the embedding Cox model's coefficient "
                                           "vector; age: a cross-validated ridge direction of age on the latents.")]
BetasOpt = Annotated[list[float] | None, typer.Option("--betas", help="Edit amounts in spreads of the cohort along "
                                                      "the direction, increasing; repeat the option "
                                                      "(default: attributes.edit_betas).")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="PNG to write (default: "
                                             "<workspace>/artifacts/edits/<patient>-<attribute>.png).")]


def register(app: typer.Typer) -> None:
    @app.command("edit")
    def edit(patient_id: PatientOpt, attribute: AttributeOpt, betas: BetasOpt = None, out_file: OutOpt = None,
             workspace: WorkspaceOpt = None) -> None:
        """Move a patient's latent along an attribute, render each step, re-project and re-score it, and
        write the grid (one row per beta, the unedited reconstruction marked); logged to MLflow."""
        from flows.attribute_steps import edit_patient

        ws, params = open_workspace(workspace)
        summary = edit_patient(ws, params, patient_id=patient_id, attribute=attribute, betas=betas, out=out_file)
        risks = ", ".join(f"{b:+g}: {r:+.3f}" for b, r in zip(summary["betas"], summary["rescored_log_risk"],
                                                               strict=True))
        out.print(f"{attribute} grid for {patient_id}: {summary['path']} (MLflow run {summary.get('run_id')})")
        out.print(f"  re-scored log-risk by beta: {risks}")
        r2 = (summary.get("direction") or {}).get("r2")
        if r2:
            from demo.report import stat_text

            shuffled = (summary["direction"].get("shuffled") or {}).get("mean")
            out.print(f"  age direction held-out R2 {stat_text(r2)}; shuffled ages "
                      f"{'n/a' if shuffled is None else format(shuffled, '.3f')}")
