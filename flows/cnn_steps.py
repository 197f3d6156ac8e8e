"""The paper's end-to-end CNN baselines: the aligned photos in, a Cox log-risk out.

    summary = train_cnn_baselines(ws, params, log=print)

Each CNN in cnn.models (training.cnn: ResNet-18 from scratch, VGG-16 from the real ImageNet
convolutions) is trained with the Cox partial likelihood on the photos the projection saw,
on the training part of the same frozen split as every other model, with early stopping on
a validation slice of that part. It is evaluated on the same test patients with the same
metrics, tracked as a run of the training experiment and registered as
`<registry.model_name>-cnn-<arch>` (its weights and config: tensors and JSON). The summary
goes to artifacts/training/cnn_metrics.json, which the demo's Table 1 reads.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facesurv.components import components
from flows.steps import read_valid_clinical
from ground.atomic import atomic_path
from ground.config import Params
from ground.errors import DataError
from ground.workspace import Workspace

CNN_METRICS = "cnn_metrics.json"


def patient_photos(ws: Workspace, patient_ids: list[str]) -> dict[str, Path]:
    """patient_id -> the photo its latent was projected from (the aligned crop, else the
    declared pre-aligned photo); patients without one are left out."""
    from flows.embedding_steps import projection_inputs
    from flows.training_steps import valid_clinical_files

    clinical = read_valid_clinical(valid_clinical_files(ws))
    photo_of = dict(zip(clinical["patient_id"].astype(str), clinical["photo_id"].astype(str), strict=True))
    path_of = {p.photo_id: Path(p.path) for p in projection_inputs(ws)}
    return {pid: path_of[photo_of[pid]] for pid in patient_ids if photo_of.get(pid) in path_of}


def load_images(paths: list[Path], *, size: int) -> np.ndarray:
    """Photos -> (N, size, size, 3) uint8 RGB (Lanczos resize; the CNN sees what projection saw)."""
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as im:
            out[i] = np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.LANCZOS))
    return out


def cnn_config(params: Params, name: str) -> Any:
    from training.cnn import CNNConfig

    c = params.cnn
    return CNNConfig(arch=name.removeprefix("cnn_"), image_size=c.image_size, epochs=c.epochs,
                     batch_size=c.batch_size, lr=c.lr, weight_decay=c.weight_decay, val_fraction=c.val_fraction,
                     patience=c.patience, seed=params.training.seed, trainable_blocks=c.vgg16_trainable_blocks,
                     augment=c.augment)


def imagenet_start() -> Any:
    """The installed ImageNet VGG-16 convolutions (embedding.perceptual's sha256-checked file)."""
    from embedding.perceptual import imagenet_vgg16_convs
    from ground.errors import NotAvailableError

    try:
        return imagenet_vgg16_convs()
    except FileNotFoundError as exc:
        raise NotAvailableError(str(exc)) from None


def train_cnn_baselines(ws: Workspace, params: Params, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, evaluate, track and register every CNN of cnn.models on the frozen split; see the module doc.

    Raises DataError (one line) when the training set or the frozen split is missing, or when too
    few patients have a photo.
    """
    import pandas as pd

    from training.splits import read_split, split_frame

    if not params.cnn.models:
        return {"models": {}}
    frame_path = ws.artifacts_dir / "training" / "training_set.parquet"
    split_path = ws.artifacts_dir / "splits" / "test_split.json"
    if not (frame_path.is_file() and split_path.is_file()):
        raise DataError(f"{ws.root}: no training set or frozen split yet; run the train-and-promote flow first")
    frame = pd.read_parquet(frame_path, columns=["patient_id", "time_days", "event", "cancer_type"])
    frame["patient_id"] = frame["patient_id"].astype(str)
    photos = patient_photos(ws, frame["patient_id"].tolist())
    frame = frame[frame["patient_id"].isin(photos)].reset_index(drop=True)
    split = read_split(split_path)
    t = params.training
    train_idx, test_idx, _ = split_frame(frame, test_fraction=t.test_fraction, seed=t.seed, path=None, split=split,
                                         data_versions={})
    tr, te = frame.iloc[train_idx].reset_index(drop=True), frame.iloc[test_idx].reset_index(drop=True)
    if int(tr["event"].sum()) < 10 or len(te) < 10:
        raise DataError(f"the CNN baselines need photos of at least 10 training events and 10 test patients, "
                        f"got {int(tr['event'].sum())} and {len(te)}; embed more photos")
    size = params.cnn.image_size
    t0 = time.perf_counter()
    x_tr = load_images([photos[p] for p in tr["patient_id"]], size=size)
    x_te = load_images([photos[p] for p in te["patient_id"]], size=size)
    log(f"  CNN baselines: {len(tr)} training and {len(te)} test photos at {size} px "
        f"({time.perf_counter() - t0:.1f} s to read)")
    time_tr, event_tr = tr["time_days"].to_numpy(float), tr["event"].to_numpy(bool)
    out: dict[str, Any] = {"split_id": split.split_id, "image_size": size, "models": {}}
    for name in params.cnn.models:
        fitted, ev = fit_and_evaluate(name, params, x_tr, time_tr, event_tr, x_te, te, log=log)
        entry = {**{k: (None if v != v else float(v)) for k, v in ev.flat().items()},
                 "n_train": len(tr), "n_test": ev.n_test, "test_events": ev.n_events,
                 "best_epoch": fitted.best_epoch, "seconds": round(fitted.seconds, 1)}
        entry.update(_record(ws, params, name, fitted, ev, split_id=split.split_id))
        out["models"][name] = entry
        log(f"  {name}: test C-index {ev.point['c_index']:.3f} [{ev.lower['c_index']:.3f}, {ev.upper['c_index']:.3f}], "
            f"best epoch {fitted.best_epoch}, {fitted.seconds:.0f} s; registered v{entry.get('version')}")
    with atomic_path(ws.artifacts_dir / "training" / CNN_METRICS) as tmp:
        tmp.write_text(json.dumps(out, indent=1, sort_keys=True))
    return out


def fit_and_evaluate(name: str, params: Params, x_tr: np.ndarray, time_tr: np.ndarray, event_tr: np.ndarray,
                     x_te: np.ndarray, te: Any, *, log: Callable[[str], None]) -> tuple[Any, Any]:
    """One CNN fitted on the training photos and evaluated on the test patients (training.metrics)."""
    from training.baseline import breslow, survival_at
    from training.cnn import fit_cox_cnn, predict_log_risk
    from training.metrics import evaluate

    start = imagenet_start() if name == "cnn_vgg16" else None
    fitted = fit_cox_cnn(x_tr, time_tr, event_tr, config=cnn_config(params, name), init_convs=start,
                         progress=lambda m: log(f"  {name}: {m}"))
    times, cumhaz = breslow(time_tr, event_tr, predict_log_risk(fitted, x_tr))
    risk = predict_log_risk(fitted, x_te)
    ev = evaluate(train_time=time_tr, train_event=event_tr, time=te["time_days"].to_numpy(float),
                  event=te["event"].to_numpy(bool), risk=risk,
                  survival=lambda days: survival_at(times, cumhaz, risk, days),
                  horizons=params.training.horizons_days, groups=te["cancer_type"].to_numpy(),
                  bootstrap=params.evaluation.bootstrap, seed=params.evaluation.seed)
    return fitted, ev


def _record(ws: Workspace, params: Params, name: str, fitted: Any, ev: Any, *, split_id: str) -> dict[str, Any]:
    """One MLflow run of the training experiment per CNN, its files registered as a model version."""
    from mlflow import MlflowClient

    from training.cnn import save_cnn
    from training.record import registered_name
    from training.registry import register_version
    from training.runs import open_run
    from training.tracking import clean_metrics, ensure_experiment, quiet_environment

    quiet_environment()
    uri = components(ws, params).tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp_id = ensure_experiment(client, params.registry.experiment, ws.mlflow_dir / "artifacts")
    cfg = {k: v for k, v in vars(fitted.config).items()} if hasattr(fitted.config, "__dict__") else {}
    with open_run(client, experiment_id=exp_id, name=name) as run, \
            tempfile.TemporaryDirectory(prefix="facesurv-cnn-") as tmp:
        start = ("ImageNet VGG-16 convolutions (the installed LPIPS-VGG16 file)" if name == "cnn_vgg16"
                 else "random init (from scratch)")
        run.set_tags({"facesurv.kind": "cnn-baseline", "facesurv.model": name, "split_id": split_id,
                      "features": "photo", "params_hash": params.params_hash, "start": start})
        run.log_params({f"cnn.{k}": str(v) for k, v in cfg.items()} | {"best_epoch": fitted.best_epoch,
                                                                        "n_train": fitted.n_train})
        run.log_metrics(clean_metrics(ev.flat()))
        run.log_json({"history": fitted.history, "subgroups": ev.subgroups.to_dict(orient="records")},
                     "evaluation.json")
        folder = Path(tmp) / "cnn"
        save_cnn(fitted, folder)
        for f in sorted(folder.iterdir()):
            run.log_artifact(f, "cnn")
        source = f"{client.get_run(run.run_id).info.artifact_uri.rstrip('/')}/cnn"
        tags = {"facesurv.kind": "cnn-baseline", "facesurv.model": name, "split_id": split_id, "run_id": run.run_id,
                "needs_latent": "False", "input": "photo",
                **{f"test.{k}": v for k, v in ev.point.items() if v == v}}
        version = register_version(client, name=registered_name(params.registry.model_name, name), model_uri=source,
                                   run_id=run.run_id, tags=tags,
                                   description=f"facesurv {name}: end-to-end CNN on the photos (a baseline, never served)")
    return {"run_id": run.run_id, "version": version, "registered_name": registered_name(params.registry.model_name, name)}
