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
    from facesurv.atomic import atomic_path, ensure_writable_dir
    from facesurv.config import with_overrides
    from features.cohort import import_cohort, summarize

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
    patients: Annotated[int | None, typer.Option(help="Patients to keep, stratified by event (0 = all; default: synth.patients).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for dates, subsample, latents and direction (default: cohort.seed).")] = None,
    strength: Annotated[float | None, typer.Option(help="Signal strength s in latent-spread units (default: synth.strength).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Semi-synthetic cohort: real clinical data plus one rendered portrait per patient whose
    latent carries a known prognostic signal (DIR/photos, DIR/clinical.csv, DIR/truth)."""
    _, params = open_workspace(workspace)
    from flows.synth_cohort import make_synth_cohort

    summary = make_synth_cohort(params, out_dir, base=base, patients=patients, seed=seed, strength=strength)
    c = summary["c_index"]
    out.print(f"wrote {out_dir}: {summary['patients']} patients, {summary['events']} events, "
              f"{summary['resolution']}px portraits (base {summary['base']}, seed {summary['seed']}, "
              f"space {summary['space']}, strength {summary['strength']:g})")
    out.print(f"oracle C-index (out-of-fold): clinical {c['clinical_cox']:.3f}, clinical + true latent "
              f"{c['oracle_cox']:.3f}; truth in {out_dir / 'truth'} (never read by the pipeline)")
    t = summary["timings"]
    out.print(f"direction estimate {t['direction_s']:.1f} s ({summary['direction']['iterations']} power iterations), "
              f"residuals + rendering + oracle {t['cohort_s']:.1f} s")
    out.print(summary["statement"], style="bold yellow" if summary["generator_is_random_init"] else None,
              soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(cohort_app, name="cohort")
