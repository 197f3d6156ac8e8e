"""The semi-synthetic cohort as one stage: params in, cohort directory out.

The math lives in features/synth_cohort.py, synth_faces.py and synth_survival.py (pure) and
embedding/ (generator, direction); this module reads the settings, loads the generator or
the face labels and writes the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ground.config import Params
from ground.workspace import REPO_ROOT, Workspace


def resolve_faces_dir(value: str | Path | None, ws: Workspace | None) -> Path | None:
    """A configured face folder: absolute as given; relative under the workspace, else under
    the repository (the demo's workspace sits inside it); None when unset or absent."""
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    candidates = [path] if path.is_absolute() else [*([ws.root / path] if ws else []), REPO_ROOT / path]
    return next((c.resolve() for c in candidates if c.is_dir()), None)


def make_synth_cohort(params: Params, out_dir: Path, *, ws: Workspace | None = None, base: str | None = None,
                      patients: int | None = None, seed: int | None = None, strength: float | None = None,
                      faces: Path | None = None, survival_seed: int | None = None, direction: str | None = None,
                      space: str | None = None, hr_per_decade: float | None = None) -> dict[str, Any]:
    """Build and write a semi-synthetic cohort (what `facesurv cohort synth`, the dvc.yaml
    cohort stage and the demo run); the options override params when given. With `faces`
    (a labelled face folder) the cohort has real faces, otherwise rendered ones.

    Returns the truth summary plus resolution, generator, statement and timings.
    """
    import time

    from features.cohort import import_cohort
    from features.synth_cohort import (
        assemble_cohort,
        check_out_dir,
        clinical_truth,
        faces_statement,
        generator_statement,
        real_faces,
        rung_name,
        select_patients,
        write_synth_cohort,
    )
    from ground.config import BASE_DATASETS, with_overrides
    from ground.errors import DataError

    if base is not None and base not in BASE_DATASETS:
        raise DataError(f"unknown base dataset {base!r}; choose one of: {', '.join(BASE_DATASETS)}")
    if patients is not None and patients < 0:
        raise DataError(f"--patients must be >= 0 (0 = every patient), got {patients}")
    if strength is not None and strength < 0:
        raise DataError(f"--strength must be >= 0, got {strength:g}")
    if hr_per_decade is not None and hr_per_decade <= 0:
        raise DataError(f"--hr-per-decade must be > 0, got {hr_per_decade:g}")
    params = with_overrides(params, cohort={"base": base, "seed": seed},
                            synth={"patients": patients, "strength": strength, "direction": direction,
                                   "space": space, "survival_seed": survival_seed, "hr_per_decade": hr_per_decade})
    c, s = params.cohort, params.synth
    surv_seed = c.seed if s.survival_seed is None else s.survival_seed
    check_out_dir(out_dir)
    table = import_cohort(c.base, seed=c.seed, admission_start=c.admission_start,
                          admission_span_days=c.admission_span_days, record_lag_days=c.record_lag_days)
    if s.patients > len(table):
        raise DataError(f"--patients {s.patients} is more than the {len(table)} patients of {c.base}; "
                        f"pass {len(table)} or fewer (0 = all)")
    timings: dict[str, float] = {}
    model = clinical_truth(table, c.base, alpha=s.cox_alpha)
    chosen = select_patients(table, s.patients, seed=c.seed)
    generator: dict[str, Any] | None = None
    extra: dict[str, Any] = {}
    if faces is not None:
        from features.synth_faces import read_face_labels

        face_set = real_faces(chosen, read_face_labels(Path(faces)), gap_sd=s.gap_sd, hr_per_decade=s.hr_per_decade,
                              seed=c.seed)
        rung = rung_name("real")
    else:
        face_set, generator, extra = _rendered(params, chosen, ws, timings)
        rung = rung_name("rendered", direction=s.direction, space=s.space)
    t0 = time.perf_counter()
    cohort = assemble_cohort(chosen, face_set, base=c.base, base_table=table, model=model, survival_seed=surv_seed,
                             seed=c.seed, rung=rung)
    cohort.summary.update(extra)
    timings["outcomes_s"] = round(time.perf_counter() - t0, 2)
    write_synth_cohort(cohort, out_dir, generator=generator)
    statement = generator_statement(generator) if generator is not None else faces_statement(face_set)
    return {**cohort.summary, "resolution": int(face_set.images.shape[1]) if face_set.images is not None else None,
            "generator": generator, "generator_is_random_init": bool(generator and generator["is_random_init"]),
            "statement": statement, "timings": timings}


def _rendered(params: Params, chosen: Any, ws: Workspace | None, timings: dict[str, float]
              ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Rendered faces: the generator (a relative checkpoint under the workspace), the direction, the renders."""
    import time

    import torch

    from embedding.direction import generator_direction
    from facesurv.components import components
    from features.synth_cohort import random_direction, rendered_faces

    c, s, g = params.cohort, params.synth, params.generator
    G, info = components(ws, params).generator()
    extra: dict[str, Any] = {"direction": {"kind": s.direction}}
    # One intra-op thread: the tiny generator's ops are too small to split, and on a busy
    # 2-core box two spinning threads made the direction estimate 3-4x slower (docs/cohort.md).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        if s.direction == "visible":
            found = generator_direction(G, space=s.space, samples=s.direction_samples, seed=c.seed,
                                        iterations=s.direction_iterations, truncation_psi=g.truncation_psi)
            vector = found.vector.numpy()
            extra["direction"].update({"eigenvalue": found.eigenvalue, "iterations": found.iterations,
                                       "converged": found.converged, "samples": s.direction_samples})
        else:
            vector = random_direction(G.w_dim if s.space == "w" else G.z_dim, seed=c.seed)
        timings["direction_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        faces = rendered_faces(len(chosen), G=G, direction=vector, space=s.space, strength=s.strength, seed=c.seed,
                               truncation_psi=g.truncation_psi, photo_ids=chosen["photo_id"].astype(str).tolist(),
                               patient_ids=chosen["patient_id"].astype(str).tolist())
        timings["render_s"] = round(time.perf_counter() - t0, 2)
    finally:
        torch.set_num_threads(threads)
    generator = {"source": info.source, "sha256": info.sha256, "is_random_init": info.is_random_init,
                 "config": info.config, "description": info.description}
    return faces, generator, extra
