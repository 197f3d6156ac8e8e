"""Training a generator on a workspace's photos: the one engine `facesurv generator train`, the
generator-training flow and the demo call.

    result = train_generator(ws, params)            # trains, resumes, tracks, exports, registers

Inputs are the aligned photos of the data repository's current DVC revision (artifacts/aligned,
the nightly flow's alignment of data/photos), or a folder that params.generator_training.photos
names. A run lives in <workspace>/<runs_dir>/<run name>: snapshots (resumed from after any
interruption, kill -9 included, without repeating or losing an iteration), the MLflow run id and
the exported generator. The run name hashes what decides the result (photos, settings, start),
so calling again with the same inputs resumes, and other inputs start a new run.

MLflow (experiment `facesurv-generator`) gets, every tick_kimg: losses, R1, ADA's p and r_t, KID
against the training photos with its standard error, and a grid of samples from fixed latents.
The exported G_ema is registered as a new version of generator_training.registered_name, aliased
challenger, with its sha256, the photos' revision, the settings and the parent checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facesurv.components import components
from flows.steps import Layout
from ground.config import Params
from ground.errors import ConfigError, DataError
from ground.workspace import Workspace

EXPERIMENT = "facesurv-generator"
KID_SEED = 12345       # fixed latents: KID changes across ticks only because the generator did
GRID_SEED = 2024
MAX_KID_REALS = 5000   # real photos whose features KID uses (a random subset beyond that)


@dataclass(frozen=True)
class TrainingPhotos:
    paths: list[Path]
    root: Path
    lineage: dict[str, Any]
    refused: list[str]   # "name: why" of files that are not plain files inside root (links, ...)


def training_photos(ws: Workspace, params: Params) -> TrainingPhotos:
    """The photos to train on and where they come from (for the run's tags and the registry)."""
    from embedding.stylegan2.photos import photo_files
    from features.versioning import data_revision

    folder = params.generator_training.photos
    if folder is not None:
        root = ws.setting_path(folder)
        assert root is not None
        try:
            paths = photo_files(root)
        except FileNotFoundError as exc:
            raise ConfigError(f"generator_training.photos: {exc}") from None
        lineage: dict[str, Any] = {"photos": f"folder {root}", "photos_dvc_rev": "none (a folder outside the data "
                                   "repository)"}
    else:
        from embedding.align import read_manifest

        root = Layout(ws).aligned
        manifest = root / "manifest.csv"
        rows = read_manifest(manifest) if manifest.is_file() else {}
        paths = sorted(root / r["output_file"] for r in rows.values() if r["status"] == "aligned")
        lineage = {"photos": "workspace aligned photos (artifacts/aligned)",
                   "photos_dvc_rev": data_revision(ws.data_dir) or "unversioned"}
    if not paths:
        where = root if folder is not None else "artifacts/aligned (run the nightly flow or `facesurv align` first)"
        raise DataError(f"no aligned photos to train a generator on in {where}")
    from embedding.fileio import sha256_regular_file

    digest, kept, refused = hashlib.sha256(), [], []
    for p in paths:
        try:  # plain files inside the folder only: a link is never followed, not even to hash it
            sha = sha256_regular_file(p, root=root)
        except OSError as exc:
            refused.append(f"{p.name}: {exc}")
            continue
        kept.append(p)
        digest.update(p.name.encode() + b"\0" + bytes.fromhex(sha))
    if not kept:
        raise DataError(f"none of the {len(paths)} photos in {root} is a plain readable file; first: {refused[0]}")
    lineage.update({"photos_count": len(kept), "photos_sha256": digest.hexdigest(), "photos_refused": len(refused)})
    return TrainingPhotos(kept, root, lineage, refused)


def training_config(params: Params, device: str) -> Any:
    from embedding.stylegan2.training_config import TrainingConfig

    t = params.generator_training
    return TrainingConfig(batch_size=t.batch_size, total_kimg=t.kimg, g_lr=t.g_lr, d_lr=t.d_lr, r1_gamma=t.r1_gamma,
                          pl_weight=t.pl_weight, style_mixing_prob=t.style_mixing_prob, ema_kimg=t.ema_kimg,
                          ada_mode=t.ada_mode, ada_target=t.ada_target, ada_p=t.ada_p,
                          ada_speed_kimg=t.ada_speed_kimg, augment_ops=t.augment_ops, snapshot_kimg=t.tick_kimg,
                          slices=t.slices, seed=t.seed, device=device, mixed_precision=t.mixed_precision)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"generator_training.device is {name!r} but this machine has no CUDA; use auto or cpu")
    return name


