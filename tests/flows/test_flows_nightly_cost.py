"""A night with nothing new loads no model and does not reopen Feast or DVC, yet still records
that it ran; a night with something new (a photo, a generator) still does the work.

Each run starts with an empty components cache, as a scheduled run starts in a fresh process;
counters sit around the project's own loaders (the generator loader, the aligner's dlib
models, the projection and its latent statistics), never around a library."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.flows.flows_helpers import fill_inbox, tiny_params, write_png


@pytest.fixture()
def loads(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts of model loads and projections in this process, from a cold components cache."""
    import embedding.align.pipeline
    import embedding.projection
    import embedding.stylegan2
    import facesurv.components

    counts: Counter = Counter()

    def counted(name: str, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(embedding.stylegan2, "load_generator", counted("generator", embedding.stylegan2.load_generator))
    monkeypatch.setattr(embedding.align.pipeline, "FaceModels", counted("aligner", embedding.align.pipeline.FaceModels))
    monkeypatch.setattr(embedding.projection, "project", counted("project", embedding.projection.project))
    monkeypatch.setattr(embedding.projection, "latent_statistics",
                        counted("latent_statistics", embedding.projection.latent_statistics))
    monkeypatch.setattr(facesurv.components, "_SHARED", {})
    return counts


def _fresh_process(counts: Counter) -> None:
    """What a new process starts with: no loaded components, nothing counted."""
    import facesurv.components

    facesurv.components._SHARED.clear()
    counts.clear()


def test_the_run_key_is_remembered_and_forgotten_when_its_inputs_change(workspace, loads: Counter) -> None:
    from flows import embedding_steps
    from ground.config import with_overrides

    tiny_params(workspace.root, projection={"steps": 2, "batch_size": 2, "w_avg_samples": 500})
    params = workspace.load_params()
    pre = workspace.data_dir / "prealigned"
    for i in range(2):
        write_png(pre / f"p{i}.png", seed=i)

    first = embedding_steps.projection_todo(workspace, params)
    assert first.loaded and sum(map(len, first.plan.batches)) == 2
    for batch in first.plan.batches:
        embedding_steps.project_batch(workspace, params, batch)

    _fresh_process(loads)
    again = embedding_steps.projection_todo(workspace, params)
    assert not again.loaded and not again.plan.batches and len(again.plan.done) == 2
    assert (again.key, again.generator) == (first.key, first.generator)
    assert embedding_steps.latent_shards(workspace, params, key=again.key) == \
        embedding_steps.latent_shards(workspace, params)
    _fresh_process(loads)
    embedding_steps.projection_todo(workspace, params)
    assert loads == Counter()  # no generator, no statistics, no projection

    write_png(pre / "p2.png", seed=2)  # a new photo: loaded, and only it is pending
    _fresh_process(loads)
    newer = embedding_steps.projection_todo(workspace, params)
    assert newer.loaded and newer.key == first.key and [p.photo_id for b in newer.plan.batches for p in b] == ["p2"]
    assert loads["generator"] == 1

    other = with_overrides(params, generator={"seed": 1})  # another generator: every photo again
    _fresh_process(loads)
    promoted = embedding_steps.projection_todo(workspace, other)
    assert promoted.loaded and promoted.key != first.key and sum(map(len, promoted.plan.batches)) == 3

    # a loss with a perceptual network: its weights may come from the environment, so always loaded
    assert embedding_steps.run_key_identity(workspace, with_overrides(params, projection={"loss": "mse+perceptual"})) \
        is None
    # a checkpoint replaced by other bytes changes the identity without loading it
    ckpt = workspace.root / "generators" / "g.safetensors"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"one")
    with_file = with_overrides(params, generator={"checkpoint": "generators/g.safetensors"})
    before = embedding_steps.run_key_identity(workspace, with_file)
    ckpt.write_bytes(b"other")
    assert before is not None and embedding_steps.run_key_identity(workspace, with_file) != before


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_night_with_nothing_new_loads_nothing_and_still_records_its_run(
        workspace, prefect_api, shared_dir, loads: Counter) -> None:
    from flows.lineage import read_latest
    from flows.nightly_embedding import nightly_embedding

    tiny_params(workspace.root, contracts={"max_projection_loss": 100.0})
    fill_inbox(workspace.root, start=0, count=3, real_face=shared_dir / "faces" / "astronaut.png")
    first = nightly_embedding(str(workspace.root))
    assert first["new_photos"] == 3 and first["aligned"] == 1 and first["latent_rows_written"] == 3, first
    assert (loads["generator"], loads["aligner"], loads["project"]) == (1, 1, 2), loads  # batches of 2
    assert not first["data_repository_unchanged"] and not first["feature_store_unchanged"]

    _fresh_process(loads)
    again = nightly_embedding(str(workspace.root))
    # (an edit of the embedding code between the two runs rightly makes the second load the generator)
    assert loads == Counter(), f"a night with nothing new loaded or projected: {dict(loads)}, {again}"
    todo = again["projection_todo"]
    assert (todo["pending"], todo["photos"], todo["models_loaded"]) == (0, 3, False)
    assert todo["generator"] == first["projection_todo"]["generator"]
    assert todo["run_key"] == first["projection_todo"]["run_key"]
    assert again["new_photos"] == 0 and again["projection_batches"] == 0 and again["alignment_reused"] == 1
    assert again["latent_rows_written"] == 0 and again["clinical_rows_written"] == 0
    assert again["materialized"] == {"face_latent": 0, "clinical": 0}
    assert again["data_repository_unchanged"] and again["feature_store_unchanged"], again
    assert again["data_rev"] == first["data_rev"]
    # the run is recorded as any other: completed, on the same data, with what it found
    latest = read_latest(workspace.artifacts_dir, "nightly-embedding")
    assert latest["flow_run_id"] == again["flow_run_id"] and latest["status"] == "completed"
    assert latest["data_rev"] == first["data_rev"] and latest["data_md5"] == \
        json.loads((workspace.artifacts_dir / "lineage" / "flow_runs" / f"{first['flow_run_id']}.json")
                   .read_text())["data_md5"]
    assert latest["outputs"]["new_photos"] == 0 and latest["outputs"]["data_files"] == 4  # 3 photos, 1 clinical

    # one new patient: versioned, only its photo projected, the feature store written again
    fill_inbox(workspace.root, start=3, count=1)
    _fresh_process(loads)
    third = nightly_embedding(str(workspace.root))
    assert third["new_photos"] == 1 and third["projection_todo"]["pending"] == 1, third
    assert third["latent_rows_written"] == 1 and third["clinical_rows_written"] == 1, third
    assert (loads["generator"], loads["project"], loads["aligner"]) == (1, 1, 0), loads  # pre-aligned only
    assert third["data_rev"] != first["data_rev"] and not third["data_repository_unchanged"]
    assert not third["feature_store_unchanged"]

    # a new generator and nothing new in the inbox: every photo is projected again under it
    tiny_params(workspace.root, generator={"seed": 1}, contracts={"max_projection_loss": 100.0})
    _fresh_process(loads)
    fourth = nightly_embedding(str(workspace.root))
    assert fourth["new_photos"] == 0 and fourth["data_repository_unchanged"], fourth
    assert fourth["projection_todo"]["pending"] == 4 and fourth["projection_todo"]["models_loaded"], fourth
    assert fourth["projection_todo"]["generator"] != first["projection_todo"]["generator"]
    assert fourth["latent_rows_written"] == 4 and not fourth["feature_store_unchanged"]


