"""One embedding engine: the photo endpoint's pipeline and the nightly flow give a photo the same
latent, and a w+ projection reaches the feature store as one 512-d vector per photo."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.flows.flows_helpers import fill_inbox, tiny_params

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("space", ["w", "w+"])
def test_an_uploaded_photo_gets_the_latent_the_nightly_flow_gives_it(workspace, shared_dir, space) -> None:
    from facesurv.components import Components
    from features.latents import shard_table
    from flows.embedding_steps import align_photos, pending_batches, project_batch

    tiny_params(workspace.root, projection={"steps": 3, "batch_size": 2, "space": space})
    params = workspace.load_params()
    photos = workspace.data_dir / "photos"
    photos.mkdir(parents=True)
    source = photos / "p-astronaut.png"
    shutil.copyfile(shared_dir / "faces" / "astronaut.png", source)

    assert align_photos(workspace, params).aligned == 1
    (batch,) = pending_batches(workspace, params).batches
    shard, failures = project_batch(workspace, params, batch)
    assert not failures
    flow_latent = shard_table(shard).column("latent").to_pylist()[0]

    served = Components(workspace, params).photo_pipeline()(source.read_bytes())  # its own models
    assert np.asarray(flow_latent).shape == (512,) and len(served.latent) == 512
    # float tolerance only: the same preprocessing, seed, statistics and w+ reduction
    np.testing.assert_allclose(served.latent, np.asarray(flow_latent, dtype=np.float64), rtol=0, atol=1e-5)


def test_a_nightly_run_in_w_plus_passes_end_to_end(workspace, prefect_api) -> None:
    from flows.nightly_embedding import nightly_embedding

    tiny_params(workspace.root, projection={"steps": 2, "batch_size": 4, "space": "w+"},
                contracts={"max_projection_loss": 100.0})
    fill_inbox(workspace.root, start=0, count=6)
    out = nightly_embedding(str(workspace.root))
    assert out["new_photos"] == 6 and out["latent_rows_written"] == 6, out
    assert out["materialized"]["face_latent"] == 6
