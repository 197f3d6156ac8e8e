"""The DVC pipeline's stages (dvc.yaml): `python -m flows.stages STAGE [--root DIR]`.

Each stage reads params.yaml from the current directory (the DVC repository root) and calls
the functions the Prefect flows' tasks are declared on (the libraries, flows/steps.py,
flows/embedding_steps.py, flows/training_steps.py) on the workspace DIR (default `pipeline`). DVC owns the versioning
here (its outs), so the stages do not use the workspace's own data repository.

    cohort:   facesurv cohort synth (in dvc.yaml) -> DIR/cohort
    align     DIR/cohort -> DIR/data/{prealigned,photos,clinical} + DIR/artifacts/aligned
    project   -> DIR/artifacts/latents
    features  -> DIR/artifacts/contracts + DIR/feature_repo (written and materialised)
    train     -> DIR/artifacts/training (training set, metrics, promotion), DIR/mlflow (runs, registry)
    evaluate  -> DIR/metrics.json (what `dvc metrics show` prints)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from flows import embedding_steps, steps, training_steps
from flows.progress import heartbeat
from ground.atomic import atomic_path
from ground.config import Params, load_params
from ground.errors import DataError, FacesurvError
from ground.workspace import Workspace

DEMO_FACE = "astronaut"  # scikit-image's public-domain portrait: the one photo that goes through alignment


def _demo_face(target_dir: Path) -> Path:
    import skimage.data
    from PIL import Image

    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / f"{DEMO_FACE}.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    return path


def stage_align(ws: Workspace, params: Params) -> None:
    """Lay the cohort out as the flow's data directory, then align the raw photos."""
    cohort = ws.root / "cohort"
    if not (cohort / "clinical.csv").is_file():
        raise FacesurvError(f"{cohort}: no cohort; run the `cohort` stage first (dvc repro cohort)")
    data = ws.data_dir
    if data.exists():
        shutil.rmtree(data)
    shutil.copytree(cohort / "photos", data / "prealigned")  # rendered portraits: declared aligned
    (data / "clinical").mkdir(parents=True)
    shutil.copyfile(cohort / "clinical.csv", data / "clinical" / "cohort.csv")
    _demo_face(data / "photos")
    embedding_steps.align_photos(ws, params)


def stage_project(ws: Workspace, params: Params) -> None:
    todo = embedding_steps.pending_batches(ws, params)
    failures = todo.failures + [f for b in todo.batches for f in embedding_steps.project_batch(ws, params, b)[1]]
    for f in failures:
        print(f"photo {f.photo_id} not projected: {f.reason}", file=sys.stderr)
    if failures:  # a stage that succeeded is cached by DVC: these photos would never be retried
        raise DataError(f"{len(failures)} photo(s) could not be projected (listed above): replace or remove them "
                        "and run `dvc repro` again")


def stage_features(ws: Workspace, params: Params) -> None:
    from features.store import apply_repo, materialize, write_clinical
    from flows.lineage import run_context

    steps.validate_file(ws, params, "manifest", steps.Layout(ws).aligned / "manifest.csv")
    valid_clinical = [steps.validate_file(ws, params, "clinical", p) for p in steps.clinical_files(ws)]
    valid_latents = [steps.validate_file(ws, params, "latents", p) for p in embedding_steps.latent_shards(ws, params)]
    # a run record and OpenLineage events of its own (under DIR/artifacts/lineage, no DVC out), whose
    # run id the new face_latent rows carry, as the nightly flow's rows carry its run's
    with run_context(ws, params, "dvc-features", description="DVC stage features: Feast features written") as record:
        record.input_datasets = [{"kind": "dvc", "path": str(ws.data_dir / "clinical"), "out": "clinical",
                                  "rev": None, "md5": None}]
        apply_repo(ws.feature_repo_dir, params)
        write_clinical(ws.feature_repo_dir, steps.read_valid_clinical(valid_clinical), params)
        embedding_steps.write_latent_features(ws, params, valid_clinical, valid_latents,
                                              openlineage=record.openlineage or None)
        with heartbeat("materialising the Feast features into the online store"):
            materialize(ws.feature_repo_dir, params)


def stage_train(ws: Workspace, params: Params) -> None:
    from ground.workspace import code_version

    frame = training_steps.build_training_set(ws, params)
    lineage = {"data_rev": "dvc-pipeline", "code_version": code_version(), "params_hash": params.params_hash}
    result = training_steps.train(ws, params, frame, lineage)
    training_steps.write_metrics(ws, result)
    # promotion writes to the MLflow store, an out of this stage: doing it here keeps the
    # evaluate stage from changing another stage's outs (which would make every repro retrain)
    decision = training_steps.promote(ws, params)
    with atomic_path(training_steps.training_dir(ws) / "promotion.json") as tmp:
        tmp.write_text(json.dumps(decision, indent=1, sort_keys=True, default=str))


def stage_evaluate(ws: Workspace, params: Params) -> None:
    """metrics.json: C-index (with CI), Uno's C and IBS per model, and the promotion decision."""
    summary = json.loads((training_steps.training_dir(ws) / "metrics.json").read_text())
    decision = json.loads((training_steps.training_dir(ws) / "promotion.json").read_text())
    metrics = {"models": summary["models"],
               "promotion": {"promoted": bool(decision.get("promoted")), "reason": str(decision.get("reason"))}}
    with atomic_path(ws.root / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, sort_keys=True))


STAGES = {"align": stage_align, "project": stage_project, "features": stage_features,
          "train": stage_train, "evaluate": stage_evaluate}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.stages", description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=sorted(STAGES))
    ap.add_argument("--root", default="pipeline", help="the pipeline's workspace directory")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        params = load_params(Path(args.params))
        STAGES[args.stage](Workspace(Path(args.root).resolve()), params)
    except FacesurvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
