"""The StyleGAN2 discriminator (Karras et al. 2020, config F: 'resnet' architecture) and its configuration.

    D = Discriminator(DiscriminatorConfig.for_generator(G.config), seed=0)
    logits = D(images)                     # (N, C, R, R) -> (N,), one real/fake logit per image

Layout, from the input resolution R down to 4x4:

- ``b<R>.fromrgb``: 1x1 conv from image channels to the features of resolution R, leaky ReLU;
- per resolution r = R, R/2, ..., 8 a residual block ``b<r>``: ``conv0`` 3x3 (C(r) -> C(r)), ``conv1``
  3x3 with 2x down-sampling (C(r) -> C(r/2)) and ``skip``, a 1x1 conv without bias and with the same
  down-sampling; the two paths are summed and scaled by 1/sqrt(2) so the block keeps unit variance;
- ``b4``: minibatch standard deviation (one extra feature map per `mbstd_features`), ``conv`` 3x3,
  ``fc`` (C(4)*16 -> C(4)) and ``out`` (C(4) -> 1).

C(r) = min(channel_base // r, channel_max), the generator's rule. Every layer has equalized learning
rate (weights N(0, 1) scaled at run time by 1/sqrt(fan_in)) and leaky ReLU 0.2 with gain sqrt(2),
except ``skip`` and ``out``, which are linear. Module and parameter names follow stylegan2-ada-pytorch's
D (b32.conv0.weight, b4.fc.bias, ...) so such weights can be mapped in later by name.

Down-sampling uses the paper's [1, 3, 3, 1] binomial low-pass filter, not plain average pooling: the
image is filtered first and the convolution then runs with stride 2 (same output as "convolve at full
resolution, then filter and keep every second pixel", at a quarter of the cost). Average pooling would
alias, and this is the filter the generator's up-sampling uses.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embedding.stylegan2.generator import GeneratorConfig
from embedding.stylegan2.layers import (
    LRELU_GAIN,
    FullyConnected,
    bias_act,
    blur2d,
    make_fir_filter,
    reset_seeded,
)
from embedding.stylegan2.synthesis import channels_at

MBSTD_EPS = 1e-8
_RESIDUAL_GAIN = math.sqrt(0.5)


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """Architecture of a StyleGAN2 'resnet' discriminator.

    resolution: 2^k from 4 to 1024, the side of the input images. Channels at resolution r:
    min(channel_base // r, channel_max). mbstd_group_size: images per minibatch-std group (the paper: 4);
    a batch smaller than it forms one group. mbstd_features: extra feature maps of the minibatch-std
    layer (the paper: 1; 0 turns the layer off); it must divide the channels at 4x4.
    """

    resolution: int = 32
    channel_base: int = 32768
    channel_max: int = 512
    mbstd_group_size: int = 4
    mbstd_features: int = 1
    img_channels: int = 3

    def __post_init__(self) -> None:
        r = self.resolution
        if not (isinstance(r, int) and not isinstance(r, bool) and 4 <= r <= 1024 and r & (r - 1) == 0):
            raise ValueError(f"resolution must be a power of two from 4 to 1024, got {r!r}")
        for name, least, most in (("channel_base", 1, 1 << 20), ("channel_max", 1, 8192),
                                  ("mbstd_group_size", 1, 1 << 16), ("mbstd_features", 0, 8192),
                                  ("img_channels", 1, 4)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not least <= v <= most:
                raise ValueError(f"{name} must be an integer from {least} to {most}, got {v!r}")
        if self.channels(r) < 1:
            raise ValueError(f"channel_base {self.channel_base} leaves no channels at {r}x{r}; "
                             f"use channel_base >= {r}")
        c4 = self.channels(4)
        if self.mbstd_features and c4 % self.mbstd_features:
            raise ValueError(f"mbstd_features {self.mbstd_features} must divide the {c4} channels at 4x4; "
                             f"use a divisor of {c4}")

    def channels(self, resolution: int) -> int:
        return channels_at(resolution, channel_base=self.channel_base, channel_max=self.channel_max)

    @classmethod
    def for_generator(cls, gcfg: GeneratorConfig, *, mbstd_group_size: int = 4, mbstd_features: int = 1) -> DiscriminatorConfig:
        """The discriminator that mirrors a GeneratorConfig: same resolution, channel rule and image channels."""
        return cls(resolution=gcfg.resolution, channel_base=gcfg.channel_base, channel_max=gcfg.channel_max,
                   mbstd_group_size=mbstd_group_size, mbstd_features=mbstd_features,
                   img_channels=gcfg.img_channels)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Conv2dLayer(nn.Module):
    """Equalized-lr convolution with optional 2x FIR down-sampling, bias and activation.

    x (N, I, H, W) -> (N, O, H, W), or (N, O, H/2, W/2) with `down`. `gain` in forward scales the
    output after the activation (the residual blocks pass 1/sqrt(2)).
    """

    fir: torch.Tensor  # buffer
    bias: nn.Parameter | None

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activation: str = "lrelu", down: bool = False) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (the output stays centred on the input), got {kernel_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.activation = activation
        self.down = down
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.act_gain = LRELU_GAIN if activation == "lrelu" else 1.0
        self.register_buffer("fir", make_fir_filter(), persistent=False)

    def reset_parameters(self, gen: torch.Generator) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape, generator=gen))
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor, *, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        k = self.kernel_size
        if self.down:
            # Low-pass then stride 2: the 4-tap filter and the k-tap kernel together span k + 3 pixels;
            # padding (k + 1) / 2 centres output pixel i on input pixels 2i and 2i + 1 and gives H / 2 outputs.
            x = blur2d(x, self.fir, gain=1.0, pad=(k + 1) // 2)
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=k // 2)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return bias_act(x, bias, act=self.activation, gain=self.act_gain * gain)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}->{self.out_channels}, k={self.kernel_size}, act={self.activation}, "
                f"down={self.down}, bias={self.bias is not None}")


class MinibatchStd(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018): lets D see the variety of a group of images.

    x (N, C, H, W) -> (N, C + num_features, H, W). The batch is split into consecutive groups of
    G = min(group_size, N) images (images 0..G-1, G..2G-1, ...); the channels into `num_features` equal
    slices. Per group and slice: the standard deviation over the group of every feature at every pixel,
    averaged to one number, which becomes a constant feature map of every image of that group.
    """

    def __init__(self, group_size: int, num_features: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            raise ValueError(f"minibatch-std group size {g} must divide the batch size {n}: use a batch that is "
                             f"a multiple of {g}, or a mbstd_group_size that divides {n}")
        f = self.num_features
        y = x.reshape(n // g, g, f, c // f, h, w)
        y = (y.var(dim=1, correction=0) + MBSTD_EPS).sqrt()  # (n/g, f, c/f, h, w)
        y = y.mean(dim=(2, 3, 4))  # (n/g, f)
        y = y.repeat_interleave(g, dim=0).reshape(n, f, 1, 1).expand(n, f, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_features={self.num_features}"


class DiscriminatorBlock(nn.Module):
    """Residual block at resolution r: (N, C(r), r, r) -> (N, C(r/2), r/2, r/2).

    The top block (the input resolution) also holds `fromrgb`, which turns the image into features.
    """

    def __init__(self, tmp_channels: int, out_channels: int, *, resolution: int, img_channels: int,
                 from_rgb: bool) -> None:
        super().__init__()
        self.resolution = resolution
        self.from_rgb = from_rgb
        if from_rgb:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, down=True)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, activation="linear", down=True)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.from_rgb:
            x = self.fromrgb(img)
        assert x is not None  # only the top block starts from the image
        y = self.skip(x, gain=_RESIDUAL_GAIN)
        x = self.conv1(self.conv0(x), gain=_RESIDUAL_GAIN)
        return x + y

    def extra_repr(self) -> str:
        return f"res={self.resolution}"


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head: (N, C(4), 4, 4) -> logits (N,). Holds `fromrgb` too when the input is 4x4."""

    def __init__(self, channels: int, *, img_channels: int, mbstd_group_size: int, mbstd_features: int,
                 from_rgb: bool) -> None:
        super().__init__()
        self.resolution = 4
        self.from_rgb = from_rgb
        if from_rgb:
            self.fromrgb = Conv2dLayer(img_channels, channels, 1)
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_features) if mbstd_features else None
        self.conv = Conv2dLayer(channels + mbstd_features, channels, 3)
        self.fc = FullyConnected(channels * 4 * 4, channels, activation="lrelu")
        self.out = FullyConnected(channels, 1)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.from_rgb:
            x = self.fromrgb(img)
        assert x is not None  # the blocks above hand their features down
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        return self.out(x).squeeze(1)


class Discriminator(nn.Module):
    """image (N, img_channels, R, R) -> logits (N,): large for images D takes for real.

    Images are expected in the generator's range (about [-1, 1]). With minibatch-std on, an image's
    logit also depends on the other images of its group (see MinibatchStd).
    """

    def __init__(self, config: DiscriminatorConfig, *, seed: int | None = 0) -> None:
        """Build the network; with a seed, initialise it as in the paper from a local RNG (global RNG
        untouched): weights N(0, 1) with runtime equalized-lr scaling, biases 0. seed=None leaves the
        tensors uninitialised for loading.
        """
        super().__init__()
        self.config = config
        self.img_resolution = config.resolution
        self.img_channels = config.img_channels
        self.resolutions = [2 ** i for i in range(config.resolution.bit_length() - 1, 2, -1)]  # R, R/2, ..., 8
        for res in self.resolutions:
            block = DiscriminatorBlock(config.channels(res), config.channels(res // 2), resolution=res,
                                       img_channels=config.img_channels, from_rgb=res == config.resolution)
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(config.channels(4), img_channels=config.img_channels,
                                        mbstd_group_size=config.mbstd_group_size,
                                        mbstd_features=config.mbstd_features, from_rgb=config.resolution == 4)
        if seed is not None:
            self.reset_parameters(seed)

    def reset_parameters(self, seed: int) -> None:
        reset_seeded(self, seed)

    def blocks(self) -> list[DiscriminatorBlock]:
        return [getattr(self, f"b{res}") for res in self.resolutions]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        r, c = self.img_resolution, self.img_channels
        if img.ndim != 4 or img.shape[1:] != (c, r, r):
            raise ValueError(f"images must be (N, {c}, {r}, {r}), got {tuple(img.shape)}; resize them to the "
                             f"discriminator's resolution or build it with DiscriminatorConfig(resolution=...)")
        if img.shape[0] < 1:
            raise ValueError("the batch is empty; pass at least one image")
        x: torch.Tensor | None = None
        for block in self.blocks():
            x = block(x, img)
        return self.b4(x, img)
