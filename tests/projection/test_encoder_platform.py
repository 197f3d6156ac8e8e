"""The generator's encoder on the platform: `facesurv generator encoder` trains it once per generator and
settings, tracks it in MLflow, and `projection.init: encoder` starts every projection from it, with its
sha256 in the shards' provenance and the run key."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import yaml

from facesurv.cli import main

from .test_projection_cli import _photos, _tiny_workspace


def _encoder_workspace(workspace, **projection):
    ws = _tiny_workspace(workspace)
    raw = yaml.safe_load(ws.params_path.read_text())
    raw["encoder"].update(steps=30, batch_size=4, width=16)
    raw["projection"].update(projection)
    ws.params_path.write_text(yaml.safe_dump(raw))
    return ws


def test_the_encoder_is_trained_once_per_generator_and_tracked(workspace, capsys):
    ws = _encoder_workspace(workspace)
    assert main(["generator", "encoder", "--workspace", str(ws.root)]) == 0
    out = capsys.readouterr().out
    assert "trained for generator" in out and "projection.init is mean" in out
    files = list((ws.root / "generators" / "encoders").glob("*/encoder.safetensors"))
    assert len(files) == 1
    first = files[0].read_bytes()
    assert main(["generator", "encoder", "--workspace", str(ws.root)]) == 0
    assert "already trained" in capsys.readouterr().out and files[0].read_bytes() == first

    from mlflow import MlflowClient

    from facesurv.components import components

    params = ws.load_params()
    client = MlflowClient(components(ws, params).tracking_uri)
    exp = client.get_experiment_by_name("facesurv-generator")
    runs = client.search_runs([exp.experiment_id], "tags.`facesurv.kind` = 'encoder'")
    assert len(runs) == 1 and runs[0].data.tags["generator_sha256"] == components(ws, params).generator()[1].sha256

    raw = yaml.safe_load(ws.params_path.read_text())
    raw["generator"]["seed"] = 5                              # another generator: another encoder
    ws.params_path.write_text(yaml.safe_dump(raw))
    assert main(["generator", "encoder", "--workspace", str(ws.root)]) == 0
    assert len(list((ws.root / "generators" / "encoders").glob("*/encoder.safetensors"))) == 2


def test_projection_from_the_encoder_records_it_and_keys_its_shards(workspace, rendered_photos, tmp_path, capsys):
    ws = _encoder_workspace(workspace, init="encoder", steps=2)
    aligned = tmp_path / "aligned"
    _photos(aligned, rendered_photos[1], 3)
    code = main(["project", str(aligned), str(tmp_path / "out"), "--workspace", str(ws.root)])
    assert code != 0 and "no encoder is trained for generator" in capsys.readouterr().err
    assert not (tmp_path / "out" / "latents.parquet").exists()

    assert main(["generator", "encoder", "--workspace", str(ws.root)]) == 0
    sha = next((ws.root / "generators" / "encoders").glob("*/encoder.safetensors"))
    assert main(["project", str(aligned), str(tmp_path / "out"), "--workspace", str(ws.root)]) == 0
    table = pq.read_table(tmp_path / "out" / "latents.parquet")
    provenance = json.loads(table.schema.metadata[b"facesurv.provenance"])
    import hashlib

    assert provenance["encoder"]["sha256"] == hashlib.sha256(sha.read_bytes()).hexdigest()
    enc_key = table["run_key"][0].as_py()

    raw = yaml.safe_load(ws.params_path.read_text())
    raw["projection"]["init"] = "mean"
    ws.params_path.write_text(yaml.safe_dump(raw))
    assert main(["project", str(aligned), str(tmp_path / "out2"), "--workspace", str(ws.root)]) == 0
    mean = pq.read_table(tmp_path / "out2" / "latents.parquet")
    assert mean["run_key"][0].as_py() != enc_key and "encoder" not in json.loads(
        mean.schema.metadata[b"facesurv.provenance"])
    a = np.stack(table.sort_by("photo_id")["latent"].to_numpy(zero_copy_only=False))
    b = np.stack(mean.sort_by("photo_id")["latent"].to_numpy(zero_copy_only=False))
    assert not np.allclose(a, b)                               # the start changed the result
