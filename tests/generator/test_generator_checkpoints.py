"""NVIDIA .pkl and rosinality .pt import: same images as the source network, and no code execution."""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys

import pytest
import torch

from embedding.stylegan2 import (
    CheckpointError,
    Generator,
    GeneratorConfig,
    UnsafeCheckpointError,
    load_generator,
)
from embedding.stylegan2.checkpoints import restricted_load


def _same_images(G1, G2, n=3):
    z = torch.randn(n, G1.z_dim, generator=torch.Generator().manual_seed(3))
    for psi in (1.0, 0.7):
        a = G1(z, truncation_psi=psi)
        b = G2(z, truncation_psi=psi)
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_nvidia_pickle_round_trip(tiny_G, tmp_path, monkeypatch, layouts):
    blob = layouts.nvidia_pickle_bytes(tiny_G, monkeypatch)
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        monkeypatch.delitem(sys.modules, name)  # loading must not need NVIDIA's code
    (tmp_path / "net.pkl").write_bytes(blob)
    G, info = load_generator(tmp_path / "net.pkl")
    assert not info.is_random_init and info.source == str(tmp_path / "net.pkl")
    cfg = info.config
    assert (cfg["resolution"], cfg["channel_base"], cfg["channel_max"], cfg["mapping_layers"]) == (16, 128, 16, 3)
    assert cfg["num_fp16_res"] == 4 and cfg["lr_multiplier"] == tiny_G.config.lr_multiplier
    _same_images(G, tiny_G)
    assert torch.equal(G.w_avg, tiny_G.w_avg)
    for k, v in tiny_G.state_dict().items():
        assert torch.equal(G.state_dict()[k], v), k
    G2, info2 = load_generator(tmp_path / "net.pkl")
    assert info2.sha256 == info.sha256  # deterministic conversion


def test_nvidia_pickle_with_conv_clamp_and_default_lr(tmp_path, monkeypatch, layouts):
    cfg = GeneratorConfig(z_dim=32, w_dim=32, mapping_layers=2, resolution=8, channel_base=64, channel_max=8,
                          conv_clamp=0.3, lr_multiplier=0.01)
    G0 = layouts.trained_like(Generator(cfg, seed=2)).eval()
    (tmp_path / "net.pkl").write_bytes(layouts.nvidia_pickle_bytes(G0, monkeypatch, lr_in_kwargs=False))
    G, info = load_generator(tmp_path / "net.pkl")
    assert info.config["conv_clamp"] == 0.3 and info.config["lr_multiplier"] == 0.01
    _same_images(G, G0)


def test_nvidia_pickle_refuses_conditional_and_missing_g_ema(tiny_G, tmp_path, monkeypatch, layouts):
    blob = layouts.nvidia_pickle_bytes(tiny_G, monkeypatch)
    root = restricted_load(blob)
    root["G_ema"].state["_init_kwargs"]["c_dim"] = 10
    with pytest.raises(CheckpointError, match=r"conditional generators \(c_dim > 0\)"):
        from embedding.stylegan2.checkpoints import nvidia_config

        nvidia_config(root["G_ema"].state["_init_kwargs"])
    (tmp_path / "x.pkl").write_bytes(pickle.dumps({"G": 1, "D": 2}))
    with pytest.raises(CheckpointError, match="no G_ema network in this pickle"):
        load_generator(tmp_path / "x.pkl")


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _evil_cases(marker):
    return {
        "os.system": _Evil(os.system, f"touch {marker}"),
        "builtins.eval": _Evil(eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.call": _Evil(subprocess.call, ["touch", str(marker)]),
    }


@pytest.mark.parametrize("case", ["os.system", "builtins.eval", "subprocess.call"])
def test_malicious_pickle_is_refused_without_running(case, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"G_ema": _evil_cases(marker)[case]})
    (tmp_path / "evil.pkl").write_bytes(payload)
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load: the pickle references (posix|os|nt|builtins|subprocess)\.(system|eval|call)"):
        load_generator(tmp_path / "evil.pkl")
    assert not marker.exists()
    # Control: the same bytes do run code under plain pickle, so the assertion above can fail.
    if case == "builtins.eval":
        pickle.loads(payload)
        assert marker.exists()


