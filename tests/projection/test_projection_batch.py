"""The one projection driver: resumable shards, one run key, failures reported, one latent table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from embedding.project_batch import (
    PhotoInput,
    Projection,
    load_photo,
    plan,
    project_batch,
    project_photos,
    read_shard,
)
from embedding.projection import project
from features.latents import latent_table, shard_table

from .conftest import FAST

SETTINGS = dict(space="w", loss="mse", **FAST)


def _write_photos(tmp_path, img, n):
    paths = []
    for i in range(n):
        arr = ((img[i].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        p = tmp_path / f"p{i}.png"
        Image.fromarray(arr, mode="RGB").save(p)
        paths.append(PhotoInput(f"p{i}", str(p)))
    return paths


def _projection(generator, settings=SETTINGS, **kw):
    G, info = generator
    return Projection(G, info, settings, seed=0, **kw)


def _run(generator, photos, shard_dir, *, settings=SETTINGS, project_fn=None, **kw):
    return project_photos(_projection(generator, settings, project_fn=project_fn), photos, shard_dir=shard_dir,
                          batch_size=2, **kw)


def test_crash_loses_at_most_one_batch_and_rerun_matches(tiny_generator, rendered_photos, tmp_path):
    photos = _write_photos(tmp_path, rendered_photos[1], 5)
    calls = []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return project(*args, **kwargs)

    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tiny_generator, photos, tmp_path / "shards", project_fn=crash_on_second)
    assert len(list((tmp_path / "shards").glob("shard-*.npz"))) == 1
    seen = []
    resumed = _run(tiny_generator, photos, tmp_path / "shards", progress=lambda d, t: seen.append((d, t)))
    assert resumed.reused == 2 and resumed.projected == 3 and not resumed.failures
    assert seen[0] == (2, 5) and seen[-1] == (5, 5)
    fresh = _run(tiny_generator, photos, tmp_path / "other")
    assert [r.photo_id for r in resumed.results] == [p.photo_id for p in photos]
    for a, b in zip(resumed.results, fresh.results, strict=True):
        assert np.abs(a.latent - b.latent).max() <= 1e-6 and abs(a.mse - b.mse) <= 1e-6
    again = _run(tiny_generator, photos, tmp_path / "shards")
    assert again.reused == 5 and again.projected == 0 and all(r.reused for r in again.results)


def test_unreadable_photos_are_reported_not_lost(tiny_generator, rendered_photos, tmp_path):
    photos = _write_photos(tmp_path, rendered_photos[1], 3)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    Image.new("RGB", (20, 10)).save(tmp_path / "wide.png")
    photos += [PhotoInput("bad", str(tmp_path / "bad.png")), PhotoInput("gone", str(tmp_path / "missing.png")),
               PhotoInput("wide", str(tmp_path / "wide.png"))]
    run = _run(tiny_generator, photos, tmp_path / "shards")
    assert [r.photo_id for r in run.results] == ["p0", "p1", "p2"]
    reasons = {f.photo_id: f.reason for f in run.failures}
    assert set(reasons) == {"bad", "gone", "wide"}
    assert "not a readable image" in reasons["bad"] and "cannot read file" in reasons["gone"]
    assert "square" in reasons["wide"]


def test_changed_settings_do_not_reuse(tiny_generator, rendered_photos, tmp_path):
    photos = _write_photos(tmp_path, rendered_photos[1], 2)
    first = _run(tiny_generator, photos, tmp_path / "shards")
    other = _run(tiny_generator, photos, tmp_path / "shards", settings={**SETTINGS, "steps": 3})
    assert other.reused == 0 and other.projected == 2 and other.run_key != first.run_key
    assert len(list((tmp_path / "shards").glob("shard-*.npz"))) == 2


def test_the_run_key_names_the_perceptual_network_a_perceptual_loss_uses(tiny_generator, stlpips):
    net, info = stlpips
    perceptual = dict(SETTINGS, loss="mse+perceptual")
    with_net = _projection(tiny_generator, perceptual, perceptual=net, perceptual_info=info)
    other_weights = _projection(tiny_generator, perceptual, perceptual=net,
                                perceptual_info=dataclasses.replace(info, sha256="0" * 64))
    other_resize = _projection(tiny_generator, perceptual, perceptual=net,
                               perceptual_info=dataclasses.replace(info, resize=info.resize // 2))
    pixel = _projection(tiny_generator)
    assert len({with_net.key, other_weights.key, other_resize.key, pixel.key}) == 4
    assert with_net.provenance["perceptual"]["sha256"] == info.sha256 and pixel.provenance["perceptual"] is None
    # where the projection runs is not part of what it computes
    assert _projection(tiny_generator, device="cuda").key == pixel.key


def test_the_generator_version_is_lineage_not_part_of_the_key(tiny_generator):
    """The registry's name for the weights is recorded, but the same weights under another name
    (or none, or an info object from before the field) are the same projection: same key, same shards."""
    from types import SimpleNamespace

    G, info = tiny_generator
    assert info.version is None  # the random-init stand-in has no registry name
    unnamed = _projection(tiny_generator)
    v2 = _projection((G, dataclasses.replace(info, version="facesurv-generator v2")))
    v3 = _projection((G, dataclasses.replace(info, version="facesurv-generator v3")))
    legacy_info = SimpleNamespace(**{k: getattr(info, k) for k in ("sha256", "is_random_init", "source", "description")})
    legacy = _projection((G, legacy_info))
    assert v2.key == v3.key == unnamed.key == legacy.key
    assert v2.provenance["generator"]["version"] == "facesurv-generator v2"
    assert v3.provenance["generator"]["version"] == "facesurv-generator v3"
    assert unnamed.provenance["generator"]["version"] is None and legacy.provenance["generator"]["version"] is None
    # other weights are another projection
    other = _projection((G, dataclasses.replace(info, sha256="0" * 64, version="facesurv-generator v2")))
    assert other.key != v2.key


def test_the_latent_table_names_the_generator_version(tiny_generator, rendered_photos, tmp_path):
    G, info = tiny_generator
    photos = _write_photos(tmp_path, rendered_photos[1], 2)
    named = (G, dataclasses.replace(info, version="facesurv-generator v2"))
    run = _run(named, photos, tmp_path / "shards")
    table = latent_table(run.results, run.provenance)
    assert table.schema.field("generator_version").type == pa.string()
    assert table.column("generator_version").to_pylist() == ["facesurv-generator v2"] * 2
    # the shard the run wrote carries it too: the nightly flow reads shards, not the run
    (shard,) = (tmp_path / "shards").glob("shard-*.npz")
    assert shard_table(shard).column("generator_version").to_pylist() == ["facesurv-generator v2"] * 2
    # a generator without a registry name: null
    plain = _run(tiny_generator, photos, tmp_path / "plain")
    assert plain.run_key == run.run_key and plain.reused == 0
    assert latent_table(plain.results, plain.provenance).column("generator_version").to_pylist() == [None, None]
    # provenance written before versions were recorded (a shard of an older facesurv): null, not an error
    old = {**run.provenance, "generator": {k: v for k, v in run.provenance["generator"].items() if k != "version"}}
    old_table = latent_table(run.results, old)
    assert old_table.column("generator_version").to_pylist() == [None, None]
    assert old_table.schema.equals(table.schema, check_metadata=False)


def test_a_projection_that_cannot_be_keyed_is_refused(tiny_generator, stlpips):
    net, _ = stlpips
    with pytest.raises(ValueError, match="loss 'perceptual' needs a perceptual network"):
        _projection(tiny_generator, dict(SETTINGS, loss="perceptual"))
    with pytest.raises(ValueError, match="a perceptual network needs its PerceptualInfo"):
        _projection(tiny_generator, perceptual=net)


def test_damaged_shard_is_recomputed_with_a_warning(tiny_generator, rendered_photos, tmp_path):
    photos = _write_photos(tmp_path, rendered_photos[1], 2)
    _run(tiny_generator, photos, tmp_path / "shards")
    (shard,) = (tmp_path / "shards").glob("shard-*.npz")
    shard.write_bytes(b"garbage")
    warnings = []
    run = _run(tiny_generator, photos, tmp_path / "shards", warn=warnings.append)
    assert run.projected == 2 and len(warnings) == 1 and "unreadable shard" in warnings[0]
    assert sorted(r.photo_sha256 for r in read_shard(shard)[1]) == sorted(r.photo_sha256 for r in run.results)


def test_bad_input_is_refused(tiny_generator, tmp_path):
    with pytest.raises(ValueError, match="photo_id values must be unique; repeated: a"):
        _run(tiny_generator, [PhotoInput("a", "x.png"), PhotoInput("a", "y.png")], tmp_path)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        project_photos(_projection(tiny_generator), [], shard_dir=tmp_path, batch_size=0)
    with pytest.raises(ValueError, match=r"photos without a sha256 \(plan\(\) gives every photo its hash\): a"):
        project_batch(_projection(tiny_generator), [PhotoInput("a", "x.png")], shard_dir=tmp_path)


def test_same_content_projected_once(tiny_generator, rendered_photos, tmp_path):
    photos = _write_photos(tmp_path, rendered_photos[1], 1)
    copy = tmp_path / "copy.png"
    copy.write_bytes((tmp_path / "p0.png").read_bytes())
    run = _run(tiny_generator, photos + [PhotoInput("copy", str(copy))], tmp_path / "shards")
    assert run.projected == 1 and len(run.results) == 2
    assert np.array_equal(run.results[0].latent, run.results[1].latent)


def test_a_given_identity_keys_the_seed_and_the_reuse(tiny_generator, rendered_photos, tmp_path):
    """The nightly flow keys an aligned photo by its source photo's hash: the same pixels under
    another identity are another photo, projected with another seed."""
    photos = _write_photos(tmp_path, rendered_photos[1], 1)
    plain = _run(tiny_generator, photos, tmp_path / "shards")
    named = _run(tiny_generator, [dataclasses.replace(photos[0], sha256="a" * 64)], tmp_path / "shards")
    assert named.projected == 1 and named.results[0].photo_sha256 == "a" * 64
    assert not np.array_equal(named.results[0].latent, plain.results[0].latent)
    todo = plan(_projection(tiny_generator), [dataclasses.replace(photos[0], sha256="a" * 64)],
                shard_dir=tmp_path / "shards", batch_size=2)
    assert not todo.batches and set(todo.done) == {plain.results[0].photo_sha256, "a" * 64}


def test_w_plus_shards_read_as_the_one_latent_table(tiny_generator, rendered_photos, tmp_path):
    G, _ = tiny_generator
    photos = _write_photos(tmp_path, rendered_photos[1], 3)
    run = _run(tiny_generator, photos, tmp_path / "shards", settings={**SETTINGS, "space": "w+"})
    assert run.results[0].latent.shape == (G.num_ws, 512)
    shards = [shard_table(p) for p in sorted((tmp_path / "shards").glob("shard-*.npz"))]
    table = latent_table(run.results, run.provenance)
    assert all(s.schema.equals(table.schema, check_metadata=False) for s in shards)
    assert sum(s.num_rows for s in shards) == table.num_rows == 3
    assert table.schema.field("latent").type == pa.list_(pa.float32(), 512)
    row = table.slice(0, 1).to_pylist()[0]
    layers = np.asarray(row["latent_layers"], np.float32).reshape(G.num_ws, 512)
    np.testing.assert_allclose(row["latent"], layers.mean(axis=0), atol=1e-6)  # the documented reduction
    np.testing.assert_allclose(row["latent"], row["w"], atol=1e-5)
    assert (row["space"], row["loss"], row["perceptual_network"], row["perceptual_sha256"]) == ("w+", "mse", "none", None)
    assert row["run_key"] == run.run_key and row["generator_is_random_init"] is True
    assert b"STAND-INS IN USE" in table.schema.metadata[b"facesurv.stand_in"]
    w_table = latent_table(_run(tiny_generator, photos, tmp_path / "w").results, run.provenance | {
        "settings": {**run.provenance["settings"], "space": "w"}})
    assert w_table.schema.equals(table.schema, check_metadata=False)
    assert w_table.column("latent_layers").null_count == 3


def test_the_latent_contract_accepts_a_shard(tiny_generator, rendered_photos, tmp_path, params):
    from features.contracts import read_table, run_contract
    from ground.config import with_overrides

    photos = _write_photos(tmp_path, rendered_photos[1], 2)
    _run(tiny_generator, photos, tmp_path / "shards", settings={**SETTINGS, "space": "w+"})
    (shard,) = (tmp_path / "shards").glob("shard-*.npz")
    result = run_contract("latents", read_table(shard), with_overrides(params, contracts={"max_projection_loss": 100.0}))
    assert result.passed and len(result.valid) == 2, result.summary


def test_a_damaged_shard_is_not_a_table(tmp_path):
    from features.contracts import read_table
    from ground.errors import DataError

    (tmp_path / "shard-x.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"shard-x.npz: cannot be read as a table \("):
        read_table(tmp_path / "shard-x.npz")


def test_load_photo_resizes_and_scales(tmp_path):
    Image.new("RGB", (64, 64), (255, 0, 128)).save(tmp_path / "a.png")
    arr = load_photo(tmp_path / "a.png", resolution=16)
    assert arr.shape == (3, 16, 16) and arr.dtype == np.float32
    assert np.allclose(arr[:, 0, 0], [1.0, -1.0, 128 / 127.5 - 1], atol=1e-6)
