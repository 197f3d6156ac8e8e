"""The retention ladder: how much of the face's added value the platform captures, rung by
rung, over seeds.

Each run builds a semi-synthetic cohort with demo.cohort.make_synth_cohort (faces
first, outcomes drawn from the truth), aligns real photos with the nightly flow's aligner
(facesurv.components), projects every photo with the flow's projection driver
(embedding.project_batch) and settings (params.projection; a z rung projects in z), and
cross-fits the demo's models (training.crossfit, the demo's evaluation stage) beside the
ceiling. Nothing reads
the true direction or latents.

    retention   = (C_fusion - C_clinical CoxPH) / (C_ceiling_total - C_ceiling_clinical)
    fusion gain = C_fusion - C_clinical CoxPH;   retention_face = (C_Coxnet - 0.5) / (C_ceiling_face - 0.5)

Rungs: visible-w (the generator's most visible direction in w: the easy case), random-w,
random-z (signal in z, projected in z), real (--faces, the current generator).

Usage (from the repository root; one torch thread per process):
    .venv/bin/python benchmarks/retention.py --rungs visible-w random-w --seeds 0 1 2 3 4 --out a.json
    .venv/bin/python benchmarks/retention.py --rungs real --faces ../shared/utkface --seeds 0 1 2 3 4 --out b.json
    .venv/bin/python benchmarks/retention.py --rungs real --faces F --generator runs/ada/generator --out c.json
    .venv/bin/python benchmarks/retention.py --rungs real --faces F --init encoder --steps 20 --out d.json
    .venv/bin/python benchmarks/retention.py --table a.json b.json     # one markdown table from saved runs
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import cpu_name  # noqa: E402

RUNGS = {
    "visible-w": {"direction": "visible", "space": "w"},
    "random-w": {"direction": "random", "space": "w"},
    "random-z": {"direction": "random", "space": "z"},
    "real": {},
}
# the models retention needs: the fusion (its members: Coxnet on latents, both clinical models)
# and the clinical CoxPH it is compared with; DeepSurv on latents is left out to save time
MODELS = ("coxph_clinical", "coxnet_latent", "fusion")



def aligned_photos(params: Any, photos: list[Path], cache: Path) -> dict[str, Path]:
    """photo_id -> aligned PNG, aligned once per source file (cached by its sha256 and the
    alignment settings, since the same UTKFace photo recurs across seeds); quarantined photos
    are left out."""
    import dataclasses
    import hashlib

    from embedding.align.batch import process_one
    from embedding.fileio import sha256_file
    from facesurv.components import components

    settings = hashlib.sha256(json.dumps(dataclasses.asdict(params.align), sort_keys=True).encode()).hexdigest()[:12]
    root = cache / settings
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for photo in photos:
        key = sha256_file(photo)[:24]
        done, failed = root / f"{key}.png", root / f"{key}.quarantined"
        if not done.exists() and not failed.exists():
            row = process_one(photo, key, root, components(None, params).aligner)
            if row.get("status") != "aligned":
                failed.write_text(json.dumps(row, default=str))
        if done.exists():
            out[photo.stem] = done
    return out


def trained_encoder(parts: Any, progress: Any) -> tuple[Any, Any] | None:
    """projection.init encoder: the generator's encoder from encoder.store, trained there once when
    missing (the flow's engine needs a workspace for MLflow; a benchmark keeps only the file)."""
    if parts.params.projection.init != "encoder":
        return None
    from embedding.encoder import ENCODER_FILE, save_encoder, train_encoder

    path = parts.encoder_path()
    if not (path / ENCODER_FILE).is_file():
        G, info = parts.generator()
        t0 = time.perf_counter()
        E, metrics = train_encoder(G, stats=parts.latent_stats(), space=parts.encoder_space,
                                   progress=lambda s, n: progress(f"    encoder {s}/{n}") if s % 500 == 0 else None,
                                   **parts.params.encoder.training_options())
        save_encoder(E, path, generator_sha256=info.sha256,
                     training={**metrics, "seconds": round(time.perf_counter() - t0, 1)})
    return parts.encoder()


def run_one(params: Any, rung: str, seed: int, *, faces: Path | None, cache: Path, bootstrap: int,
            progress: Any) -> dict[str, Any]:
    import pandas as pd

    from demo.cohort import make_synth_cohort
    from embedding.project_batch import PhotoInput, Projection, project_photos
    from facesurv.components import Components
    from features.latents import feature_latents
    from ground.config import with_overrides
    from training.crossfit import ceiling_formulas, cross_fit
    from training.preprocess import clinical_feature_columns

    times: dict[str, float] = {}
    spec = RUNGS[rung]
    proj_space = spec.get("space", params.projection.space)
    params = with_overrides(params, projection={"space": proj_space})
    with tempfile.TemporaryDirectory(prefix="facesurv-ladder-") as tmp:
        cohort_dir = Path(tmp) / "cohort"
        t0 = time.perf_counter()
        summary = make_synth_cohort(params, cohort_dir, seed=seed, faces=faces if rung == "real" else None,
                                    direction=spec.get("direction"), space=spec.get("space"))
        times["cohort_s"] = time.perf_counter() - t0
        clinical = pd.read_csv(cohort_dir / "clinical.csv", dtype={"patient_id": str, "photo_id": str})
        outcome = pd.read_csv(cohort_dir / "truth" / "outcome.csv", dtype={"patient_id": str}).set_index("patient_id")
        photos = sorted((cohort_dir / "photos").iterdir())
        t0 = time.perf_counter()
        if rung == "real":
            paths = aligned_photos(params, photos, cache)
        else:
            paths = {p.stem: p for p in photos}
        times["align_s"] = time.perf_counter() - t0
        parts = Components(None, params)  # a benchmark: paths in params are taken as given
        _, info = parts.generator()
        # the CLI's and the flow's driver, with shards in this run's temporary folder
        projection = Projection.configured(params.projection, parts.generator(), parts.perceptual(),
                                           stats=parts.latent_stats(), encoder=trained_encoder(parts, progress))
        t0 = time.perf_counter()
        run = project_photos(projection, [PhotoInput(pid, str(paths[pid]), root=str(paths[pid].parent))
                                          for pid in clinical["photo_id"] if pid in paths],
                             shard_dir=Path(tmp) / "shards", batch_size=params.projection.batch_size,
                             progress=lambda done, total: progress(f"    projected {done}/{total}"))
        if run.failures:
            raise SystemExit(f"{len(run.failures)} photos could not be projected, first: {run.failures[0]}")
        times["projection_s"] = time.perf_counter() - t0
        ids = [r.photo_id for r in run.results]
        frame = clinical.set_index("photo_id").loc[ids].reset_index()
        frame["latent"] = list(feature_latents(np.stack([r.latent for r in run.results]), space=proj_space))
        numeric, categorical = clinical_feature_columns(frame, base=params.cohort.base)
        t0 = time.perf_counter()
        cf = cross_fit(frame, training=params.training, numeric=numeric, categorical=categorical,
                       folds=params.synth.folds, seed=params.training.seed, models=MODELS, progress=progress)
        truth = outcome.loc[frame["patient_id"]]
        ceilings = {"ceiling_face": truth["lp_face"].to_numpy(float), "ceiling_clinical": truth["lp_clin"].to_numpy(float),
                    "ceiling_total": truth["lp_total"].to_numpy(float)}
        s = cf.summary(bootstrap=bootstrap, seed=params.evaluation.seed, extra_risks=ceilings,
                       derived=ceiling_formulas())
        times["crossfit_s"] = time.perf_counter() - t0

    def v(stat: dict[str, Any]) -> dict[str, Any]:
        return {"value": stat["value"], "ci": stat["ci"]}

    return {
        "rung": rung, "seed": seed, "patients": summary["patients"], "embedded": len(ids),
        "events": int(cf.event.sum()), "generator": info.description, "projection_space": proj_space,
        "projection_init": params.projection.init, "projection_steps": params.projection.steps,
        "c_index": {name: v(m["c_index"]) for name, m in s["models"].items()},
        **{k: v(s["derived"][k]) for k in ("retention", "retention_face", "fusion_gain", "ceiling_gain")},
        "seconds": {k: round(x, 1) for k, x in times.items()},
    }


def _fmt(values: list[float | None], digits: int = 2) -> str:
    xs = [x for x in values if x is not None]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{np.mean(xs):.{digits}f} ± {np.std(xs, ddof=1):.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    """One markdown row per rung: mean ± sd across seeds (retention_face only for rendered rungs,
    where the face is independent of the clinical data)."""
    lines = ["| rung | seeds | C clinical CoxPH | C fusion | C Coxnet (latents) | ceiling face / clinical / total "
             "| fusion gain | ceiling gain | retention | retention_face | wall s per run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    methods = sorted({(r.get("projection_init", "mean"), r.get("projection_steps")) for r in rows}, key=str)
    for rung, (init, steps) in [(rung, m) for rung in RUNGS for m in methods]:
        rs = [r for r in rows if r["rung"] == rung and (r.get("projection_init", "mean"), r.get("projection_steps"))
              == (init, steps)]
        if not rs:
            continue
        label = rung if len(methods) == 1 else f"{rung} ({init}{'' if steps is None else f' + {steps} steps'})"

        def c(name: str, rs: list[dict[str, Any]] = rs) -> list[float | None]:
            return [r["c_index"][name]["value"] for r in rs]

        ceil = " / ".join(_fmt(c(f"ceiling_{k}"), 3) for k in ("face", "clinical", "total"))
        lines.append(
            f"| {label} | {','.join(str(r['seed']) for r in rs)} | {_fmt(c('coxph_clinical'), 3)} | {_fmt(c('fusion'), 3)} "
            f"| {_fmt(c('coxnet_latent'), 3)} | {ceil} | {_fmt([r['fusion_gain']['value'] for r in rs], 3)} "
            f"| {_fmt([r['ceiling_gain']['value'] for r in rs], 3)} | {_fmt([r['retention']['value'] for r in rs])} "
            f"| {'—' if rung == 'real' else _fmt([r['retention_face']['value'] for r in rs])} "
            f"| {np.mean([sum(r['seconds'].values()) for r in rs]):.0f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rungs", nargs="+", choices=list(RUNGS), default=list(RUNGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--faces", type=Path, default=None, help="labelled face folder for the real rung")
    ap.add_argument("--patients", type=int, default=None, help="default: synth.patients")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--align-cache", type=Path, default=Path(tempfile.gettempdir()) / "facesurv-align-cache")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--generator", type=Path, default=None,
                    help="generator file or folder for every rung (default: params.yaml's generator.checkpoint)")
    ap.add_argument("--init", choices=["mean", "encoder"], default=None, help="default: projection.init")
    ap.add_argument("--steps", type=int, default=None, help="default: projection.steps")
    ap.add_argument("--encoder-store", type=Path, default=Path(tempfile.gettempdir()) / "facesurv-encoders",
                    help="trained encoders, one per generator and settings (reused across runs)")
    ap.add_argument("--out", type=Path, default=None, help="JSON lines, one per run (appended as they finish)")
    ap.add_argument("--table", type=Path, nargs="+", default=None, help="only print the table of saved runs")
    args = ap.parse_args()
    if args.table:
        rows = [json.loads(line) for f in args.table for line in f.read_text().splitlines()
                if line.startswith("{") and '"rung"' in line]
        print(table(rows))
        return 0
    if "real" in args.rungs and args.faces is None:
        raise SystemExit("the real rung needs --faces DIR (a labelled face folder)")

    import torch

    torch.set_num_threads(args.threads)
    from ground.config import load_params, with_overrides

    repo = Path(__file__).resolve().parent.parent
    params = with_overrides(load_params(repo / "params.yaml"), synth={"patients": args.patients})
    if args.generator is not None:
        params = with_overrides(params, generator={"checkpoint": str(args.generator.resolve())})
    params = with_overrides(params, projection={"init": args.init, "steps": args.steps},
                            encoder={"store": str(args.encoder_store.resolve())})
    meta = {"date": dt.date.today().isoformat(), "machine": f"{cpu_name()}, {args.threads} torch thread(s)",
            "params_hash": params.params_hash, "patients": params.synth.patients, "base": params.cohort.base,
            "projection": {**params.projection.project_options(), "init": params.projection.init},
            "bootstrap": args.bootstrap}
    print(json.dumps({"meta": meta}), flush=True)
    rows = []
    for rung in args.rungs:
        for seed in args.seeds:
            t0 = time.perf_counter()
            row = run_one(params, rung, seed, faces=args.faces, cache=args.align_cache, bootstrap=args.bootstrap,
                          progress=lambda m: print(m, file=sys.stderr, flush=True))
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with args.out.open("a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
