"""Importing the discriminator saved beside a generator (NVIDIA's D, rosinality's 'd'), for fine-tuning."""

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
    Discriminator,
    UnsafeCheckpointError,
    load_discriminator,
    load_generator,
    save_generator,
)
from embedding.stylegan2.checkpoints import (
    discriminator_from_nvidia_pickle,
    discriminator_from_rosinality,
    load_nvidia_discriminator,
)


def _batch(D: Discriminator, n: int = 8) -> torch.Tensor:
    c, r = D.img_channels, D.img_resolution
    return torch.randn(n, c, r, r, generator=torch.Generator().manual_seed(21)).clamp(-1, 1)


def _assert_same_network(D: Discriminator, D0: Discriminator) -> None:
    assert D.config == D0.config
    sd, sd0 = D.state_dict(), D0.state_dict()
    assert list(sd) == list(sd0)
    for k, v in sd0.items():
        assert sd[k].dtype == torch.float32 and torch.equal(sd[k], v), k
    x = _batch(D0)
    with torch.no_grad():
        assert torch.equal(D(x), D0(x))


def _child(tree, path: str):
    for part in path.split("."):
        tree = tree.state["_modules"][part]
    return tree


def _drop_nvidia_modules(monkeypatch) -> None:
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        monkeypatch.delitem(sys.modules, name)  # loading must not need NVIDIA's code


# --------------------------------------------------------------------------------------------
# NVIDIA stylegan2-ada-pytorch D
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {"mbstd_group_size": 2, "mbstd_features": 2}, {"mbstd_features": 0}])
def test_nvidia_discriminator_round_trip(options, tiny_G, tmp_path, monkeypatch, layouts):
    D0 = layouts.seeded_discriminator(tiny_G, **options)
    blob = layouts.nvidia_pickle_bytes(tiny_G, monkeypatch, D=D0)
    _drop_nvidia_modules(monkeypatch)
    (tmp_path / "net.pkl").write_bytes(blob)
    D = load_discriminator(tmp_path / "net.pkl")
    assert isinstance(D, Discriminator)
    _assert_same_network(D, D0)
    # as the constructor leaves it: train mode, grads on (the trainer decides the rest)
    assert D.training and all(p.requires_grad for p in D.parameters())
    _assert_same_network(load_nvidia_discriminator(tmp_path / "net.pkl"), D0)
    _assert_same_network(discriminator_from_nvidia_pickle(blob, where="x"), D0)
    G, _ = load_generator(tmp_path / "net.pkl")  # the generator still loads from the same file
    assert G.img_resolution == D.img_resolution


def test_nvidia_discriminator_variants_that_are_accepted(tiny_G, monkeypatch, layouts):
    """What TF-converted and freeze_layers snapshots look like: still the same D."""
    D0 = layouts.seeded_discriminator(tiny_G)

    def edit(tree):
        kw = tree.state["_init_kwargs"]
        kw.update(conv_clamp=None, num_fp16_res=0, cmap_dim=0)
        kw["epilogue_kwargs"].update(mbstd_group_size=None, activation="lrelu")  # None: the whole batch
        kw["block_kwargs"].update(activation="lrelu", resample_filter=[1, 3, 3, 1], freeze_layers=2)
        kw["mapping_kwargs"].update(num_layers=0, lr_multiplier=0.1)  # unused without c_dim
        fromrgb = _child(tree, "b16.fromrgb").state  # frozen layers keep their weights as buffers
        fromrgb["_buffers"]["weight"] = fromrgb["_parameters"].pop("weight").detach()
        _child(tree, "b8").state["_buffers"]["resample_filter"] *= 7  # any scale of [1,3,3,1]

    D = discriminator_from_nvidia_pickle(layouts.nvidia_pickle_bytes(tiny_G, monkeypatch, D=D0, edit_D=edit))
    assert D.config.mbstd_group_size == 4  # the paper's group (NVIDIA's train.py sets its own on resume too)
    for k, v in D0.state_dict().items():
        assert torch.equal(D.state_dict()[k], v), k