def run_name(photos: TrainingPhotos, config: Any, start: dict[str, Any]) -> str:
    """<start>-<hash of photos, settings and parent>: the same inputs resume the same run."""
    settings = {k: v for k, v in config.to_dict().items() if k not in ("total_kimg", "snapshot_kimg", "device",
                                                                      "mixed_precision")}
    blob = json.dumps({"photos": photos.lineage["photos_sha256"], "settings": settings, "start": start},
                      sort_keys=True, default=str)
    return f"{start['kind']}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _start(ws: Workspace, params: Params) -> tuple[Any, Any, dict[str, Any]]:
    """(what the trainer starts from: a GeneratorConfig or a Generator, the discriminator to continue
    or None for a new one, the parent's lineage)."""
    from embedding.stylegan2 import CheckpointError, GeneratorConfig, load_discriminator
    from training.generator_registry import is_registry_uri

    if params.generator_training.start == "scratch":
        return (GeneratorConfig.from_params(params.generator), None,
                {"kind": "scratch", "parent": "none (from scratch)", "discriminator": "new"})
    checkpoint = params.generator.checkpoint
    if checkpoint is None:
        raise ConfigError("generator_training.start is finetune but generator.checkpoint is null: name the checkpoint "
                          "to fine-tune (an imported FFHQ generator or a registry version), or use start: scratch")
    G, info = components(ws, params).generator(device="cpu")
    D = None
    if not is_registry_uri(checkpoint):
        # an NVIDIA .pkl (or a rosinality training snapshot) holds the discriminator it was trained
        # with; continuing it is the paper's fine-tuning. Project-format folders hold G only.
        try:
            D = load_discriminator(ws.setting_path(checkpoint))
        except CheckpointError as exc:
            raise DataError(str(exc)) from None
    parent = info.version or f"{info.source} (sha256 {info.sha256})"
    return G, D, {"kind": "finetune", "parent": parent, "parent_sha256": info.sha256,
                  "discriminator": "imported from the checkpoint" if D is not None else "new"}


