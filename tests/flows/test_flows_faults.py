"""Crash recovery: kill the nightly flow's process at many points; a rerun repairs everything.

After every kill, a plain rerun must complete, and then every photo delivered so far has
exactly one latent (projected once: one row across all projection shards) and the
feature store holds every clinical record and every latent exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.flows.flows_helpers import GIT_ENV, fill_inbox, tiny_params

KILL_POINTS = [
    "lib:materialize-view",           # mid-materialisation: one view done, watermark not moved
    "features:materialized",
    "inbox:marked-done",              # everything done but the bookkeeping
    "align:photo-written",            # mid-alignment: PNG written, its row not yet
    "project:batch-computed",         # mid-projection batch: computed, not written
    "project:first-batch-done",       # between projection batches (the next may be running)
    "lib:feature-parquet-written",    # mid-feature write: part file staged, not renamed
    "features:clinical-written",      # between the clinical and latent feature writes
    "lock:acquired",
    "inbox:ingested",
    "data:versioned",
    "clinical:validated",
    "latents:validated",
]
PER_CYCLE = 3  # patients delivered before each kill: one real photo to align, two pre-aligned


def _tweaked_face(src: Path, out: Path, k: int) -> Path:
    """The real test face with a few pixels changed: new content, same face, for each cycle."""
    from PIL import Image

    arr = np.asarray(Image.open(src).convert("RGB")).copy()
    arr[:2, :2, :] = (k * 37) % 256
    Image.fromarray(arr).save(out)
    return out


class Runner:
    def __init__(self, ws_root: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "flow_forkserver.py"), str(ws_root), str(log)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).parents[2])
        assert json.loads(self.proc.stdout.readline())["ready"]

    def run(self, kill: str | None = None) -> int:
        self.proc.stdin.write((kill or "-") + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"fork server died; see {self.log}"
        return json.loads(line)["exit"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _check_invariants(ws, params, photos: dict[str, str], n_clinical: int) -> None:
    import pandas as pd

    from embedding.project_batch import read_shard
    from features.store.offline import read_rows
    from flows import embedding_steps

    shas = [r.photo_sha256 for f in embedding_steps.latent_shards(ws, params) for r in read_shard(f)[1]]
    assert len(shas) == len(set(shas)), "a photo was projected twice"
    assert set(shas) == set(photos.values()), "a delivered photo has no latent"
    latents = read_rows(ws.feature_repo_dir, params, "face_latent")
    assert len(latents) == len(photos) and latents["photo_sha256"].is_unique
    assert set(latents["photo_id"]) == set(photos)
    clinical = read_rows(ws.feature_repo_dir, params, "clinical")
    keys = clinical["patient_id"].astype(str) + "|" + pd.to_datetime(clinical["record_known_at"], utc=True).astype(str)
    assert len(clinical) == n_clinical and keys.is_unique


@pytest.mark.slow
def test_nightly_flow_survives_kills_at_every_stage(workspace, prefect_api, tmp_path, shared_dir) -> None:
    import hashlib

    assert len(KILL_POINTS) >= 10
    tiny_params(workspace.root, contracts={"max_projection_loss": 100.0})
    params = workspace.load_params()
    env = {**os.environ, **GIT_ENV, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "prefect"),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("FACESURV_KILL_AT", None)
    runner = Runner(workspace.root, env, tmp_path / "runs.log")
    photos: dict[str, str] = {}
    try:
        for k, point in enumerate(KILL_POINTS):
            ids = fill_inbox(workspace.root, start=k * PER_CYCLE, count=PER_CYCLE,
                             real_face=_tweaked_face(shared_dir / "faces" / "astronaut.png", tmp_path / "face.png", k))
            for pid in ids:
                src = next((workspace.root / "inbox").glob(f"*/{pid}.png"))
                photos[pid] = hashlib.sha256(src.read_bytes()).hexdigest()
            assert runner.run(point) == 77, f"the run was not killed at {point}; see {runner.log}"
            assert runner.run() == 0, f"the rerun after a kill at {point} failed; see {runner.log}"
            _check_invariants(workspace, params, photos, n_clinical=len(photos))
        # a run with nothing new changes nothing
        assert runner.run() == 0
        _check_invariants(workspace, params, photos, n_clinical=len(photos))
    finally:
        runner.close()
    latest = json.loads((workspace.artifacts_dir / "lineage" / "latest-nightly-embedding.json").read_text())
    assert latest["status"] == "completed" and latest["data_rev"]
    assert latest["outputs"]["projection_batches"] == 0
