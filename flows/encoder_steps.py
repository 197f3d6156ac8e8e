"""The one engine that trains the generator's encoder: `facesurv generator encoder` and the nightly
flow (before it projects, when projection.init is encoder) call it.

An encoder belongs to one generator: it is trained on that generator's own samples (pairs
(G(w), w), augmented; no photos, no labels) and stored under the folder
`facesurv.components.Components.encoder_path` names from the generator's sha256 and the encoder
settings, so a new generator, a promotion or new settings get a new encoder and an existing one
is never retrained. Its file pins the generator's sha256, which the projection checks. Each
training is an MLflow run in experiment `facesurv-generator` (settings, held-out latent error,
the file as an artifact); when the generator is a registry version, that version is tagged with
the encoder's sha256, so the registry says which encoder goes with which generator.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ground.config import Params
from ground.workspace import Workspace

EXPERIMENT = "facesurv-generator"
PROGRESS_EVERY_S = 10.0


def encoder_status(ws: Workspace, params: Params) -> dict[str, Any]:
    """Whether the encoder for the current generator and settings exists, without training it."""
    from embedding.encoder import ENCODER_FILE
    from facesurv.components import components

    comp = components(ws, params)
    path = comp.encoder_path(device=comp.device)
    return {"path": str(path), "exists": (path / ENCODER_FILE).is_file(), "space": comp.encoder_space}


def ensure_encoder(ws: Workspace, params: Params, *, force: bool = False,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The encoder for the workspace's generator: trained and stored when missing (or `force`).

    Returns {"trained": bool, "sha256", "generator_sha256", "generator_version", "space", "path",
    "seconds", "metrics" (when trained), "mlflow_run_id" (when trained)}.
    """
    from embedding.encoder import ENCODER_FILE, load_encoder, save_encoder, train_encoder
    from facesurv.components import components

    comp = components(ws, params)
    device = comp.device
    path = comp.encoder_path(device=device)
    G, ginfo = comp.generator(device=device)
    space = comp.encoder_space
    if (path / ENCODER_FILE).is_file() and not force:
        _, info = load_encoder(path)
        return {"trained": False, "sha256": info.sha256, "generator_sha256": info.generator_sha256,
                "generator_version": ginfo.version, "space": space, "path": str(path), "seconds": 0.0}

    opts = params.encoder.training_options()
    say = log or (lambda _line: None)
    say(f"training the encoder for generator {ginfo.version or ginfo.sha256[:16]} ({space} space, "
        f"{opts['steps']} steps of {opts['batch_size']} generator samples)")
    started = time.monotonic()
    last = [started]

    def progress(step: int, steps: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or step == steps:
            last[0] = now
            rate = step / max(now - started, 1e-9)
            say(f"encoder: step {step}/{steps}, ETA {(steps - step) / max(rate, 1e-9):.0f} s")

    E, metrics = train_encoder(G, stats=comp.latent_stats(device=device), space=space, device=device,
                               progress=progress, **opts)
    seconds = time.monotonic() - started
    training = {**metrics, "generator_version": ginfo.version, "generator_source": ginfo.source,
                "seconds": round(seconds, 1)}
    sha = save_encoder(E.cpu(), path, generator_sha256=ginfo.sha256, training=training)
    say(f"encoder {sha[:12]} written to {path} in {seconds:.0f} s: held-out latent error "
        f"{metrics.get('initial_holdout_latent_error', float('nan')):.3f} -> "
        f"{metrics.get('holdout_latent_error', float('nan')):.3f}")
    run_id = _track(ws, params, comp, path / ENCODER_FILE, sha=sha, ginfo=ginfo, space=space, metrics=metrics,
                    seconds=seconds)
    return {"trained": True, "sha256": sha, "generator_sha256": ginfo.sha256, "generator_version": ginfo.version,
            "space": space, "path": str(path), "seconds": seconds, "metrics": metrics, "mlflow_run_id": run_id}


def _track(ws: Workspace, params: Params, comp: Any, file: Any, *, sha: str, ginfo: Any, space: str,
           metrics: dict[str, Any], seconds: float) -> str:
    from mlflow import MlflowClient

    from training.runs import open_run
    from training.tracking import clean_metrics, ensure_experiment

    client = MlflowClient(comp.tracking_uri)
    exp_id = ensure_experiment(client, EXPERIMENT, ws.mlflow_dir / "artifacts")
    with open_run(client, experiment_id=exp_id, name=f"encoder-{sha[:12]}") as run:
        run.set_tags({"facesurv.kind": "encoder", "encoder_sha256": sha, "generator_sha256": ginfo.sha256,
                      "generator_version": ginfo.version or "", "space": space})
        run.log_params({f"encoder.{k}": v for k, v in params.encoder.training_options().items()})
        run.log_metrics(clean_metrics({**{k: v for k, v in metrics.items() if isinstance(v, int | float)},
                                       "seconds": seconds}))
        run.log_artifact(file, "encoder")
    registered = comp.registered_generator()
    if registered is not None:  # the registry says which encoder goes with this generator version
        client.set_model_version_tag(registered.name, registered.version, f"encoder_{space}_sha256", sha)
    return str(run.run_id)
