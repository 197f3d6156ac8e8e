"""What a generator trained on faces is worth: KID with and without ADA, and what its latents carry.

Subcommands, each writing under --work (default /tmp/facesurv-generator-value; UTKFace photos are
aligned or copied there, never into the repository: non-commercial research licence):

    split     split --faces (UTKFace: photos + labels.csv) into a training pool and an evaluation pool,
              stratified by decade of age and sex, by a seeded shuffle. The generator never sees an
              evaluation photo; every figure of `evaluate` is on evaluation photos only. Writes
              split.json and eval-faces/ (copies + labels.csv: a faces folder for the cohort, which
              reads plain files only; it stays in --work, outside the repository).
    align     align both pools with the platform's aligner (params.yaml's align settings), cached.
    train     train a generator on the training pool's aligned photos with the project's training loop
              (embedding.stylegan2.training, the loop `facesurv generator train` runs) for --kimg
              thousand images, ADA mode --ada (ada | off | fixed), resuming from its snapshots; logs
              stats and KID (vs the training photos) every --tick-kimg to runs/<name>/log.jsonl.
    evaluate  for each generator (random-init and the trained ones): KID against the evaluation
              photos, and the held-out age R^2 (ridge, 5-fold, bootstrap CI) of its projected latents
              beside the same photos' pixels at its resolution and a shuffled-age control.

    .venv/bin/python benchmarks/generator_value.py split --faces ../shared/utkface
    .venv/bin/python benchmarks/generator_value.py align --workers 2
    .venv/bin/python benchmarks/generator_value.py train --name ada --ada ada --kimg 200 --threads 1
    .venv/bin/python benchmarks/generator_value.py evaluate --runs ada off --out docs/results/generator_value.json
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import cpu_name  # noqa: E402

WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "facesurv-generator-value"


def _params() -> Any:
    from ground.config import load_params

    return load_params(REPO / "params.yaml")


def _labels(faces: Path) -> list[dict[str, str]]:
    with open(faces / "labels.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def cmd_split(args: argparse.Namespace) -> int:
    rows = _labels(args.faces)
    rng = np.random.default_rng(args.seed)
    cells: dict[tuple[int, str], list[dict[str, str]]] = {}
    for row in rows:
        cells.setdefault((int(row["age"]) // 10, row["sex"]), []).append(row)
    train, evaluation = [], []
    for key in sorted(cells):
        members = sorted(cells[key], key=lambda r: r["file"])
        order = rng.permutation(len(members))
        n_eval = int(round(args.eval_fraction * len(members)))
        evaluation += [members[i] for i in order[:n_eval]]
        train += [members[i] for i in order[n_eval:]]
    work = args.work
    eval_dir = work / "eval-faces"
    eval_dir.mkdir(parents=True, exist_ok=True)
    for row in evaluation:
        copy = eval_dir / row["file"]
        if copy.is_symlink():
            copy.unlink()
        if not copy.exists():  # the cohort reads plain files only (links are refused), so a copy in --work
            shutil.copyfile(args.faces / row["file"], copy)
    with open(eval_dir / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(sorted(evaluation, key=lambda r: r["file"]))
    split = {"faces": str(args.faces.resolve()), "seed": args.seed, "eval_fraction": args.eval_fraction,
             "train": sorted(r["file"] for r in train), "eval": sorted(r["file"] for r in evaluation)}
    (work / "split.json").write_text(json.dumps(split, indent=1))
    print(f"split {len(rows)} photos: {len(train)} for training, {len(evaluation)} for evaluation -> {work}")
    return 0


def _split(work: Path) -> dict[str, Any]:
    path = work / "split.json"
    if not path.is_file():
        raise SystemExit(f"{path} missing: run `split` first")
    return json.loads(path.read_text())


def _aligned(work: Path, pool: str, *, workers: int = 1, part: int = 0) -> dict[str, Path]:
    from retention import aligned_photos

    split = _split(work)
    faces = Path(split["faces"])
    files = [faces / f for f in split[pool]]
    files = files[part::workers]
    return aligned_photos(_params(), files, work / "align-cache")


def cmd_align(args: argparse.Namespace) -> int:
    import subprocess

    if args.part is not None:
        for pool in ("train", "eval"):
            _aligned(args.work, pool, workers=args.workers, part=args.part)
        return 0
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, __file__, "align", "--work", str(args.work), "--workers",
                               str(args.workers), "--part", str(k)], env={**os.environ, "OMP_NUM_THREADS": "1"})
             for k in range(args.workers)]
    if any(p.wait() for p in procs):
        return 1
    counts = {pool: len(_aligned(args.work, pool)) for pool in ("train", "eval")}
    split = _split(args.work)
    print(f"aligned: train {counts['train']}/{len(split['train'])}, eval {counts['eval']}/{len(split['eval'])} "
          f"in {time.time() - t0:.0f} s")
    return 0


def _real_features(net: Any, images: Any) -> np.ndarray:
    from embedding.kid import perceptual_features

    return perceptual_features(net, images)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from embedding.kid import feature_source
    from embedding.stylegan2.generator import GeneratorConfig
    from embedding.stylegan2.monitor import generator_kid
    from embedding.stylegan2.photos import load_images
    from embedding.stylegan2.snapshots import latest_snapshot
    from embedding.stylegan2.training import Trainer, TrainingConfig, export_generator, train
    from facesurv.components import components

    torch.set_num_threads(args.threads)
    params = _params()
    gcfg = GeneratorConfig.from_params(params.generator)
    run_dir = args.work / "runs" / args.name
    snap_dir = run_dir / "snapshots"
    run_dir.mkdir(parents=True, exist_ok=True)
    aligned = _aligned(args.work, "train")
    keys = sorted(aligned)
    if args.limit:  # a small training set: a seeded subset of the training pool
        keys = sorted(np.random.default_rng(args.seed).permutation(keys)[:args.limit].tolist())
    images, failures = load_images([aligned[k] for k in keys], resolution=gcfg.resolution)
    if failures:
        raise SystemExit(f"{len(failures)} aligned photos unreadable, e.g. {failures[0]}")
    comp = components(None, params)
    net, pinfo = comp.perceptual(device="cpu")
    if net is None:
        from embedding.perceptual import load_perceptual

        net, pinfo = load_perceptual("stlpips", None, resize=params.perceptual.resize)
    real = _real_features(net, images)
    if latest_snapshot(snap_dir) is not None:
        trainer = Trainer.resume(snap_dir)
        print(f"resumed {args.name} at {trainer.kimg:g} kimg")
    else:
        config = TrainingConfig(batch_size=args.batch, total_kimg=args.kimg, r1_gamma=args.gamma,
                                pl_weight=args.pl_weight, ada_mode=args.ada,
                                ada_p=args.p if args.ada == "fixed" else 0.0, ada_target=0.6,
                                ada_speed_kimg=args.ada_kimg, ema_kimg=args.ema_kimg,
                                snapshot_kimg=args.tick_kimg, seed=args.seed)
        trainer = Trainer(config, gcfg)
    log = run_dir / "log.jsonl"
    meta = {"event": "start", "name": args.name, "photos": int(images.shape[0]), "resolution": gcfg.resolution,
            "training_config": trainer.config.to_dict(), "generator_config": gcfg.to_dict(),
            "kid_features": feature_source(pinfo), "threads": args.threads, "cpu": cpu_name(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "start_kimg": trainer.kimg}
    with open(log, "a") as fh:
        fh.write(json.dumps(meta) + "\n")
    if trainer.kimg == 0:
        k = generator_kid(trainer.G_ema, net, real, n_fake=args.kid_fakes, seed=12345)
        with open(log, "a") as fh:
            fh.write(json.dumps({"event": "kid", "kimg": 0.0, "kid": k.value, "kid_se": k.std_error,
                                 "seconds": 0.0}) + "\n")
    t0, acc, next_tick = time.time(), [], (math.floor(trainer.kimg / args.tick_kimg) + 1) * args.tick_kimg
    spent0 = _spent(log)

    def progress(stats: dict[str, float]) -> None:
        nonlocal next_tick, acc
        acc.append(stats)
        if stats["kimg"] + 1e-9 >= next_tick or stats["kimg"] + 1e-9 >= args.kimg:
            next_tick += args.tick_kimg
            mean = {k: float(np.nanmean([a[k] for a in acc])) if any(not math.isnan(a[k]) for a in acc) else None
                    for k in ("loss_g", "loss_d", "r1", "pl", "r_t")}
            seconds = spent0 + time.time() - t0
            k = generator_kid(trainer.G_ema, net, real, n_fake=args.kid_fakes, seed=12345)
            row = {"event": "tick", "kimg": stats["kimg"], "iteration": stats["iteration"], "p": stats["p"],
                   **mean, "kid": k.value, "kid_se": k.std_error, "seconds": seconds}
            with open(log, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
            acc = []

    train(trainer, images, kimg=args.kimg, snapshot_dir=snap_dir, progress=progress)
    sha = export_generator(trainer, run_dir / "generator")
    with open(log, "a") as fh:
        fh.write(json.dumps({"event": "end", "kimg": trainer.kimg, "sha256": sha,
                             "seconds": spent0 + time.time() - t0}) + "\n")
    print(f"{args.name}: {trainer.kimg:g} kimg, generator sha256 {sha[:12]} -> {run_dir / 'generator'}")
    return 0


def _spent(log: Path) -> float:
    """Training seconds already spent by earlier (interrupted) invocations of this run."""
    spent = 0.0
    for line in log.read_text().splitlines():
        row = json.loads(line)
        if row.get("event") == "tick":
            spent = max(spent, row["seconds"])
    return spent


def _oof_r2(X: np.ndarray, y: np.ndarray, *, seed: int, bootstrap: int) -> dict[str, Any]:
    """Held-out R^2 of a ridge fit (alpha by inner CV) from 5 outer folds, with a bootstrap CI over photos."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pred = np.empty_like(y)
    for train, test in KFold(5, shuffle=True, random_state=seed).split(X):
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 13)))
        pred[test] = model.fit(X[train], y[train]).predict(X[test])

    def r2(idx: np.ndarray) -> float:
        yy, pp = y[idx], pred[idx]
        return float(1 - ((yy - pp) ** 2).sum() / ((yy - yy.mean()) ** 2).sum())

    rng = np.random.default_rng(seed)
    boots = [r2(rng.integers(0, len(y), len(y))) for _ in range(bootstrap)]
    return {"value": r2(np.arange(len(y))), "ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]}


def _generators(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    gens: list[tuple[str, Path | None]] = [("random-init", None)]
    for name in args.runs:
        path = args.work / "runs" / name / "generator"
        if not (path / "generator.safetensors").is_file():
            raise SystemExit(f"{path} missing: train run {name!r} first")
        gens.append((name, path))
    return gens


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from embedding.kid import feature_source, perceptual_features
    from embedding.perceptual import load_perceptual
    from embedding.project_batch import PhotoInput, Projection, project_photos
    from embedding.stylegan2.monitor import generator_kid
    from embedding.stylegan2.photos import load_images
    from facesurv.components import Components
    from ground.config import with_overrides

    torch.set_num_threads(args.threads)
    params = _params()
    labels = {r["file"]: r for r in _labels(Path(_split(args.work)["faces"]))}
    aligned = _aligned(args.work, "eval")
    # a fixed, seeded subset of the evaluation photos for projection (all of them for KID)
    ids = sorted(aligned)
    rng = np.random.default_rng(args.seed)
    chosen = sorted(rng.permutation(len(ids))[:args.photos].tolist())
    proj_ids = [ids[i] for i in chosen]
    ages = np.array([float(labels[f"{pid}.jpg"]["age"]) for pid in proj_ids])
    resolution = params.generator.resolution
    all_images, failures = load_images([aligned[k] for k in ids], resolution=resolution)
    if failures:
        raise SystemExit(f"unreadable aligned photos: {failures[:2]}")
    net, pinfo = load_perceptual(params.perceptual.network, None, resize=params.perceptual.resize)
    real = perceptual_features(net, all_images)
    pixels = all_images[chosen].reshape(len(chosen), -1).numpy()
    shuffled = np.random.default_rng(args.seed + 1).permutation(ages)
    result: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "machine": f"{cpu_name()}, {args.threads} torch thread(s)",
        "eval_photos": len(ids), "projected_photos": len(proj_ids), "resolution": resolution,
        "kid_features": feature_source(pinfo), "projection": params.projection.project_options(),
        "pixels": {"age_r2": _oof_r2(pixels, ages, seed=args.seed, bootstrap=args.bootstrap),
                   "shuffled_age_r2": _oof_r2(pixels, shuffled, seed=args.seed, bootstrap=args.bootstrap)},
        "generators": {}}
    print(json.dumps({"pixels": result["pixels"]}), flush=True)
    for name, path in _generators(args):
        p = with_overrides(params, generator={"checkpoint": None if path is None else str(path)})
        parts = Components(None, p)
        G, info = parts.generator()
        t0 = time.time()
        k = generator_kid(G, net, real, n_fake=args.kid_fakes, seed=12345, subsets=100,
                          subset_size=min(500, len(ids)))
        kid_s = time.time() - t0
        if args.kid_only:
            row = {"sha256": info.sha256, "description": info.description,
                   "kid": {"value": k.value, "se": k.std_error, "n_fake": k.n_fake, "subset_size": k.subset_size}}
            log = args.work / "runs" / name / "log.jsonl"
            if log.is_file():
                rows = [json.loads(line) for line in log.read_text().splitlines()]
                end = [r for r in rows if r.get("event") == "end"]
                ticks = [r for r in rows if r.get("event") == "tick"]
                start = next(r for r in rows if r.get("event") == "start")
                row["training"] = {"photos": start["photos"], "kimg": end[-1]["kimg"], "seconds": end[-1]["seconds"],
                                   "final_p": ticks[-1]["p"], "final_r_t": ticks[-1]["r_t"]}
            result["generators"][name] = row
            print(json.dumps({name: row}), flush=True)
            continue
        projection = Projection.configured(p.projection, (G, info), parts.perceptual(), stats=parts.latent_stats())
        t0 = time.time()
        import tempfile

        with tempfile.TemporaryDirectory(prefix="facesurv-genvalue-") as tmp:
            run = project_photos(projection, [PhotoInput(pid, str(aligned[pid]), root=str(aligned[pid].parent))
                                              for pid in proj_ids], shard_dir=Path(tmp), batch_size=p.projection.batch_size)
        proj_s = time.time() - t0
        if run.failures:
            raise SystemExit(f"projection failures: {run.failures[:2]}")
        order = {r.photo_id: r for r in run.results}
        latents = np.stack([np.asarray(order[pid].w).reshape(-1) for pid in proj_ids])
        mse = float(np.mean([order[pid].mse for pid in proj_ids]))
        row = {"sha256": info.sha256, "description": info.description,
               "kid": {"value": k.value, "se": k.std_error, "n_fake": k.n_fake, "subset_size": k.subset_size},
               "age_r2": _oof_r2(latents, ages, seed=args.seed, bootstrap=args.bootstrap),
               "shuffled_age_r2": _oof_r2(latents, shuffled, seed=args.seed, bootstrap=args.bootstrap),
               "reconstruction_mse": mse, "seconds": {"kid": round(kid_s, 1), "projection": round(proj_s, 1)}}
        log = args.work / "runs" / name / "log.jsonl"
        if log.is_file():
            end = [json.loads(line) for line in log.read_text().splitlines() if '"event": "end"' in line]
            if end:
                row["training"] = {"kimg": end[-1]["kimg"], "seconds": end[-1]["seconds"]}
        result["generators"][name] = row
        print(json.dumps({name: row}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    if not args.kid_only:
        print(table(result))
    return 0


def _ci(stat: dict[str, Any], digits: int = 3) -> str:
    return f"{stat['value']:.{digits}f} [{stat['ci'][0]:.{digits}f}, {stat['ci'][1]:.{digits}f}]"


def table(result: dict[str, Any]) -> str:
    lines = ["| features | KID (x1e6) ± SE | age R², held out [95% CI] | shuffled ages R² | reconstruction MSE | "
             "training |", "|---|---|---|---|---|---|"]
    px = result["pixels"]
    lines.append(f"| pixels {result['resolution']}x{result['resolution']} | | {_ci(px['age_r2'])} | "
                 f"{_ci(px['shuffled_age_r2'])} | | |")
    for name, row in result["generators"].items():
        t = row.get("training")
        trained = f"{t['kimg']:g} kimg, {t['seconds'] / 60:.0f} min" if t else "none (seeded stand-in)"
        lines.append(f"| latents of {name} | {row['kid']['value'] / 1e6:.1f} ± {row['kid']['se'] / 1e6:.1f} | "
                     f"{_ci(row['age_r2'])} | {_ci(row['shuffled_age_r2'])} | {row['reconstruction_mse']:.4f} | "
                     f"{trained} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=WORK)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("--faces", type=Path, required=True)
    s.add_argument("--eval-fraction", type=float, default=0.4)
    s.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("align")
    a.add_argument("--workers", type=int, default=2)
    a.add_argument("--part", type=int, default=None)
    t = sub.add_parser("train")
    t.add_argument("--name", required=True)
    t.add_argument("--ada", choices=("ada", "off", "fixed"), default="ada")
    t.add_argument("--p", type=float, default=0.2)
    t.add_argument("--kimg", type=float, default=200.0)
    t.add_argument("--tick-kimg", type=float, default=10.0)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--gamma", type=float, default=0.01)
    t.add_argument("--pl-weight", type=float, default=0.0)
    t.add_argument("--ada-kimg", type=float, default=100.0)
    t.add_argument("--ema-kimg", type=float, default=2.0)
    t.add_argument("--kid-fakes", type=int, default=1000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=int, default=0, help="train on this many photos of the pool (0: all)")
    t.add_argument("--threads", type=int, default=1)
    e = sub.add_parser("evaluate")
    e.add_argument("--runs", nargs="*", default=["ada", "off"])
    e.add_argument("--photos", type=int, default=400, help="evaluation photos projected for the age R^2")
    e.add_argument("--kid-fakes", type=int, default=1000)
    e.add_argument("--bootstrap", type=int, default=1000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--kid-only", action="store_true", help="KID only (no projection, no R^2)")
    e.add_argument("--out", type=Path, default=None)
    for p in (s, a, t, e):
        p.add_argument("--work", type=Path, default=argparse.SUPPRESS)
    args = ap.parse_args()
    return {"split": cmd_split, "align": cmd_align, "train": cmd_train, "evaluate": cmd_evaluate}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