def test_malicious_global_inside_nvidia_layout_is_refused(tiny_G, tmp_path, monkeypatch, layouts):
    marker = tmp_path / "pwned"
    blob = layouts.nvidia_pickle_bytes(tiny_G, monkeypatch, extra={"training_set_kwargs": _Evil(os.system, f"touch {marker}")})
    (tmp_path / "evil.pkl").write_bytes(blob)
    with pytest.raises(UnsafeCheckpointError, match=r"\.system"):
        load_generator(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_malicious_storage_blob_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    inner = pickle.dumps(_Evil(os.system, f"touch {marker}"), protocol=2)

    class _EvilStorage:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (inner,))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": _EvilStorage()}))
    with pytest.raises(UnsafeCheckpointError, match="tensor storage in the pickle is not plain data"):
        load_generator(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_not_a_pickle_and_truncated_pickle(tiny_G, tmp_path, monkeypatch, layouts):
    (tmp_path / "text.pkl").write_text("hello, not a pickle\n")
    with pytest.raises(CheckpointError, match="not a pickle file"):
        load_generator(tmp_path / "text.pkl")
    blob = layouts.nvidia_pickle_bytes(tiny_G, monkeypatch)
    (tmp_path / "cut.pkl").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(CheckpointError, match="not a readable pickle"):
        load_generator(tmp_path / "cut.pkl")


def test_rosinality_round_trip(tiny_G, tmp_path, layouts):
    torch.save(layouts.rosinality_checkpoint(tiny_G), tmp_path / "550000.pt")
    G, info = load_generator(tmp_path / "550000.pt")
    c = info.config
    assert (c["resolution"], c["channel_base"], c["channel_max"], c["mapping_layers"], c["z_dim"]) == (16, 128, 16, 3, 64)
    assert not info.is_random_init and "rosinality" in info.description
    _same_images(G, tiny_G)
    # Converted-weights layout: just g_ema and latent_avg.
    torch.save({"g_ema": layouts.rosinality_state(tiny_G), "latent_avg": tiny_G.w_avg.clone()}, tmp_path / "conv.pt")
    G2, info2 = load_generator(tmp_path / "conv.pt")
    assert info2.sha256 == info.sha256


def test_rosinality_ffhq_channel_layout_inferred():
    # rosinality's channel_multiplier=2 widths equal NVIDIA's channel_base 32768 / channel_max 512.
    from embedding.stylegan2.checkpoints import _infer_rosinality_config

    chans = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
    sd = {"input.input": torch.zeros(1, 512, 4, 4), "conv1.conv.modulation.weight": torch.zeros(512, 512),
          "to_rgb1.conv.weight": torch.zeros(1, 3, 512, 1, 1), "style.1.weight": torch.zeros(512, 512)}
    for j, r in enumerate([8, 16, 32, 64, 128, 256]):
        sd[f"convs.{2 * j}.conv.weight"] = torch.zeros(1, chans[r], chans[r // 2], 3, 3)
        sd[f"to_rgbs.{j}.conv.weight"] = torch.zeros(1, 3, chans[r], 1, 1)
    cfg = _infer_rosinality_config(sd, argparse.Namespace(lr_mlp=0.01), "x")
    assert (cfg.resolution, cfg.channel_base, cfg.channel_max, cfg.mapping_layers) == (256, 32768, 512, 1)


def test_malicious_pt_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"g_ema": _Evil(os.system, f"touch {marker}")}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load: the file references (posix|os)\.system"):
        load_generator(tmp_path / "evil.pt")
    assert not marker.exists()


def test_truncated_pt_and_wrong_content(tiny_G, tmp_path, layouts):
    torch.save(layouts.rosinality_checkpoint(tiny_G), tmp_path / "full.pt")
    blob = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_generator(tmp_path / "cut.pt")
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no 'g_ema' generator state dict"):
        load_generator(tmp_path / "other.pt")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_accepts_plain_data(protocol):
    import collections

    import numpy as np

    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float64(2.5), "n": None,
           "od": collections.OrderedDict(x=1), "set": {1, 2}, "t": torch.ones(2, 2)[:, 0], "b": b"xyz",
           "p": torch.nn.Parameter(torch.zeros(3), requires_grad=False), "dt": torch.float16}
    back = restricted_load(pickle.dumps(obj, protocol=protocol))
    assert np.array_equal(back["a"], obj["a"]) and back["s"] == 2.5 and back["set"] == {1, 2}
    assert torch.equal(back["t"], obj["t"]) and back["b"] == b"xyz" and back["dt"] is torch.float16
    assert isinstance(back["p"], torch.nn.Parameter) and torch.equal(back["p"], obj["p"])
