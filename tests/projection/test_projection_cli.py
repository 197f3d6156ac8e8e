"""`facesurv project`: latents.parquet schema and metadata, failures reported, reruns reuse shards."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from facesurv.cli import main
from features.latents import shard_table

from .conftest import TINY


def _tiny_workspace(workspace):
    raw = yaml.safe_load(workspace.params_path.read_text())
    raw["generator"].update(TINY)
    raw["projection"].update(steps=3, w_avg_samples=64, batch_size=4, device="cpu")
    workspace.params_path.write_text(yaml.safe_dump(raw))
    return workspace


def _photos(folder, img, n):
    folder.mkdir()
    for i in range(n):
        arr = ((img[i].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(arr, mode="RGB").resize((32, 32)).save(folder / f"photo{i}.png")


def test_project_writes_latents_and_reports_failures(workspace, rendered_photos, tmp_path, capsys):
    ws = _tiny_workspace(workspace)
    aligned = tmp_path / "aligned"
    _photos(aligned, rendered_photos[1], 5)
    (aligned / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"

    code = main(["project", str(aligned), str(out), "--workspace", str(ws.root)])
    err = capsys.readouterr().err
    assert code == 2 and "1 of 6 photos could not be projected" in err and "failures.csv" in err
    assert "STAND-IN" in err                          # the stand-ins are announced

    table = pq.read_table(out / "latents.parquet")
    assert table.num_rows == 5 and sorted(table["photo_id"].to_pylist()) == [f"photo{i}" for i in range(5)]
    assert table.schema.field("latent").type == pa.list_(pa.float32(), 512)
    # the one latent table: what the nightly flow validates from its shards
    shard = shard_table(next((out / "shards").glob("shard-*.npz")))
    assert shard.schema.equals(table.schema, check_metadata=False)
    row = table.slice(0, 1).to_pylist()[0]
    assert row["space"] == "w" and row["steps"] == 3 and row["generator_is_random_init"] is True
    # the pixel loss (params.yaml's) loads no perceptual network, as in the flow
    assert (row["perceptual_network"], row["perceptual_sha256"], row["perceptual_is_stand_in"]) == ("none", None, False)
    assert np.isnan(row["perceptual_loss"]) and row["mse"] > 0 and len(row["photo_sha256"]) == 64
    meta = table.schema.metadata
    assert b"STAND-INS IN USE" in meta[b"facesurv.stand_in"] and b"random" in meta[b"facesurv.stand_in"]
    assert json.loads(meta[b"facesurv.provenance"])["run_key"] == row["run_key"]

    with open(out / "failures.csv", newline="") as fh:
        failures = list(csv.DictReader(fh))
    assert [f["photo_id"] for f in failures] == ["broken"] and failures[0]["reason"]

    (aligned / "broken.png").unlink()
    code = main(["project", str(aligned), str(out), "--workspace", str(ws.root)])
    assert code == 0 and "5 reused from shards" in capsys.readouterr().out
    again = pq.read_table(out / "latents.parquet")
    assert again["latent"].to_pylist() == table["latent"].to_pylist()


def test_project_space_z_option(workspace, rendered_photos, tmp_path):
    ws = _tiny_workspace(workspace)
    aligned = tmp_path / "aligned"
    _photos(aligned, rendered_photos[1], 2)
    code = main(["project", str(aligned), str(tmp_path / "out"), "--space", "z", "--steps", "2",
                 "--workspace", str(ws.root)])
    assert code == 0
    table = pq.read_table(tmp_path / "out" / "latents.parquet")
    assert set(table["space"].to_pylist()) == {"z"} and set(table["steps"].to_pylist()) == {2}


def test_project_uses_align_manifest(workspace, rendered_photos, tmp_path):
    ws = _tiny_workspace(workspace)
    aligned = tmp_path / "aligned"
    _photos(aligned, rendered_photos[1], 2)
    (aligned / "manifest.csv").write_text("photo_id,status,output_file\nphoto0,aligned,photo0.png\n"
                                          "photo1,quarantined,\n")
    assert main(["project", str(aligned), str(tmp_path / "out"), "--workspace", str(ws.root)]) == 0
    assert pq.read_table(tmp_path / "out" / "latents.parquet")["photo_id"].to_pylist() == ["photo0"]


def test_project_missing_dir(workspace, tmp_path, capsys):
    code = main(["project", str(tmp_path / "nope"), str(tmp_path / "out"), "--workspace", str(workspace.root)])
    assert code == 2 and "no such directory" in capsys.readouterr().err


def test_project_bad_space(workspace, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    code = main(["project", str(tmp_path / "a"), str(tmp_path / "out"), "--space", "q",
                 "--workspace", str(workspace.root)])
    assert code == 2 and "projection.space" in capsys.readouterr().err


def test_a_perceptual_loss_names_its_network_and_keys_the_shards(workspace, rendered_photos, stlpips, tmp_path, capsys):
    ws = _tiny_workspace(workspace)
    raw = yaml.safe_load(ws.params_path.read_text())
    raw["perceptual"]["network"] = "stlpips"                          # the fallback, named as a stand-in
    ws.params_path.write_text(yaml.safe_dump(raw))
    aligned, out = tmp_path / "aligned", tmp_path / "out"
    _photos(aligned, rendered_photos[1], 2)
    args = ["project", str(aligned), str(out), "--loss", "mse+perceptual", "--steps", "2", "--workspace", str(ws.root)]
    assert main(args) == 0
    assert "perceptual network: " in capsys.readouterr().err          # the stand-in weights are announced
    row = pq.read_table(out / "latents.parquet").slice(0, 1).to_pylist()[0]
    assert (row["perceptual_network"], row["perceptual_sha256"], row["perceptual_is_stand_in"]) == \
        ("stlpips", stlpips[1].sha256, True)
    assert np.isfinite(row["perceptual_loss"])
    assert main(args) == 0 and "2 reused from shards" in capsys.readouterr().out
    raw = yaml.safe_load(ws.params_path.read_text())
    raw["perceptual"]["resize"] = 128                                 # the same weights, another distance
    ws.params_path.write_text(yaml.safe_dump(raw))
    assert main(args) == 0 and "(2 projected, 0 reused from shards)" in capsys.readouterr().out


def test_the_default_perceptual_network_is_the_real_lpips_vgg16_where_installed(workspace, rendered_photos, tmp_path,
                                                                                capsys):
    from embedding.perceptual import LPIPS_VGG16_SHA256, find_lpips_vgg16_weights

    if find_lpips_vgg16_weights() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("make install must install the real LPIPS-VGG16")
        pytest.skip("real LPIPS-VGG16 not installed here (run make install)")
    ws = _tiny_workspace(workspace)
    assert yaml.safe_load(ws.params_path.read_text())["perceptual"]["network"] == "auto"
    aligned, out = tmp_path / "aligned", tmp_path / "out"
    _photos(aligned, rendered_photos[1], 2)
    assert main(["project", str(aligned), str(out), "--loss", "perceptual", "--steps", "1",
                 "--workspace", str(ws.root)]) == 0
    assert "perceptual network: " not in capsys.readouterr().err      # nothing stands in
    row = pq.read_table(out / "latents.parquet").slice(0, 1).to_pylist()[0]
    assert (row["perceptual_network"], row["perceptual_sha256"], row["perceptual_is_stand_in"]) == \
        ("lpips-vgg16", LPIPS_VGG16_SHA256, False)
