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


def make_synth_cohort(params, out_dir: Path, *, base: str | None = None, patients: int | None = None,
                      seed: int | None = None, strength: float | None = None) -> dict:
    """Build and write a synth cohort (the `cohort synth` command's work, reusable by the demo).

    Returns the truth summary plus base, seed, resolution, generator and timings.
    """
    import time

    import torch

    from embedding.direction import generator_direction
    from embedding.stylegan2 import GeneratorConfig, load_generator
    from facesurv.config import BASE_DATASETS, with_overrides
    from facesurv.errors import DataError
    from features.cohort import import_cohort
    from features.synth_cohort import (
        check_out_dir,
        generator_statement,
        synthesize_cohort,
        write_synth_cohort,
    )

    if base is not None and base not in BASE_DATASETS:
        raise DataError(f"unknown base dataset {base!r}; choose one of: {', '.join(BASE_DATASETS)}")
    if patients is not None and patients < 0:
        raise DataError(f"--patients must be >= 0 (0 = every patient), got {patients}")
    if strength is not None and strength < 0:
        raise DataError(f"--strength must be >= 0, got {strength:g}")
    params = with_overrides(params, cohort={"base": base, "seed": seed},
                            synth={"patients": patients, "strength": strength})
    c, s, g = params.cohort, params.synth, params.generator
    check_out_dir(out_dir)
    clinical = import_cohort(c.base, seed=c.seed, admission_start=c.admission_start,
                             admission_span_days=c.admission_span_days, record_lag_days=c.record_lag_days)
    if s.patients > len(clinical):
        raise DataError(f"--patients {s.patients} is more than the {len(clinical)} patients of {c.base}; "
                        f"pass {len(clinical)} or fewer (0 = all)")
    config = GeneratorConfig(z_dim=g.z_dim, w_dim=g.w_dim, mapping_layers=g.mapping_layers, resolution=g.resolution,
                             channel_base=g.channel_base, channel_max=g.channel_max, lr_multiplier=g.lr_multiplier)
    G, info = load_generator(g.checkpoint, config=config, seed=g.seed)
    timings = {}
    # One intra-op thread: the tiny generator's ops are too small to split, and on a busy
    # 2-core box two spinning threads made the direction estimate 3-4x slower (docs/cohort.md).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        direction = generator_direction(G, space=s.space, samples=s.direction_samples, seed=c.seed,
                                        iterations=s.direction_iterations, truncation_psi=g.truncation_psi)
        timings["direction_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        cohort = synthesize_cohort(clinical, base=c.base, G=G, direction=direction.vector.numpy(),
                                   patients=s.patients, strength=s.strength, space=s.space, seed=c.seed,
                                   cox_alpha=s.cox_alpha, oracle_folds=s.oracle_folds,
                                   truncation_psi=g.truncation_psi)
        timings["cohort_s"] = round(time.perf_counter() - t0, 2)
    finally:
        torch.set_num_threads(threads)
    generator = {"source": info.source, "sha256": info.sha256, "is_random_init": info.is_random_init,
                 "config": info.config, "description": info.description}
    cohort.summary["direction"] = {"eigenvalue": direction.eigenvalue, "iterations": direction.iterations,
                                   "converged": direction.converged, "samples": s.direction_samples}
    write_synth_cohort(cohort, out_dir, base=c.base, seed=c.seed, generator=generator)
    return {**cohort.summary, "base": c.base, "seed": c.seed, "resolution": int(cohort.images.shape[1]),
            "generator": generator, "generator_is_random_init": info.is_random_init,
            "statement": generator_statement(generator), "timings": timings}


def register(app: typer.Typer) -> None:
    app.add_typer(cohort_app, name="cohort")
