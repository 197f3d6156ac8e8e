"""StyleGAN2 building blocks in plain PyTorch: equalized learning rate, modulated convolution, FIR resampling.

Parameter names and shapes follow the published stylegan2-ada-pytorch layout (``weight``, ``bias``,
``affine``, ``noise_strength``, ``noise_const``) so a G_ema state dict loads with a plain name map.
Everything runs as ordinary torch ops (grouped conv2d / conv_transpose2d), no custom CUDA kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
# The paper's binomial low-pass filter for 2x up-sampling (Karras et al. 2019/2020).
RESAMPLE_KERNEL = (1.0, 3.0, 3.0, 1.0)
_DEMOD_EPS = 1e-8


def reset_seeded(root: nn.Module, seed: int) -> torch.Generator:
    """Re-draw every sub-module's weights (each `reset_parameters(gen)`) from one CPU generator
    seeded with `seed`, in registration order, so a seed always gives the same weights; returns
    the generator for any further draws."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    for module in root.modules():
        reset = getattr(module, "reset_parameters", None) if module is not root else None
        if reset is not None:
            reset(gen)
    return gen


def make_fir_filter(kernel=RESAMPLE_KERNEL, *, gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D FIR filter from a 1-D kernel, normalised to sum to `gain`. Returns (k, k) float32."""
    k = torch.as_tensor(kernel, dtype=torch.float32)
    if k.ndim != 1 or k.numel() < 1:
        raise ValueError(f"FIR kernel must be a non-empty 1-D sequence, got shape {tuple(k.shape)}")
    if not torch.equal(k, k.flip(0)):
        # Convolution vs correlation only coincide for symmetric filters; only those are supported.
        raise ValueError(f"FIR kernel must be symmetric, got {k.tolist()}")
    f = torch.outer(k, k)
    return f * (gain / f.sum())


def upsample2d(x: torch.Tensor, fir: torch.Tensor) -> torch.Tensor:
    """2x FIR up-sampling (zero insertion, then the 4-tap filter with gain 4).

    x (N, C, H, W) -> (N, C, 2H, 2W). `fir` is the (4, 4) filter summing to 1. Each output pixel sits half a
    pixel from its source: a ramp 0, 1, 2 becomes -0.25, 0.25, 0.75, 1.25, ... in the interior.
    """
    n, c, h, w = x.shape
    if fir.shape != (4, 4):
        raise ValueError(f"upsample2d expects a (4, 4) filter, got {tuple(fir.shape)}")
    # Transposed conv with stride 2 == zero insertion followed by the filter; pad 2/1 <=> padding=1 here.
    k = (fir * 4.0).to(dtype=x.dtype, device=x.device)[None, None]
    y = F.conv_transpose2d(x.reshape(n * c, 1, h, w), k, stride=2, padding=1)
    return y.reshape(n, c, 2 * h, 2 * w)


def blur2d(x: torch.Tensor, fir: torch.Tensor, *, gain: float, pad: int) -> torch.Tensor:
    """Depthwise FIR filter applied to every channel alike. x (N, C, H, W) -> (N, C, H + 2*pad - k + 1, ...)."""
    # As shifted multiply-adds rather than a (N*C)-group convolution: on CPU the convolution's
    # backward took 60% of a training step at 32 px, the shifts take a few percent, same maths.
    # The separability test runs on the filter in float32 with autocast off: under CUDA bf16
    # autocast an outer product comes back in bf16 and cannot be compared with a float32 filter.
    with torch.autocast(device_type=x.device.type, enabled=False):
        f = fir.detach().to(device=x.device, dtype=torch.float32) * gain
        row, col = f.sum(dim=1), f.sum(dim=0)
        total = f.sum()
        separable = bool(total != 0) and torch.allclose(row[:, None] * col[None, :] / total, f, rtol=1e-6, atol=1e-7)
    k = f.to(dtype=x.dtype)
    kh, kw = k.shape
    x = F.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2] - kh + 1, x.shape[-1] - kw + 1
    if separable:
        # rows, then columns (the [1,3,3,1] filter is separable)
        row, col = row.to(x.dtype), (col / total).to(x.dtype)
        y = row[0] * x[..., :h, :]
        for i in range(1, kh):
            y = y + row[i] * x[..., i:i + h, :]
        out = col[0] * y[..., :w]
        for j in range(1, kw):
            out = out + col[j] * y[..., j:j + w]
        return out
    out = torch.zeros_like(x[..., :h, :w])
    for i in range(kh):
        for j in range(kw):
            out = out + k[i, j] * x[..., i:i + h, j:j + w]
    return out


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, *, act: str, gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """x + bias (broadcast over dim 1), then activation, then gain, then optional symmetric clamp."""
    if bias is not None:
        x = x + bias.reshape([1, -1] + [1] * (x.ndim - 2))
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    if gain != 1.0:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     up: bool = False, fir: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                     fused: bool = True) -> torch.Tensor:
    """Style-modulated (and optionally demodulated) convolution, the core of StyleGAN2 synthesis.

    x (N, I, H, W), weight (O, I, k, k), styles (N, I) -> (N, O, H', W') with H' = 2H when `up` else H.
    `noise` (N or 1, 1, H', W') is added after the convolution, before any bias. `fused` runs one grouped
    convolution with per-sample weights; otherwise the input is scaled by the styles, convolved with the
    shared weight and rescaled by the demodulation coefficients (same maths, different kernels).
    """
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    if styles.shape != (n, c_in):
        raise ValueError(f"styles must be (N={n}, I={c_in}), got {tuple(styles.shape)}")
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    dcoefs: torch.Tensor | None = None  # set exactly when demodulate
    if fused or demodulate:
        wm = weight.unsqueeze(0) * styles.reshape(n, 1, c_in, 1, 1)  # (N, O, I, k, k)
        if demodulate:
            dcoefs = torch.rsqrt(wm.square().sum(dim=(2, 3, 4)) + _DEMOD_EPS)  # (N, O)
    if fused:
        if dcoefs is not None:
            wm = wm * dcoefs.reshape(n, c_out, 1, 1, 1)
        xg = x.reshape(1, n * c_in, h, w)
        if up:
            wt = wm.transpose(1, 2).reshape(n * c_in, c_out, kh, kw)
            y = F.conv_transpose2d(xg, wt, stride=2, groups=n)
        else:
            y = F.conv2d(xg, wm.reshape(n * c_out, c_in, kh, kw), padding=kh // 2, groups=n)
        y = y.reshape(n, c_out, y.shape[-2], y.shape[-1])
    else:
        xs = x * styles.reshape(n, c_in, 1, 1)
        if up:
            y = F.conv_transpose2d(xs, weight.transpose(0, 1), stride=2)
        else:
            y = F.conv2d(xs, weight, padding=kh // 2)
        if dcoefs is not None:
            y = y * dcoefs.reshape(n, c_out, 1, 1)
    if up:
        # conv_transpose gives 2H + k - 2 samples; the 4-tap low-pass with padding 1 trims to 2H.
        if fir is None:
            raise ValueError("up-sampling convolution needs the FIR filter")
        if kh != 3 or fir.shape[-1] != 4:
            raise ValueError("up-sampling convolution supports a 3x3 kernel with the 4-tap filter only")
        y = blur2d(y, fir, gain=4.0, pad=1)
    if noise is not None:
        y = y + noise.to(y.dtype)
    return y


class FullyConnected(nn.Module):
    """Equalized-lr linear layer: weight ~ N(0, 1/lr_mul^2), runtime scale lr_mul/sqrt(in) (Karras et al. 2018)."""

    def __init__(self, in_features: int, out_features: int, *, bias_init: float = 0.0,
                 lr_multiplier: float = 1.0, activation: str = "linear") -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.lr_multiplier = float(lr_multiplier)
        self.bias_init = float(bias_init)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.weight_gain = self.lr_multiplier / math.sqrt(in_features)
        self.bias_gain = self.lr_multiplier

    def reset_parameters(self, gen: torch.Generator) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape, generator=gen) / self.lr_multiplier)
            self.bias.fill_(self.bias_init)  # stored unscaled; bias_gain applies lr_multiplier at runtime

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x @ w.t(), b, act=self.activation, gain=LRELU_GAIN)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}, lr_mul={self.lr_multiplier:g}"


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up) + per-pixel noise with learned strength + bias + lrelu."""

    noise_const: torch.Tensor  # buffers
    fir: torch.Tensor

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, resolution: int, up: bool,
                 conv_clamp: float | None, kernel_size: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.noise_strength = nn.Parameter(torch.empty([]))
        self.register_buffer("noise_const", torch.empty(resolution, resolution))
        self.register_buffer("fir", make_fir_filter(), persistent=False)

    def reset_parameters(self, gen: torch.Generator) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape, generator=gen))
            self.bias.zero_()
            self.noise_strength.zero_()
            self.noise_const.copy_(torch.randn(self.noise_const.shape, generator=gen))

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, noise_mode: str = "const",
                noise: torch.Tensor | None = None, fused: bool = True) -> torch.Tensor:
        styles = self.affine(w)
        r = self.resolution
        if noise is not None:
            if noise.ndim != 4 or noise.shape[1:] != (1, r, r) or noise.shape[0] not in (1, x.shape[0]):
                raise ValueError(f"noise for a {r}x{r} layer must be (N or 1, 1, {r}, {r}), got {tuple(noise.shape)}")
            noise = noise * self.noise_strength
        elif noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, r, r, device=x.device, dtype=x.dtype) * self.noise_strength
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        elif noise_mode != "none":
            raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
        x = modulated_conv2d(x, self.weight, styles, demodulate=True, up=self.up, fir=self.fir,
                             noise=noise, fused=fused)
        return bias_act(x, self.bias, act="lrelu", gain=LRELU_GAIN, clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, res={self.resolution}, up={self.up}"


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, no demodulation (the 'skip' output branch)."""

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, conv_clamp: float | None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def reset_parameters(self, gen: torch.Generator) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.randn(self.weight.shape, generator=gen))
            self.bias.zero_()

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, fused: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias, act="linear", clamp=self.conv_clamp)
