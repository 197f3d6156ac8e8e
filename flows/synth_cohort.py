"""The semi-synthetic cohort as one stage: params in, cohort directory out.

The math lives in features/synth_cohort.py (pure) and embedding/ (generator, direction);
this module reads the settings, loads the generator and writes the files.
"""

from __future__ import annotations

from pathlib import Path

from facesurv.config import Params


def make_synth_cohort(params: Params, out_dir: Path, *, base: str | None = None, patients: int | None = None,
                      seed: int | None = None, strength: float | None = None) -> dict:
    """Build and write a semi-synthetic cohort from params (what `facesurv cohort synth`,
    the dvc.yaml cohort stage and the demo run); the options override params when given.

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
    config = GeneratorConfig.from_params(g)
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