def test_a_data_folder_changed_by_hand_is_versioned_again(tmp_path) -> None:
    from flows.nightly_state import data_tree as _data_tree

    data = tmp_path / "data"
    write_png(data / "photos" / "a.png", seed=1)
    (data / "clinical").mkdir()
    (data / "clinical" / "c.csv").write_text("patient_id\nP1\n")
    (data / "elsewhere.txt").write_text("not versioned")
    stamp = _data_tree(data)
    (data / "elsewhere.txt").write_text("still not versioned")
    assert _data_tree(data) == stamp
    (data / "photos" / "a.png").unlink()  # an erasure by hand
    assert _data_tree(data) != stamp
    write_png(data / "photos" / "a.png", seed=2)  # or a replacement
    assert _data_tree(data) != stamp



@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_nightly_flow_starts_projections_from_the_generators_encoder(workspace, prefect_api) -> None:
    """projection.init: encoder: the first night trains the generator's encoder (once), every latent
    records it, and a later night with a new photo reuses it."""
    from features.store.offline import read_rows
    from flows.nightly_embedding import nightly_embedding

    tiny_params(workspace.root, contracts={"max_projection_loss": 100.0}, projection={"init": "encoder", "steps": 2, "batch_size": 2},
                encoder={"steps": 20, "batch_size": 4, "width": 16})
    fill_inbox(workspace.root, start=0, count=2)
    first = nightly_embedding(str(workspace.root))
    enc = first["projection_todo"]["encoder"]
    assert enc["trained"] and first["latent_rows_written"] == 2, first
    stored = read_rows(workspace.feature_repo_dir, workspace.load_params(), "face_latent")
    assert set(stored["encoder_sha256"]) == {enc["sha256"]}

    fill_inbox(workspace.root, start=2, count=1)
    second = nightly_embedding(str(workspace.root))
    again = second["projection_todo"]["encoder"]
    assert not again["trained"] and again["sha256"] == enc["sha256"], second
    assert second["projection_todo"]["pending"] == 1 and second["latent_rows_written"] == 1, second
