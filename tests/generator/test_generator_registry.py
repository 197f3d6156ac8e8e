"""Training a workspace's generator, the registry round trip, promotion, and lineage naming the version."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from facesurv.cli import main

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]

TRAIN = {"kimg": 0.048, "batch_size": 4, "tick_kimg": 0.016, "kid_fakes": 8, "kid_subsets": 2, "grid_samples": 4,
         "ema_kimg": 0.01, "ada_speed_kimg": 0.05, "device": "cpu", "mixed_precision": False}
GEN = {"resolution": 8, "z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 64, "channel_max": 8}


def _edit(ws, **sections):
    path = ws.root / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        raw[section].update(values)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return ws.load_params()


def _gen_ws(root):
    """A workspace whose generator is 8 px and whose training photos are 10 seeded 16 px squares."""
    import shutil

    from ground.workspace import Workspace

    root.mkdir()
    shutil.copyfile(REPO / "params.yaml", root / "params.yaml")
    ws = Workspace(root)
    photos = root / "train-photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(photos / f"p{i:02d}.png")
    _edit(ws, generator=GEN, generator_training={**TRAIN, "photos": "train-photos"})
    return ws


@pytest.fixture()
def gen_ws(tmp_path):
    return _gen_ws(tmp_path / "ws")


def _client(ws, params):
    from mlflow import MlflowClient

    from facesurv.components import Components

    return MlflowClient(Components(ws, params).tracking_uri)


def test_train_tracks_exports_and_registers(gen_ws):
    from embedding.fileio import sha256_file
    from flows.generator_steps import train_generator

    params = gen_ws.load_params()
    lines: list[str] = []
    result = train_generator(gen_ws, params, log=lines.append)
    assert result["version"] == "1" and result["kimg"] == pytest.approx(0.048)
    exported = gen_ws.root / "generators" / "runs" / result["run_name"] / "generator"
    assert sha256_file(exported / "generator.safetensors") == result["sha256"]
    assert result["photos_count"] == 10 and result["photos_dvc_rev"].startswith("none")
    assert result["parent"] == "none (from scratch)"
    client = _client(gen_ws, params)
    mv = client.get_model_version("facesurv-generator", "1")
    tags = dict(mv.tags)
    assert tags["sha256"] == result["sha256"] and tags["facesurv.kind"] == "generator"
    assert json.loads(tags["training_config"])["batch_size"] == 4
    assert str(client.get_model_version_by_alias("facesurv-generator", "challenger").version) == "1"
    history = client.get_metric_history(result["mlflow_run_id"], "kid")
    assert len(history) == 4  # the start and each of the 3 ticks
    assert [m.step for m in history] == [0, 16, 32, 48]
    for key in ("loss_d", "loss_g", "p", "r_t", "kid_se"):
        assert client.get_metric_history(result["mlflow_run_id"], key), key
    grids = [a.path for a in client.list_artifacts(result["mlflow_run_id"], "samples")]
    assert len(grids) == 4
    assert any("kimg" in line and "ETA" in line for line in lines)
    again = train_generator(gen_ws, params, log=lines.append)   # the same inputs: already done
    assert again["version"] == "1" and again["sha256"] == result["sha256"] and "nothing to do" in lines[-1]
    assert len(client.search_model_versions("name = 'facesurv-generator'")) == 1


def test_promote_then_workspace_embeds_with_the_version(gen_ws, capsys):
    from flows.generator_steps import train_generator

    params = gen_ws.load_params()
    result = train_generator(gen_ws, params, log=lambda m: None)
    rc = main(["generator", "promote", "1", "--workspace", str(gen_ws.root)])
    out = capsys.readouterr().out
    assert rc == 0 and "facesurv-generator v1 is now @champion (was: none)" in out
    assert "set generator.checkpoint: models:/facesurv-generator@champion" in out

    params = _edit(gen_ws, generator={"checkpoint": "models:/facesurv-generator@champion"})
    from facesurv.components import Components

    G, info = Components(gen_ws, params).generator()
    assert info.version == "facesurv-generator v1" and info.sha256 == result["sha256"]
    assert not info.is_random_init and G.img_resolution == 8
    rc = main(["generator", "versions", "--workspace", str(gen_ws.root)])
    out = capsys.readouterr().out
    assert rc == 0 and "facesurv-generator v1 @challenger, @champion" in out and result["sha256"][:12] in out
    # promoting again says the workspace follows the alias
    assert main(["generator", "promote", "1", "--workspace", str(gen_ws.root)]) == 0
    assert "the nightly flow embeds with it" in capsys.readouterr().out


def test_lineage_of_a_latent_names_the_generator_version(gen_ws, tmp_path):
    from embedding.project_batch import PhotoInput, project_photos
    from facesurv.components import Components
    from features.latents import latent_table
    from flows.generator_steps import promote, train_generator

    params = gen_ws.load_params()
    result = train_generator(gen_ws, params, log=lambda m: None)
    promote(gen_ws, params, result["version"])
    params = _edit(gen_ws, generator={"checkpoint": "models:/facesurv-generator@champion"},
                   projection={"steps": 2, "loss": "mse"})
    projection = Components(gen_ws, params).projection()
    photo = gen_ws.root / "train-photos" / "p00.png"
    run = project_photos(projection, [PhotoInput("p00", str(photo), root=str(photo.parent))],
                         shard_dir=tmp_path / "shards", batch_size=1)
    assert run.provenance["generator"]["version"] == "facesurv-generator v1"
    table = latent_table(run.results, run.provenance)
    assert table.column("generator_version").to_pylist() == ["facesurv-generator v1"]


def test_tampered_registry_copy_is_refused(gen_ws):
    from flows.generator_steps import train_generator
    from ground.errors import DataError
    from training.generator_registry import resolve_generator

    params = gen_ws.load_params()
    train_generator(gen_ws, params, log=lambda m: None)
    client, cache = _client(gen_ws, params), gen_ws.root / "cache"
    got = resolve_generator(client, "models:/facesurv-generator/1", cache_dir=cache)
    assert got.label == "facesurv-generator v1" and (got.path / "generator.safetensors").is_file()
    weights = got.path / "generator.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="sha256 .* differs from the registered"):
        resolve_generator(client, "models:/facesurv-generator/1", cache_dir=cache)
    assert not got.path.exists()  # the bad copy is gone; the next resolve downloads it again
    assert resolve_generator(client, "models:/facesurv-generator/1", cache_dir=cache).sha256 == got.sha256


@pytest.mark.parametrize("uri, match", [
    ("models:/facesurv-generator", "models:/NAME@ALIAS"),
    ("models:/facesurv-generator@", "models:/NAME@ALIAS"),
    ("models:/a/b/c", "models:/NAME@ALIAS"),
])
def test_bad_registry_uri(uri, match):
    from ground.errors import ConfigError
    from training.generator_registry import parse_uri

    with pytest.raises(ConfigError, match=match):
        parse_uri(uri)


def test_missing_alias_and_version(gen_ws):
    from ground.errors import DataError
    from training.generator_registry import promote_generator, resolve_generator

    params = gen_ws.load_params()
    client = _client(gen_ws, params)
    with pytest.raises(DataError, match="no alias @champion of 'facesurv-generator'.*facesurv generator train"):
        resolve_generator(client, "models:/facesurv-generator@champion", cache_dir=gen_ws.root / "c")
    with pytest.raises(DataError, match="has no version 7 .versions: none."):
        promote_generator(client, name="facesurv-generator", version="7")


def test_interrupted_training_resumes_to_the_same_generator(gen_ws, tmp_path):
    """Half the kimg, then the rest in a second call, gives the uninterrupted run's weights."""
    from flows.generator_steps import train_generator

    params = gen_ws.load_params()
    first = train_generator(gen_ws, params, kimg=0.024, register=False, log=lambda m: None)
    lines: list[str] = []
    resumed = train_generator(gen_ws, params, log=lines.append)
    assert resumed["run_name"] == first["run_name"] and resumed["kimg"] == pytest.approx(0.048)
    assert any("resuming from its snapshot at 0.024 kimg" in line for line in lines)
    assert resumed["mlflow_run_id"] == first["mlflow_run_id"]

    other = _gen_ws(tmp_path / "other")
    straight = train_generator(other, other.load_params(), log=lambda m: None)
    assert straight["run_name"] == resumed["run_name"] and straight["sha256"] == resumed["sha256"]


