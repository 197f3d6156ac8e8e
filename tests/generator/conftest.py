"""Tiny generators and stand-ins for NVIDIA's and rosinality's checkpoint layouts."""

from __future__ import annotations

import argparse
import collections
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from embedding.stylegan2 import Generator, GeneratorConfig
from embedding.stylegan2.discriminator import Discriminator, DiscriminatorConfig

TINY = dict(z_dim=64, w_dim=64, mapping_layers=3, resolution=16, channel_base=128, channel_max=16)


@pytest.fixture(scope="session")
def tiny_config() -> GeneratorConfig:
    return GeneratorConfig(**TINY)


def trained_like(G: Generator, seed: int = 7) -> Generator:
    """Perturb the paper init so every tensor matters (noise strengths, biases and w_avg start at 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in G.state_dict().items():
            if name.endswith(("noise_strength", ".bias", "w_avg")):
                t.add_(0.3 * torch.randn(t.shape, generator=gen))
    G.random_init_seed = None  # no longer the seeded stand-in
    return G


@pytest.fixture(scope="session")
def tiny_G(tiny_config) -> Generator:
    return trained_like(Generator(tiny_config, seed=11)).eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------
# NVIDIA stylegan2-ada-pytorch snapshot layout. Each network object pickles through
# torch_utils.persistence: __reduce__ -> (_reconstruct_persistent_obj, (meta,), None) with
# meta = {type: 'class', version, module_src, class_name, state: the module's __dict__}, the
# state holding _init_args/_init_kwargs (dnnlib.EasyDict for the nested kwargs) and the
# _parameters/_buffers/_modules OrderedDicts. The top level is a dict with G, D, G_ema, ...
# --------------------------------------------------------------------------------------------

_NV_SOURCE = "raise RuntimeError('the pickled module source must never be executed')\n"


def _never_called(meta):  # stands in for NVIDIA's function, which execs meta['module_src']
    raise AssertionError("the loader must not call the pickle's reconstruct function")


class _EasyDict(dict):
    pass


def install_nvidia_modules(monkeypatch) -> types.ModuleType:
    """Register importable stand-ins for torch_utils.persistence and dnnlib (needed to *write* the pickle)."""
    tu = types.ModuleType("torch_utils")
    pers = types.ModuleType("torch_utils.persistence")
    _never_called.__module__ = "torch_utils.persistence"
    _never_called.__qualname__ = _never_called.__name__ = "_reconstruct_persistent_obj"
    pers._reconstruct_persistent_obj = _never_called
    tu.persistence = pers
    dn = types.ModuleType("dnnlib")
    dnu = types.ModuleType("dnnlib.util")
    _EasyDict.__module__ = "dnnlib.util"
    _EasyDict.__qualname__ = _EasyDict.__name__ = "EasyDict"
    dnu.EasyDict = _EasyDict
    dn.util = dnu
    dn.EasyDict = _EasyDict
    for name, mod in (("torch_utils", tu), ("torch_utils.persistence", pers), ("dnnlib", dn), ("dnnlib.util", dnu)):
        monkeypatch.setitem(sys.modules, name, mod)
    return pers


class PersistentObj:
    def __init__(self, class_name: str, state: dict) -> None:
        self.class_name = class_name
        self.state = state

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=_NV_SOURCE, class_name=self.class_name, state=self.state)
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,), None)


def _nv_class(path: str) -> str:
    last = path.rsplit(".", 1)[-1]
    if path == "":
        return "Generator"
    if last == "mapping":
        return "MappingNetwork"
    if last == "synthesis":
        return "SynthesisNetwork"
    if last.startswith("fc") or last == "affine":
        return "FullyConnectedLayer"
    if last.startswith("b") and last[1:].isdigit():
        return "SynthesisBlock"
    if last.startswith("conv"):
        return "SynthesisLayer"
    if last == "torgb":
        return "ToRGBLayer"
    raise AssertionError(path)


def _nv_d_class(path: str) -> str:
    """NVIDIA's class of each module of a 'resnet' D (training/networks.py names)."""
    last = path.rsplit(".", 1)[-1]
    if path == "":
        return "Discriminator"
    if path == "b4":
        return "DiscriminatorEpilogue"
    if last.startswith("b") and last[1:].isdigit():
        return "DiscriminatorBlock"
    if last in ("fromrgb", "conv0", "conv1", "skip", "conv"):
        return "Conv2dLayer"
    if last in ("fc", "out"):
        return "FullyConnectedLayer"
    if last == "mbstd":
        return "MinibatchStdLayer"
    raise AssertionError(path)


