"""Projection batches on a local Dask cluster (2 workers) give the single-process latents."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ground.workspace import Workspace
from tests.flows.flows_helpers import tiny_params, write_png


def _latents(ws, params) -> dict[str, np.ndarray]:
    from embedding.project_batch import read_shard
    from flows import embedding_steps

    return {r.photo_sha256: r.latent for f in embedding_steps.latent_shards(ws, params) for r in read_shard(f)[1]}


@pytest.mark.slow
def test_dask_projection_matches_single_process(workspace, prefect_api, tmp_path) -> None:
    from flows import embedding_steps
    from flows.nightly_embedding import run_projection

    tiny_params(workspace.root, projection={"steps": 3, "batch_size": 2})
    for i in range(5):
        write_png(workspace.data_dir / "prealigned" / f"p{i}.png", seed=i)
    params = workspace.load_params()
    single = Workspace(tmp_path / "single")
    shutil.copytree(workspace.root, single.root)

    batches = embedding_steps.pending_batches(single, params).batches
    assert [len(b) for b in batches] == [2, 2, 1]
    for b in batches:
        embedding_steps.project_batch(single, params, b)

    paths, failures = run_projection(workspace, params, dask_workers=2)
    assert len(paths) == 3 and not failures and embedding_steps.pending_batches(workspace, params).batches == []
    on_dask, in_process = _latents(workspace, params), _latents(single, params)
    assert set(on_dask) == set(in_process) and len(on_dask) == 5
    # the same maths; a Dask worker's torch uses another number of threads, and the backward of a
    # convolution sums in a thread-dependent order (gradients differ by about 1e-4 between 1 and 2
    # threads): after Adam's normalised steps latents differ by up to about 6e-5
    for sha, lat in in_process.items():
        np.testing.assert_allclose(on_dask[sha], lat, rtol=0, atol=2e-4)
    # nothing left to do: a second run submits no batch
    assert run_projection(workspace, params, dask_workers=2) == ([], [])
