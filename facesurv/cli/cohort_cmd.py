"""`facesurv cohort import|synth`: clinical cohorts in the platform's schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facesurv.cli.common import WorkspaceOpt, open_workspace, out

cohort_app = typer.Typer(help="Create cohorts: real clinical data, or semi-synthetic portraits with a known signal.",
                         no_args_is_help=True)


@cohort_app.command("import")
def import_(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write clinical.csv into.")],
    base: Annotated[str | None, typer.Option(help="Bundled dataset: gbsg2, whas500, flchain, veterans_lung_cancer, aids.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the synthetic admission dates (default: cohort.seed).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Import a real survival cohort bundled with scikit-survival as DIR/clinical.csv."""
    from features.cohort import import_cohort, summarize
    from ground.atomic import atomic_path, ensure_writable_dir
    from ground.config import with_overrides

    _, params = open_workspace(workspace)
    params = with_overrides(params, cohort={"base": base, "seed": seed})
    c = params.cohort
    df = import_cohort(c.base, seed=c.seed, admission_start=c.admission_start,
                       admission_span_days=c.admission_span_days, record_lag_days=c.record_lag_days)
    ensure_writable_dir(out_dir)
    with atomic_path(out_dir / "clinical.csv") as tmp:
        df.to_csv(tmp, index=False)
    s = summarize(df)
    out.print(f"wrote {out_dir / 'clinical.csv'}: {s['patients']} patients, {s['events']} events, "
              f"median follow-up {s['median_follow_up_days']:.0f} days (base {c.base}, seed {c.seed})")


@cohort_app.command("synth")
def synth(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to create (an earlier synth cohort there is replaced).")],
    base: Annotated[str | None, typer.Option(help="Bundled dataset: gbsg2, whas500, flchain, veterans_lung_cancer, aids.")] = None,
    patients: Annotated[int | None, typer.Option(help="Patients to keep, a seeded random subsample (0 = all; default: synth.patients).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for dates, subsample and faces (default: cohort.seed).")] = None,
    survival_seed: Annotated[int | None, typer.Option("--survival-seed", help="Seed for the drawn outcomes only (default: synth.survival_seed, else --seed).")] = None,
    faces: Annotated[Path | None, typer.Option(help="Labelled face folder (photos + labels.csv: file, age, sex): real faces. Without it: rendered faces.")] = None,
    hr_per_decade: Annotated[float | None, typer.Option("--hr-per-decade", help="Real faces: hazard ratio per decade of apparent-age gap (default: synth.hr_per_decade).")] = None,
    strength: Annotated[float | None, typer.Option(help="Rendered faces: log-hazard per prior sd along d (default: synth.strength).")] = None,
    direction: Annotated[str | None, typer.Option(help="Rendered faces: random | visible (the easy case) (default: synth.direction).")] = None,
    space: Annotated[str | None, typer.Option(help="Rendered faces: w | z, where the signal lives (default: synth.space).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Semi-synthetic cohort: real clinical covariates, one face per patient carrying a known
    log-hazard, and outcomes drawn from the truth (DIR/photos, DIR/clinical.csv, DIR/truth)."""
    ws, params = open_workspace(workspace)
    from demo.cohort import make_synth_cohort

    summary = make_synth_cohort(params, out_dir, ws=ws, base=base, patients=patients, seed=seed, strength=strength,
                                faces=faces, survival_seed=survival_seed, direction=direction, space=space,
                                hr_per_decade=hr_per_decade)
    c = summary["ceiling_c_index"]
    res = f"{summary['resolution']}px rendered portraits" if summary["resolution"] else "real photos"
    out.print(f"wrote {out_dir}: {summary['patients']} patients, {summary['events']} drawn events, {res} "
              f"(base {summary['base']}, seed {summary['seed']}, survival seed {summary['survival_seed']}); "
              f"rung: {summary['rung']}", soft_wrap=True)
    out.print(f"ceiling C-index (true log-hazards, no model): face {c['face']:.3f}, clinical {c['clinical']:.3f}, "
              f"total {c['total']:.3f}; truth in {out_dir / 'truth'} (never read by the pipeline)", soft_wrap=True)
    out.print(summary["statement"], style="bold yellow" if summary["generator_is_random_init"] else None,
              soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(cohort_app, name="cohort")