def train_generator(ws: Workspace, params: Params, *, kimg: float | None = None, register: bool = True,
                    log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Train (or resume) the workspace's generator run, track it, export G_ema and register it.

    Returns {run_name, run_dir, mlflow_run_id, kimg, iterations, seconds, kid, kid_se, sha256,
    version (None when register is False), photos lineage, parent}."""
    import numpy as np
    from mlflow import MlflowClient

    from embedding.kid import feature_source
    from embedding.perceptual import load_perceptual
    from embedding.stylegan2.monitor import fixed_latents, generate, generator_kid, image_grid
    from embedding.stylegan2.photos import load_images
    from embedding.stylegan2.snapshots import latest_snapshot
    from embedding.stylegan2.training import Trainer, export_generator, train
    from training.generator_registry import ARTIFACT_PATH, register_generator
    from training.runs import RunLog, open_run
    from training.tracking import clean_metrics, ensure_experiment

    t = params.generator_training
    rank, world = distributed_from_env()
    if rank != 0:
        log = _quiet   # one process reports, tracks, exports and registers; the others only train
    device = _device(t.device)
    if world > 1 and device == "cuda":
        device = f"cuda:{os.environ.get('LOCAL_RANK', rank)}"
    photos = training_photos(ws, params)
    start, start_D, parent = _start(ws, params)
    config = training_config(params, device)
    name = run_name(photos, config, parent)
    run_dir = (ws.setting_path(t.runs_dir) or ws.root / "generators" / "runs") / name
    snapshots = run_dir / "snapshots"
    run_dir.mkdir(parents=True, exist_ok=True)

    resolution = start.resolution if hasattr(start, "resolution") else start.img_resolution
    log(f"generator training {name}: {len(photos.paths)} photos from {photos.lineage['photos']} "
        f"(DVC revision {photos.lineage['photos_dvc_rev']}), {resolution}x{resolution}, start: {parent['parent']}, "
        f"discriminator: {parent['discriminator']}")
    images, failures = load_images(photos.paths, resolution=resolution, root=photos.root,
                                   progress=lambda d, n: log(f"  decoded {d}/{n} photos") if n >= 500 else None)
    for why in photos.refused:
        log(f"warning: not a plain file inside the photo folder, left out: {why}")
    for path, reason in failures:
        log(f"warning: {path} left out of training: {reason}")
    if images.shape[0] == 0:
        raise DataError(f"none of the {len(photos.paths)} photos could be read; first problem: {failures[0][1]}")

    total = float(t.kimg if kimg is None else kimg)
    if not (total > 0 and math.isfinite(total)):
        raise ConfigError(f"kimg must be a finite number > 0, got {kimg!r}")
    done_file = run_dir / "result.json"
    if done_file.is_file():
        done = json.loads(done_file.read_text())
        if done["kimg"] >= total and (done["version"] is not None or not register):
            log(f"  already trained to {done['kimg']:g} kimg" + (f" and registered as version {done['version']}"
                                                                  if done["version"] else "") + "; nothing to do")
            return dict(done)
    if latest_snapshot(snapshots) is not None:
        trainer = Trainer.resume(snapshots, device=device)
        log(f"  resuming from its snapshot at {trainer.kimg:g} kimg ({trainer.iteration} iterations)")
    else:
        trainer = Trainer(config, start, discriminator=start_D)
    if rank != 0:
        train(trainer, images, kimg=total, snapshot_dir=snapshots)
        return {"run_name": name, "run_dir": str(run_dir), "rank": rank, "kimg": trainer.kimg}

    comp = components(ws, params)
    net, pinfo = comp.perceptual(device=device)
    if net is None:  # the pixel loss needs no network, KID does
        pp = params.perceptual
        net, pinfo = load_perceptual(pp.network, ws.setting_path(pp.vgg16_path), resize=pp.resize)
        net = net.to(device)
    from embedding.kid import perceptual_features

    pick = np.random.default_rng(KID_SEED).permutation(images.shape[0])[:MAX_KID_REALS]
    real_features = perceptual_features(net, images[np.sort(pick)])
    kid_note = feature_source(pinfo)

    client = MlflowClient(comp.tracking_uri)
    exp_id = ensure_experiment(client, EXPERIMENT, ws.mlflow_dir / "artifacts")
    id_file = run_dir / "mlflow_run.json"
    known = json.loads(id_file.read_text())["run_id"] if id_file.is_file() else None
    grid_z = fixed_latents(t.grid_samples, trainer.G.z_dim, seed=GRID_SEED)

    def kid_now() -> Any:
        return generator_kid(trainer.G_ema, net, real_features, n_fake=t.kid_fakes, seed=KID_SEED,
                             subsets=t.kid_subsets, subset_size=min(1000, t.kid_fakes, len(real_features)))

    def grid(run: RunLog) -> None:
        from PIL import Image

        pic = image_grid(generate(trainer.G_ema, grid_z), columns=8)
        with tempfile.TemporaryDirectory(prefix="facesurv-grid-") as tmp:
            path = Path(tmp) / f"images-{trainer.nimg:09d}.png"  # images shown so far
            Image.fromarray(pic).save(path)
            run.log_artifact(path, "samples")

    def step_metrics(run: RunLog, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        run.client.log_batch(run.run_id, metrics=[Metric(k, v, now, trainer.nimg, run_id=run.run_id)
                                                  for k, v in clean_metrics(metrics).items()])

    t0 = time.time()
    with open_run(client, experiment_id=exp_id, name=f"generator-{name}", continue_run=known) as run:
        if known is None:
            id_file.write_text(json.dumps({"run_id": run.run_id}))
            run.set_tags({"facesurv.kind": "generator-training", "photos_dvc_rev": photos.lineage["photos_dvc_rev"],
                          "parent": parent["parent"], "kid_features": kid_note})
            run.log_params({**{f"train.{k}": v for k, v in trainer.config.to_dict().items() if k != "total_kimg"},
                            **{f"generator.{k}": v for k, v in trainer.G.config.to_dict().items()},
                            **{f"data.{k}": v for k, v in photos.lineage.items()}, "start": parent["kind"]})
            first = kid_now()
            step_metrics(run, {"kid": first.value, "kid_se": first.std_error})
            grid(run)
        window: list[dict[str, float]] = []
        last = {"kid": math.nan, "kid_se": math.nan}
        started_kimg, tick = trainer.kimg, time.time()
        every = max(1, round(t.tick_kimg * 1000))
        report_every = 10.0   # seconds between progress lines (no stage is silent for long)

        def progress(stats: dict[str, float]) -> None:
            nonlocal tick
            window.append(stats)
            done_tick = trainer.nimg // every > (trainer.nimg - trainer.config.batch_size) // every
            if done_tick or trainer.nimg >= round(total * 1000):
                means = {k: float(np.nanmean(v)) for k in ("loss_g", "loss_d", "r1", "r_t")
                         if (v := [w[k] for w in window if not math.isnan(w[k])])}
                k = kid_now()
                last.update(kid=k.value, kid_se=k.std_error)
                step_metrics(run, {**means, "p": stats["p"], "kid": k.value, "kid_se": k.std_error,
                                   "kimg": trainer.kimg, "seconds": time.time() - t0})
                grid(run)
                window.clear()
            if time.time() - tick >= report_every or done_tick:
                tick = time.time()
                rate = (trainer.kimg - started_kimg) / max(time.time() - t0, 1e-9)
                eta = (total - trainer.kimg) / rate if rate > 0 else math.inf
                log(f"  {trainer.kimg:.1f}/{total:g} kimg, loss_d {stats['loss_d']:.3f}, loss_g {stats['loss_g']:.3f}, "
                    f"p {stats['p']:.3f}, KID {last['kid']:.4g}, ETA {eta / 60:.1f} min")

        train(trainer, images, kimg=total, snapshot_dir=snapshots, progress=progress)
        sha = export_generator(trainer, run_dir / "generator")
        (run_dir / "generator" / "training.json").write_text(json.dumps({
            "training_config": trainer.config.to_dict(), "kimg": trainer.kimg, "iterations": trainer.iteration,
            **photos.lineage, **parent, "kid": last["kid"], "kid_se": last["kid_se"], "kid_features": kid_note,
            "mlflow_run_id": run.run_id}, indent=1, default=str))
        run.client.log_artifacts(run.run_id, str(run_dir / "generator"), ARTIFACT_PATH)
        result = {"run_name": name, "run_dir": str(run_dir), "mlflow_run_id": run.run_id, "kimg": trainer.kimg,
                  "iterations": trainer.iteration, "seconds": round(time.time() - t0, 1), "kid": last["kid"],
                  "kid_se": last["kid_se"], "kid_features": kid_note, "sha256": sha, "version": None,
                  **photos.lineage, **parent}
        if register:
            result["version"] = register_generator(
                client, name=t.registered_name, run_id=run.run_id, sha256=sha,
                tags={"kimg": f"{trainer.kimg:g}", "kid": f"{last['kid']:.6g}", "kid_se": f"{last['kid_se']:.3g}",
                      "kid_features": kid_note, "parent": parent["parent"], "start": parent["kind"],
                      "training_config": trainer.config.to_dict(), **photos.lineage})
            run.set_tags({"registered_version": result["version"]})
        done_file.write_text(json.dumps(result, indent=1, default=str))
    log(f"generator {name}: {trainer.kimg:g} kimg, KID {last['kid']:.4g} ± {last['kid_se']:.2g}, sha256 {sha[:12]}"
        + (f", registered as {t.registered_name} v{result['version']} (alias challenger)" if register else ""))
    return result


def _quiet(message: str) -> None:
    return None


def distributed_from_env() -> tuple[int, int]:
    """(rank, world size). Under torchrun (WORLD_SIZE > 1) the process group is joined here, NCCL
    on a CUDA machine, gloo otherwise; (0, 1) for a plain run."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def promote(ws: Workspace, params: Params, version: str, *, alias: str = "champion") -> dict[str, Any]:
    """Point the registry alias at `version` and say what the nightly flow will have to re-embed:
    every photo, unless the workspace already embeds with that generator (latents are keyed by its
    sha256). Returns {version, alias, previous, sha256, uses_alias}."""
    from mlflow import MlflowClient

    from training.generator_registry import is_registry_uri, parse_uri, promote_generator

    name = params.generator_training.registered_name
    client = MlflowClient(components(ws, params).tracking_uri)
    previous = promote_generator(client, name=name, version=str(version), alias=alias)
    sha = dict(client.get_model_version(name, str(version)).tags).get("sha256", "")
    uri = params.generator.checkpoint
    uses = is_registry_uri(uri) and parse_uri(str(uri))[:2] == (name, alias)
    return {"version": str(version), "alias": alias, "previous": previous, "sha256": sha, "uses_alias": uses}