def test_pickle_without_discriminator_gives_none(tiny_G, tmp_path, monkeypatch, layouts):
    blob = layouts.nvidia_pickle_bytes(tiny_G, monkeypatch, with_D=False)
    assert discriminator_from_nvidia_pickle(blob) is None
    (tmp_path / "g_only.pkl").write_bytes(blob)
    assert load_discriminator(tmp_path / "g_only.pkl") is None
    load_generator(tmp_path / "g_only.pkl")  # a generator-only pickle is still a fine generator file
    (tmp_path / "bare.pkl").write_bytes(pickle.dumps({"G_ema": None}))
    assert load_discriminator(tmp_path / "bare.pkl") is None


def test_sources_without_a_discriminator_give_none(tiny_G, tmp_path, layouts):
    assert load_discriminator(None) is None
    save_generator(tiny_G, tmp_path / "gen")
    assert load_discriminator(tmp_path / "gen") is None
    assert load_discriminator(tmp_path / "gen" / "generator.safetensors") is None
    torch.save({"g_ema": layouts.rosinality_state(tiny_G), "latent_avg": tiny_G.w_avg.clone()}, tmp_path / "ffhq.pt")
    assert load_discriminator(tmp_path / "ffhq.pt") is None  # a converted file holds only g_ema
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_discriminator(tmp_path / "absent.pkl")
    (tmp_path / "net.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint type '.onnx'"):
        load_discriminator(tmp_path / "net.onnx")


def _set(**kwargs):
    def edit(tree):
        tree.state["_init_kwargs"].update(kwargs)
    return edit


def _set_nested(group: str, **kwargs):
    def edit(tree):
        tree.state["_init_kwargs"][group].update(kwargs)
    return edit


def _pop_tensor(path: str, name: str):
    def edit(tree):
        _child(tree, path).state["_parameters"].pop(name)
    return edit


def _put_tensor(path: str, name: str, value: torch.Tensor):
    def edit(tree):
        _child(tree, path).state["_parameters"][name] = torch.nn.Parameter(value, requires_grad=False)
    return edit


def _set_filter(path: str, f: torch.Tensor):
    def edit(tree):
        _child(tree, path).state["_buffers"]["resample_filter"] = f
    return edit


REFUSED = {
    "conditional": (_set(c_dim=10), r"conditional discriminators \(D c_dim=10 > 0\) are not supported"),
    "skip architecture": (_set(architecture="skip"), r"discriminator architecture 'skip' is not supported \(only 'resnet'"),
    "orig architecture": (_set(architecture="orig"), r"discriminator architecture 'orig' is not supported"),
    "unknown kwarg": (_set(use_spectral_norm=True), r"unsupported discriminator options use_spectral_norm \("),
    "unknown epilogue kwarg": (_set_nested("epilogue_kwargs", mbstd_eps=1e-4),
                               r"unsupported discriminator options epilogue_kwargs\.mbstd_eps"),
    "unknown block kwarg": (_set_nested("block_kwargs", kernel_size=5),
                            r"unsupported discriminator options block_kwargs\.kernel_size"),
    "cmap_dim": (_set(cmap_dim=16), r"D cmap_dim=16 is a conditioning option"),
    "activation": (_set_nested("block_kwargs", activation="relu"), r"block_kwargs\.activation='relu' is not supported"),
    "filter kwarg": (_set_nested("block_kwargs", resample_filter=[1, 1]), r"resample_filter=\[1, 1\] is not supported"),
    "filter buffer": (_set_filter("b8.conv1", torch.ones(4, 4)), r"b8\.conv1\.resample_filter is not the standard"),
    "mbstd not dividing": (_set_nested("epilogue_kwargs", mbstd_num_channels=3),
                           r"unsupported discriminator configuration: mbstd_features 3 must divide"),
    "missing kwargs": (lambda t: t.state["_init_kwargs"].pop("img_resolution"), r"D init kwargs lack img_resolution"),
    "missing tensor": (_pop_tensor("b8.conv0", "bias"), r"D lacks tensor\(s\) b8\.conv0\.bias that a 'resnet' D with "
                                                       r"resolution 16, channel_base 128"),
    "extra tensor": (_put_tensor("b4", "cmap", torch.zeros(3)), r"D has tensor\(s\) b4\.cmap that a 'resnet' D"),
    "wrong shape": (_put_tensor("b8.conv0", "weight", torch.zeros(16, 16, 1, 1)),
                    r"D tensor b8\.conv0\.weight is torch\.float32 of shape \(16, 16, 1, 1\), but a 'resnet' D with "
                    r".* needs float of shape \(16, 16, 3, 3\)"),
    "not a D": (lambda t: setattr(t, "class_name", "Generator"), r"D is a Generator, not a Discriminator network"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_unsupported_discriminators_are_refused_by_name(case, tiny_G, tmp_path, monkeypatch, layouts):
    edit, pattern = REFUSED[case]
    (tmp_path / "net.pkl").write_bytes(layouts.nvidia_pickle_bytes(tiny_G, monkeypatch, edit_D=edit))
    with pytest.raises(CheckpointError, match=pattern) as err:
        load_discriminator(tmp_path / "net.pkl")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "net.pkl") + ": ")


