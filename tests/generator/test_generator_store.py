"""The project's safetensors + config.json format, checked against the real safetensors package."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from embedding.stylegan2 import CheckpointError, load_generator, save_generator
from embedding.stylegan2.store import StoreError, dumps_safetensors, loads_safetensors, sha256_file


def test_save_load_round_trip_with_stable_sha(tiny_G, tmp_path):
    sha1 = save_generator(tiny_G, tmp_path / "a", source="unit-test")
    sha2 = save_generator(tiny_G, tmp_path / "b")
    assert sha1 == sha2 == sha256_file(tmp_path / "a" / "generator.safetensors")
    assert (tmp_path / "a" / "generator.safetensors").read_bytes() == (tmp_path / "b" / "generator.safetensors").read_bytes()
    doc = json.loads((tmp_path / "a" / "config.json").read_text())
    assert doc["sha256"] == sha1 and doc["config"] == tiny_G.config.to_dict() and doc["source"] == "unit-test"
    G2, info = load_generator(tmp_path / "a")
    assert info.sha256 == sha1 and not info.is_random_init and info.config == tiny_G.config.to_dict()
    z = torch.randn(2, tiny_G.z_dim)
    assert torch.equal(G2(z), tiny_G(z))
    G3, info3 = load_generator(tmp_path / "a" / "generator.safetensors")
    assert info3.sha256 == sha1
    # Different weights, different hash.
    with torch.no_grad():
        G2.synthesis.b4.const[0, 0, 0] += 1
    assert save_generator(G2, tmp_path / "c") != sha1


def test_saved_random_init_stays_labelled(tiny_config, tmp_path):
    G, info = load_generator(None, config=tiny_config, seed=4)
    assert save_generator(G, tmp_path / "g") == info.sha256
    G2, info2 = load_generator(tmp_path / "g")
    assert info2.is_random_init and info2.sha256 == info.sha256
    assert info2.description.startswith("random-init stand-in generator (seed 4)")


def test_our_writer_is_read_by_safetensors(tmp_path):
    tensors = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.tensor(2.5),
               "c": torch.tensor([1, -2], dtype=torch.int64), "h": torch.tensor([0.5, 1.5], dtype=torch.float16),
               "bf": torch.tensor([1.0, -3.0], dtype=torch.bfloat16), "e": torch.zeros(0, 4)}
    (tmp_path / "x.safetensors").write_bytes(dumps_safetensors(tensors, {"k": "v"}))
    back = load_file(tmp_path / "x.safetensors")
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    from safetensors import safe_open

    with safe_open(tmp_path / "x.safetensors", framework="pt") as f:
        assert f.metadata() == {"k": "v"}


def test_safetensors_writer_is_read_by_ours(tmp_path):
    tensors = {"w": torch.randn(3, 4), "n": torch.tensor([7, 8], dtype=torch.int32), "s": torch.tensor(1.0),
               "bf": torch.randn(5).to(torch.bfloat16)}
    save_file(tensors, tmp_path / "y.safetensors", metadata={"format": "x"})
    back, meta = loads_safetensors((tmp_path / "y.safetensors").read_bytes())
    assert meta == {"format": "x"}
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def test_generator_file_readable_by_safetensors(tiny_G, tmp_path):
    save_generator(tiny_G, tmp_path)
    back = load_file(tmp_path / "generator.safetensors")
    sd = tiny_G.state_dict()
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_truncated_and_corrupt_files_are_refused(tiny_G, tmp_path):
    save_generator(tiny_G, tmp_path / "g")
    blob = (tmp_path / "g" / "generator.safetensors").read_bytes()
    with pytest.raises(StoreError, match="offsets .* inconsistent|does not fit"):
        loads_safetensors(blob[:-10])
    with pytest.raises(StoreError, match="too short"):
        loads_safetensors(b"\x01\x02")
    with pytest.raises(StoreError, match="does not fit"):
        loads_safetensors(b"\xff" * 8 + b"{}")
    with pytest.raises(StoreError, match="not valid JSON"):
        loads_safetensors(b"\x04\x00\x00\x00\x00\x00\x00\x00{{{{")
    (tmp_path / "g" / "generator.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="generator.safetensors"):
        load_generator(tmp_path / "g")


def test_foreign_safetensors_is_not_a_generator(tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not a facesurv generator file"):
        load_generator(tmp_path / "other.safetensors")


def test_missing_checkpoint_says_how_to_fix(tmp_path):
    with pytest.raises(CheckpointError, match="generator checkpoint not found .* generator.checkpoint"):
        load_generator(tmp_path / "nope.pkl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no generator.safetensors here"):
        load_generator(tmp_path / "empty")
    (tmp_path / "x.onnx").write_bytes(b"1")
    with pytest.raises(CheckpointError, match="unknown checkpoint type '.onnx'"):
        load_generator(tmp_path / "x.onnx")


def _raw_safetensors(header: bytes, data: bytes = b"") -> bytes:
    import struct

    return struct.pack("<Q", len(header)) + header + data


def test_deeply_nested_header_is_a_clean_error():
    blob = _raw_safetensors(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(StoreError, match="nested too deeply"):
        loads_safetensors(blob, where="crafted")


def test_shape_whose_element_count_wraps_is_refused():
    # 2**32 * 2**32 elements wrap to 0 in int64; an empty data span must not pass for them
    header = json.dumps({"w": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}).encode()
    with pytest.raises(StoreError, match="inconsistent with shape"):
        loads_safetensors(_raw_safetensors(header), where="crafted")


def test_generator_file_with_a_crafted_config_is_a_clean_error(tmp_path):
    from embedding.stylegan2.store import FORMAT_NAME, FORMAT_VERSION, generator_from_bytes

    config = {"resolution": 8, "z_dim": 10**9, "w_dim": 8, "channel_base": 64, "channel_max": 8}
    blob = dumps_safetensors({"x": torch.zeros(1)}, {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                                                     "config": json.dumps(config)})
    with pytest.raises(StoreError, match="invalid generator config.*z_dim must be an integer from 1 to 8192"):
        generator_from_bytes(blob, where="crafted")