@pytest.mark.parametrize("section, key, value, match", [
    ("generator_training", "start", "warm", "must be 'scratch'"),
    ("generator_training", "kimg", 0, "kimg must be > 0"),
    ("generator_training", "ada_mode", "always", "must be 'ada', 'fixed' or 'off'"),
    ("generator_training", "ada_p", 0.3, "must be 0 when ada_mode is 'off'"),
    ("generator_training", "device", "tpu", "must be auto, cpu, cuda"),
])
def test_bad_training_settings(workspace, section, key, value, match):
    from ground.errors import ConfigError

    extra = {"ada_mode": "off"} if key == "ada_p" else {}
    with pytest.raises(ConfigError, match=match):
        _edit(workspace, **{section: {key: value, **extra}})


def test_finetune_needs_a_checkpoint(gen_ws):
    from flows.generator_steps import train_generator
    from ground.errors import ConfigError

    params = _edit(gen_ws, generator_training={"start": "finetune"})
    with pytest.raises(ConfigError, match="generator.checkpoint is null"):
        train_generator(gen_ws, params, log=lambda m: None)


def test_finetune_records_its_parent(gen_ws):
    from flows.generator_steps import train_generator

    params = gen_ws.load_params()
    base = train_generator(gen_ws, params, log=lambda m: None)
    from flows.generator_steps import promote

    promote(gen_ws, params, base["version"])
    params = _edit(gen_ws, generator={"checkpoint": "models:/facesurv-generator@champion"},
                   generator_training={"start": "finetune", "kimg": 0.016})
    tuned = train_generator(gen_ws, params, log=lambda m: None)
    assert tuned["parent"] == "facesurv-generator v1" and tuned["version"] == "2"
    assert tuned["sha256"] != base["sha256"]
    tags = dict(_client(gen_ws, params).get_model_version("facesurv-generator", "2").tags)
    assert tags["parent"] == "facesurv-generator v1" and tags["start"] == "finetune"


