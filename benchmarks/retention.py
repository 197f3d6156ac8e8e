"""How much of the hidden facial signal survives the pixel -> latent round trip.

For each signal strength s and projection setting: build the semi-synthetic cohort (same
seed, so the same patients, latents and direction), project its rendered portraits back
with embedding.projection.project, and compare on held-out patients a Cox model on the
recovered latent's component along d with the same model on the true one:

    retention = (C_recovered - 0.5) / (C_oracle - 0.5)

Usage (from the repository root):
    .venv/bin/python benchmarks/retention.py --patients 300 --strengths 0.5 1 2 \
        --settings mse:100 mse:200 --out retention.json
A setting is LOSS:STEPS[:LR[:NOISE]][:KEY=VALUE...] (loss mse | perceptual | mse+perceptual;
NOISE the projection's noise_mode optimize | const | none; KEY any other option of
params.yaml's projection section, e.g. initial_noise_factor=0); the rest comes from params.yaml. Prints a markdown table; --out also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def held_out_c(design: np.ndarray, time_: np.ndarray, event: np.ndarray, train: np.ndarray, test: np.ndarray,
               alpha: float) -> float:
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.metrics import concordance_index_censored
    from sksurv.util import Surv

    model = CoxPHSurvivalAnalysis(alpha=alpha).fit(design[train], Surv.from_arrays(event[train], time_[train]))
    return float(concordance_index_censored(event[test], time_[test], model.predict(design[test]))[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="gbsg2")
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--settings", nargs="+", default=["mse:100"])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads (1: the small generator's ops do not split well; see docs/cohort.md)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from embedding.direction import generator_direction
    from embedding.projection import latent_statistics, project
    from embedding.stylegan2 import GeneratorConfig, load_generator
    from facesurv.config import load_params
    from features.cohort import import_cohort
    from features.synth_cohort import clinical_design, synthesize_cohort

    repo = Path(__file__).resolve().parent.parent
    params = load_params(repo / "params.yaml")
    g, s, c, p = params.generator, params.synth, params.cohort, params.projection
    G, info = load_generator(g.checkpoint, config=GeneratorConfig.from_params(g), seed=g.seed)
    t0 = time.perf_counter()
    direction = generator_direction(G, space="w", samples=s.direction_samples, seed=args.seed,
                                    iterations=s.direction_iterations)
    direction_s = time.perf_counter() - t0
    clinical = import_cohort(args.base, seed=args.seed, admission_start=c.admission_start,
                             admission_span_days=c.admission_span_days, record_lag_days=c.record_lag_days)
    perceptual = None
    if any("perceptual" in st for st in args.settings):
        from embedding.perceptual import load_perceptual

        perceptual, _ = load_perceptual(network=params.perceptual.network, vgg16_path=params.perceptual.vgg16_path)

    from sklearn.model_selection import train_test_split

    stats = latent_statistics(G, samples=p.w_avg_samples)
    rows = []
    for strength in args.strengths:
        cohort = synthesize_cohort(clinical, base=args.base, G=G, direction=direction.vector.numpy(),
                                   patients=args.patients, strength=strength, space="w", seed=args.seed,
                                   cox_alpha=s.cox_alpha, oracle_folds=s.oracle_folds, truncation_psi=g.truncation_psi)
        time_ = cohort.clinical["time_days"].to_numpy(float)
        event = cohort.clinical["event"].to_numpy().astype(bool)
        idx = np.arange(len(time_))
        train, test = train_test_split(idx, test_size=params.training.test_fraction, random_state=params.training.seed,
                                       stratify=event)
        X = clinical_design(cohort.clinical, args.base)
        d = cohort.direction.astype(np.float64)
        true_along = cohort.truth["along_d"].to_numpy()
        c_clin = held_out_c(X, time_, event, train, test, s.cox_alpha)
        c_oracle = held_out_c(true_along[:, None], time_, event, train, test, s.cox_alpha)
        c_oracle_fused = held_out_c(np.column_stack([X, true_along]), time_, event, train, test, s.cox_alpha)
        images = torch.from_numpy(cohort.images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        for setting in args.settings:
            loss, steps, *rest = setting.split(":")
            named = dict(r.split("=", 1) for r in rest if "=" in r)
            positional = [r for r in rest if "=" not in r]
            lr = float(positional[0]) if positional else p.learning_rate
            noise_mode = positional[1] if len(positional) > 1 else p.noise_mode
            opts = {**p.project_options(), "loss": loss, "steps": int(steps), "learning_rate": lr,
                    "noise_mode": noise_mode, "space": "w"}
            for key, value in named.items():
                if key not in opts:
                    raise SystemExit(f"setting {setting!r}: {key} is not a projection option ({', '.join(opts)})")
                opts[key] = type(opts[key])(value)
            t0 = time.perf_counter()
            res = project(G, images, **opts, perceptual=perceptual, seed=p.seed, stats=stats)
            proj_s = time.perf_counter() - t0
            rec_along = res.w.astype(np.float64) @ d
            c_rec = held_out_c(rec_along[:, None], time_, event, train, test, s.cox_alpha)
            c_rec_fused = held_out_c(np.column_stack([X, rec_along]), time_, event, train, test, s.cox_alpha)
            row = {
                "strength": strength, "loss": loss, "steps": int(steps), "learning_rate": lr,
                "noise_mode": noise_mode, "options": named,
                "c_clinical": round(c_clin, 4), "c_oracle": round(c_oracle, 4), "c_recovered": round(c_rec, 4),
                "retention": round((c_rec - 0.5) / (c_oracle - 0.5), 3),
                "c_oracle_fused": round(c_oracle_fused, 4), "c_recovered_fused": round(c_rec_fused, 4),
                "corr_along_d": round(float(np.corrcoef(true_along, rec_along)[0, 1]), 4),
                "mse": round(float(np.mean(res.mse)), 5), "initial_mse": round(float(np.mean(res.initial_mse)), 5),
                "projection_s": round(proj_s, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    meta = {"date": dt.date.today().isoformat(), "machine": f"{_cpu_name()}, {torch.get_num_threads()} threads",
            "base": args.base, "patients": args.patients, "seed": args.seed,
            "test_fraction": params.training.test_fraction, "generator": info.description,
            "resolution": g.resolution, "channel_max": g.channel_max, "direction_s": round(direction_s, 1),
            "direction_iterations": direction.iterations}
    print(f"\n{meta}\n")
    print("| s | loss | steps | lr | noise | C clinical | C oracle (latent) | C recovered | retention | corr along d "
          "| oracle+clinical | recovered+clinical | MSE start -> end | projection s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['strength']:g} | {r['loss']} | {r['steps']} | {r['learning_rate']:g} | {r['noise_mode']} "
              f"{' '.join(f'{k}={v}' for k, v in r['options'].items())} "
              f"| {r['c_clinical']:.3f} | {r['c_oracle']:.3f} "
              f"| {r['c_recovered']:.3f} | {r['retention']:.2f} | {r['corr_along_d']:.3f} | {r['c_oracle_fused']:.3f} "
              f"| {r['c_recovered_fused']:.3f} | {r['initial_mse']:.4f} -> {r['mse']:.4f} | {r['projection_s']:.0f} |")
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