def test_discriminator_resolution_must_be_the_generators(tiny_G, monkeypatch, layouts):
    D8 = layouts.seeded_discriminator(tiny_G, resolution=8)
    blob = layouts.nvidia_pickle_bytes(tiny_G, monkeypatch, D=D8)
    with pytest.raises(CheckpointError, match=r"x: D takes 3x8x8 images but the generator makes 3x16x16: D and G must "
                                              r"come from the same training run"):
        discriminator_from_nvidia_pickle(blob, where="x")
    no_g = layouts.nvidia_pickle_bytes(tiny_G, monkeypatch, extra={"G_ema": None})  # nothing to check D against
    with pytest.raises(CheckpointError, match="has a D but no G_ema"):
        discriminator_from_nvidia_pickle(no_g)


def test_unreadable_discriminator_files(tiny_G, tmp_path, monkeypatch, layouts):
    (tmp_path / "text.pkl").write_text("hello, not a pickle\n")
    with pytest.raises(CheckpointError, match="not a pickle file"):
        load_discriminator(tmp_path / "text.pkl")
    blob = layouts.nvidia_pickle_bytes(tiny_G, monkeypatch)
    (tmp_path / "cut.pkl").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="not a readable pickle"):
        load_discriminator(tmp_path / "cut.pkl")


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("case", ["os.system", "builtins.eval", "subprocess.call"])
def test_malicious_global_inside_discriminator_is_refused(case, tiny_G, tmp_path, monkeypatch, layouts):
    marker = tmp_path / "pwned"
    evil = {"os.system": _Evil(os.system, f"touch {marker}"),
            "builtins.eval": _Evil(eval, f"open({str(marker)!r}, 'w').close()"),
            "subprocess.call": _Evil(subprocess.call, ["touch", str(marker)])}[case]

    def edit(tree):  # deep inside D: a "tensor" of the epilogue's fc layer
        _child(tree, "b4.fc").state["_parameters"]["weight"] = evil

    (tmp_path / "evil.pkl").write_bytes(layouts.nvidia_pickle_bytes(tiny_G, monkeypatch, edit_D=edit))
    _drop_nvidia_modules(monkeypatch)
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load: the pickle references "
                                                    r"(posix|os|nt|builtins|subprocess)\.(system|eval|call)"):
        load_discriminator(tmp_path / "evil.pkl")
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# rosinality stylegan2-pytorch training snapshots ('d'), written from its model.py layout
# independently of the loader's name map
# --------------------------------------------------------------------------------------------