def _nv_tree(module: torch.nn.Module, path: str, init_kwargs: dict, classify=_nv_class) -> PersistentObj:
    params = collections.OrderedDict(
        (n, torch.nn.Parameter(p.detach().clone(), requires_grad=False)) for n, p in module.named_parameters(recurse=False))
    buffers = collections.OrderedDict((n, b.detach().clone()) for n, b in module.named_buffers(recurse=False)
                                      if n not in module._non_persistent_buffers_set)
    cls = classify(path)
    if cls in ("SynthesisBlock", "SynthesisLayer", "DiscriminatorBlock", "Conv2dLayer"):
        f = torch.tensor([1.0, 3.0, 3.0, 1.0])
        buffers["resample_filter"] = torch.outer(f, f) / 64
    children = collections.OrderedDict(
        (n, _nv_tree(c, f"{path}.{n}".lstrip("."), {}, classify)) for n, c in module.named_children())
    state = dict(training=False, _parameters=params, _buffers=buffers, _non_persistent_buffers_set=set(),
                 _backward_hooks=collections.OrderedDict(), _forward_hooks=collections.OrderedDict(),
                 _forward_pre_hooks=collections.OrderedDict(), _state_dict_hooks=collections.OrderedDict(),
                 _load_state_dict_pre_hooks=collections.OrderedDict(), _modules=children,
                 _init_args=(), _init_kwargs=init_kwargs)
    # NVIDIA's modules also keep plain attributes, some of them numpy scalars (np.sqrt results).
    if cls == "FullyConnectedLayer":
        state.update(activation=getattr(module, "activation", "linear"),
                     weight_gain=np.float64(module.weight_gain), bias_gain=module.bias_gain)
    elif cls == "SynthesisLayer":
        state.update(resolution=module.resolution, up=2 if module.up else 1, use_noise=True, activation="lrelu",
                     conv_clamp=module.conv_clamp, padding=1, act_gain=np.float64(np.sqrt(2)))
    elif cls == "Conv2dLayer":
        state.update(activation=module.activation, up=1, down=2 if module.down else 1, conv_clamp=256,
                     padding=module.kernel_size // 2, weight_gain=np.float64(module.weight_gain),
                     act_gain=np.float64(module.act_gain))
    elif cls == "MinibatchStdLayer":
        state.update(group_size=module.group_size, num_channels=module.num_features)
    return PersistentObj(cls, state)


