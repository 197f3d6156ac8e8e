"""The batch driver: resumable shards, failures reported, reuse keyed by content and settings."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from embedding.project_batch import PhotoInput, load_photo, project_photos
from embedding.projection import project

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


def _run(G, photos, shard_dir, **kw):
    return project_photos(G, photos, shard_dir=shard_dir, generator_sha256="g" * 64,
                          settings=kw.pop("settings", SETTINGS), batch_size=2, seed=0, **kw)


def test_crash_loses_at_most_one_batch_and_rerun_matches(tiny_generator, rendered_photos, tmp_path):
    G, _ = tiny_generator
    photos = _write_photos(tmp_path, rendered_photos[1], 5)
    calls = []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return project(*args, **kwargs)

    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(G, photos, tmp_path / "shards", project_fn=crash_on_second)
    assert len(list((tmp_path / "shards").glob("shard-*.npz"))) == 1
    seen = []
    resumed = _run(G, photos, tmp_path / "shards", progress=lambda d, t: seen.append((d, t)))
    assert resumed.reused == 2 and resumed.projected == 3 and not resumed.failures
    assert seen[0] == (2, 5) and seen[-1] == (5, 5)
    fresh = _run(G, photos, tmp_path / "other")
    assert [r.photo_id for r in resumed.results] == [p.photo_id for p in photos]
    for a, b in zip(resumed.results, fresh.results, strict=True):
        assert np.abs(a.latent - b.latent).max() <= 1e-6 and abs(a.mse - b.mse) <= 1e-6
    again = _run(G, photos, tmp_path / "shards")
    assert again.reused == 5 and again.projected == 0 and all(r.reused for r in again.results)


def test_unreadable_photos_are_reported_not_lost(tiny_generator, rendered_photos, tmp_path):
    G, _ = tiny_generator
    photos = _write_photos(tmp_path, rendered_photos[1], 3)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    Image.new("RGB", (20, 10)).save(tmp_path / "wide.png")
    photos += [PhotoInput("bad", str(tmp_path / "bad.png")), PhotoInput("gone", str(tmp_path / "missing.png")),
               PhotoInput("wide", str(tmp_path / "wide.png"))]
    run = _run(G, photos, tmp_path / "shards")
    assert [r.photo_id for r in run.results] == ["p0", "p1", "p2"]
    reasons = {f.photo_id: f.reason for f in run.failures}
    assert set(reasons) == {"bad", "gone", "wide"}
    assert "not a readable image" in reasons["bad"] and "cannot read file" in reasons["gone"]
    assert "square" in reasons["wide"]


def test_changed_settings_do_not_reuse(tiny_generator, rendered_photos, tmp_path):
    G, _ = tiny_generator
    photos = _write_photos(tmp_path, rendered_photos[1], 2)
    first = _run(G, photos, tmp_path / "shards")
    other = _run(G, photos, tmp_path / "shards", settings={**SETTINGS, "steps": 3})
    assert other.reused == 0 and other.projected == 2 and other.run_key != first.run_key


def test_damaged_shard_is_recomputed_with_a_warning(tiny_generator, rendered_photos, tmp_path):
    G, _ = tiny_generator
    photos = _write_photos(tmp_path, rendered_photos[1], 2)
    _run(G, photos, tmp_path / "shards")
    (shard,) = (tmp_path / "shards").glob("shard-*.npz")
    shard.write_bytes(b"garbage")
    warnings = []
    run = _run(G, photos, tmp_path / "shards", warn=warnings.append)
    assert run.projected == 2 and len(warnings) == 1 and "unreadable shard" in warnings[0]


def test_duplicate_photo_ids_refused(tiny_generator, tmp_path):
    G, _ = tiny_generator
    with pytest.raises(ValueError, match="photo_id values must be unique"):
        _run(G, [PhotoInput("a", "x.png"), PhotoInput("a", "y.png")], tmp_path)


def test_same_content_projected_once(tiny_generator, rendered_photos, tmp_path):
    G, _ = tiny_generator
    photos = _write_photos(tmp_path, rendered_photos[1], 1)
    copy = tmp_path / "copy.png"
    copy.write_bytes((tmp_path / "p0.png").read_bytes())
    run = _run(G, photos + [PhotoInput("copy", str(copy))], tmp_path / "shards")
    assert run.projected == 1 and len(run.results) == 2
    assert np.array_equal(run.results[0].latent, run.results[1].latent)


def test_load_photo_resizes_and_scales(tmp_path):
    Image.new("RGB", (64, 64), (255, 0, 128)).save(tmp_path / "a.png")
    arr = load_photo(tmp_path / "a.png", resolution=16)
    assert arr.shape == (3, 16, 16) and arr.dtype == np.float32
    assert np.allclose(arr[:, 0, 0], [1.0, -1.0, 128 / 127.5 - 1], atol=1e-6)