def rosinality_d_state(D: Discriminator) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().clone() for k, v in D.state_dict().items()}
    kernel = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1]))
    kernel = kernel / kernel.sum()
    R = D.img_resolution
    out = {"convs.0.0.weight": sd[f"b{R}.fromrgb.weight"], "convs.0.1.bias": sd[f"b{R}.fromrgb.bias"]}
    i, res = 1, R
    while res >= 8:  # ResBlock: conv1 = ConvLayer(3x3), conv2 = [Blur, EqualConv2d, FusedLeakyReLU], skip = [Blur, conv]
        out[f"convs.{i}.conv1.0.weight"] = sd[f"b{res}.conv0.weight"]
        out[f"convs.{i}.conv1.1.bias"] = sd[f"b{res}.conv0.bias"]
        out[f"convs.{i}.conv2.0.kernel"] = kernel.clone()
        out[f"convs.{i}.conv2.1.weight"] = sd[f"b{res}.conv1.weight"]
        out[f"convs.{i}.conv2.2.bias"] = sd[f"b{res}.conv1.bias"]
        out[f"convs.{i}.skip.0.kernel"] = kernel.clone()
        out[f"convs.{i}.skip.1.weight"] = sd[f"b{res}.skip.weight"]
        i, res = i + 1, res // 2
    out["final_conv.0.weight"] = sd["b4.conv.weight"]
    out["final_conv.1.bias"] = sd["b4.conv.bias"]
    for j, name in enumerate(("fc", "out")):
        out[f"final_linear.{j}.weight"] = sd[f"b4.{name}.weight"]
        out[f"final_linear.{j}.bias"] = sd[f"b4.{name}.bias"]
    return out


def _rosinality_snapshot(G, D, layouts) -> dict:
    """What rosinality's train.py saves: g, d, g_ema, optimiser states, args, ada_aug_p."""
    return {"g": {}, "d": rosinality_d_state(D), "g_ema": layouts.rosinality_state(G), "g_optim": {}, "d_optim": {},
            "args": argparse.Namespace(size=G.img_resolution, n_mlp=G.config.mapping_layers, lr_mlp=0.01,
                                       channel_multiplier=2), "ada_aug_p": 0.0}


def test_rosinality_discriminator_round_trip(tiny_G, tmp_path, layouts):
    D0 = layouts.seeded_discriminator(tiny_G)
    torch.save(_rosinality_snapshot(tiny_G, D0, layouts), tmp_path / "train.pt")
    D = load_discriminator(tmp_path / "train.pt")
    assert isinstance(D, Discriminator) and D.training
    _assert_same_network(D, D0)


def test_rosinality_discriminator_refusals(tiny_G, tmp_path, layouts):
    snap = _rosinality_snapshot(tiny_G, layouts.seeded_discriminator(tiny_G), layouts)
    snap["d"]["convs.1.attention.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match=r"unrecognised tensors in 'd' \(convs\.1\.attention\.weight\)"):
        discriminator_from_rosinality(snap)
    snap = _rosinality_snapshot(tiny_G, layouts.seeded_discriminator(tiny_G), layouts)
    del snap["d"]["convs.2.skip.1.weight"]
    with pytest.raises(CheckpointError, match=r"'d' lacks tensor\(s\) convs\.2\.skip\.1\.weight"):
        discriminator_from_rosinality(snap)
    snap = _rosinality_snapshot(tiny_G, layouts.seeded_discriminator(tiny_G, resolution=8), layouts)
    with pytest.raises(CheckpointError, match=r"'d' takes 3x8x8 images but the generator makes 3x16x16"):
        discriminator_from_rosinality(snap)
    snap = _rosinality_snapshot(tiny_G, layouts.seeded_discriminator(tiny_G), layouts)
    snap["d"]["convs.1.conv2.0.kernel"] = torch.ones(4, 4)
    with pytest.raises(CheckpointError, match=r"convs\.1\.conv2\.0\.kernel is not the standard"):
        discriminator_from_rosinality(snap)