def seeded_discriminator(G: Generator, seed: int = 5, **config) -> Discriminator:
    """A paper-init D for G's images with every bias perturbed (they start at 0), so every tensor matters."""
    cfg = DiscriminatorConfig(**{**DiscriminatorConfig.for_generator(G.config).to_dict(), **config})
    D = Discriminator(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, t in D.state_dict().items():
            if name.endswith(".bias"):
                t.add_(0.3 * torch.randn(t.shape, generator=gen))
    return D


def nvidia_discriminator_tree(D: Discriminator) -> PersistentObj:
    """D as stylegan2-ada-pytorch pickles it: init kwargs as its train.py writes them ('resnet', fp16 and clamp
    on, the epilogue's minibatch-std settings), a resample_filter buffer in every block and conv layer."""
    c = D.config
    init_kwargs = dict(c_dim=0, img_resolution=c.resolution, img_channels=c.img_channels, architecture="resnet",
                       channel_base=c.channel_base, channel_max=c.channel_max, num_fp16_res=4, conv_clamp=256,
                       cmap_dim=None, block_kwargs=_EasyDict(freeze_layers=0), mapping_kwargs=_EasyDict(),
                       epilogue_kwargs=_EasyDict(mbstd_group_size=c.mbstd_group_size,
                                                 mbstd_num_channels=c.mbstd_features))
    return _nv_tree(D, "", init_kwargs, _nv_d_class)


def nvidia_pickle_bytes(G: Generator, monkeypatch, *, extra: dict | None = None, lr_in_kwargs: bool = True,
                        D: Discriminator | None = None, with_D: bool = True, edit_D=None) -> bytes:
    """G (as G and G_ema) and D (default: seeded_discriminator(G)) in an NVIDIA snapshot; `edit_D(tree)` may
    change D's placeholder tree (kwargs, tensors) before pickling; with_D=False leaves the D entry out."""
    install_nvidia_modules(monkeypatch)
    c = G.config
    mapping_kwargs = _EasyDict(num_layers=c.mapping_layers)
    if lr_in_kwargs:
        mapping_kwargs["lr_multiplier"] = c.lr_multiplier
    synthesis_kwargs = _EasyDict(channel_base=c.channel_base, channel_max=c.channel_max, num_fp16_res=4,
                                 conv_clamp=c.conv_clamp)
    init_kwargs = dict(z_dim=c.z_dim, c_dim=0, w_dim=c.w_dim, img_resolution=c.resolution,
                       img_channels=c.img_channels, mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs)
    g_ema = _nv_tree(G, "", init_kwargs)
    snapshot = dict(training_set_kwargs=_EasyDict(path="ffhq.zip", resolution=c.resolution), G=g_ema)
    if with_D:  # NVIDIA's order: G, D, G_ema, augment_pipe
        snapshot["D"] = nvidia_discriminator_tree(D if D is not None else seeded_discriminator(G))
        if edit_D is not None:
            edit_D(snapshot["D"])
    snapshot.update(G_ema=g_ema, augment_pipe=None)
    if extra:
        snapshot.update(extra)
    return pickle.dumps(snapshot)


# --------------------------------------------------------------------------------------------
# rosinality stylegan2-pytorch layout (written independently of the loader's name map)
# --------------------------------------------------------------------------------------------

def rosinality_state(G: Generator) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().clone() for k, v in G.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for i in range(G.config.mapping_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]
    kernel = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1]))
    kernel = kernel / kernel.sum()

    def styled(dst: str, src: str, noise: int, up: bool) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        out[f"noises.noise_{noise}"] = sd[f"{src}.noise_const"][None, None]
        if up:
            out[f"{dst}.conv.blur.kernel"] = kernel * 4

    def rgb(dst: str, src: str, up: bool) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)
        if up:
            out[f"{dst}.upsample.kernel"] = kernel * 4

    styled("conv1", "synthesis.b4.conv1", 0, False)
    rgb("to_rgb1", "synthesis.b4.torgb", False)
    res, j = 8, 0
    while res <= G.img_resolution:
        styled(f"convs.{2 * j}", f"synthesis.b{res}.conv0", 2 * j + 1, True)
        styled(f"convs.{2 * j + 1}", f"synthesis.b{res}.conv1", 2 * j + 2, False)
        rgb(f"to_rgbs.{j}", f"synthesis.b{res}.torgb", True)
        res, j = res * 2, j + 1
    return out


def rosinality_checkpoint(G: Generator) -> dict:
    return {"g_ema": rosinality_state(G), "latent_avg": G.w_avg.detach().clone(),
            "args": argparse.Namespace(size=G.img_resolution, n_mlp=G.config.mapping_layers,
                                       lr_mlp=G.config.lr_multiplier, channel_multiplier=2)}


@pytest.fixture(scope="session")
def layouts() -> types.SimpleNamespace:
    """The layout builders above, for test modules (conftest is not importable under importlib mode)."""
    return types.SimpleNamespace(nvidia_pickle_bytes=nvidia_pickle_bytes, rosinality_checkpoint=rosinality_checkpoint,
                                 rosinality_state=rosinality_state, trained_like=trained_like,
                                 seeded_discriminator=seeded_discriminator)