def test_no_photos_is_a_clear_error(workspace):
    from flows.generator_steps import train_generator
    from ground.errors import DataError

    params = _edit(workspace, generator=GEN, generator_training=TRAIN)
    with pytest.raises(DataError, match="no aligned photos to train a generator on"):
        train_generator(workspace, params, log=lambda m: None)


def test_demo_trains_promotes_and_switches_the_workspace(gen_ws):
    from demo.runner import DemoContext, train_demo_generator
    from facesurv.components import Components

    params = _edit(gen_ws, demo={"train_generator": True})
    lines: list[str] = []
    ctx = DemoContext(ws=gen_ws, params=params, log=lines.append)
    detail = train_demo_generator(ctx)
    assert "generator facesurv-generator v1 trained" in detail and "promoted" in detail
    written = gen_ws.load_params()
    assert written.generator.checkpoint == "models:/facesurv-generator@champion" == ctx.params.generator.checkpoint
    _, info = Components(gen_ws, written).generator()
    assert info.version == "facesurv-generator v1"
    assert any("kimg" in line for line in lines)


def test_finetune_from_an_nvidia_pickle_continues_its_discriminator(gen_ws, tiny_G, monkeypatch, layouts):
    from flows.generator_steps import train_generator

    (gen_ws.root / "ffhq.pkl").write_bytes(layouts.nvidia_pickle_bytes(tiny_G, monkeypatch))
    monkeypatch.undo()  # NVIDIA's modules were only needed to write the file; the loader never imports them
    params = _edit(gen_ws, generator={"checkpoint": "ffhq.pkl"},
                   generator_training={"start": "finetune", "kimg": 0.008, "photos": "train-photos"})
    lines: list[str] = []
    result = train_generator(gen_ws, params, log=lines.append)
    assert result["discriminator"] == "imported from the checkpoint" and result["kind"] == "finetune"
    assert result["parent"].startswith(str(gen_ws.root / "ffhq.pkl")) and tiny_G.img_resolution == 16
    assert any("discriminator: imported from the checkpoint" in line for line in lines)


def test_a_link_in_the_photo_folder_is_never_read(gen_ws, tmp_path):
    from flows.generator_steps import training_photos

    secret = tmp_path / "outside.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(secret)
    (gen_ws.root / "train-photos" / "zz-link.png").symlink_to(secret)
    photos = training_photos(gen_ws, gen_ws.load_params())
    assert [p.name for p in photos.paths] == [f"p{i:02d}.png" for i in range(10)]
    assert photos.lineage["photos_refused"] == 1 and photos.refused[0].startswith("zz-link.png:")
