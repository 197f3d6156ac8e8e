"""StyleGAN2 synthesis network ('skip' architecture): ws -> image.

Blocks b4, b8, ..., b<R>; b4 holds the learned 4x4 constant, every other block an up-sampling conv0 and a
conv1; every block has a toRGB whose output is added to the FIR-up-sampled image of the block before.
"""

from __future__ import annotations

import torch
from torch import nn

from embedding.stylegan2.layers import SynthesisLayer, ToRGBLayer, make_fir_filter, upsample2d


def channels_at(resolution: int, *, channel_base: int, channel_max: int) -> int:
    """Feature maps per resolution, as in the paper's configs: min(channel_base // res, channel_max)."""
    return min(channel_base // resolution, channel_max)


class SynthesisBlock(nn.Module):
    fir: torch.Tensor  # buffer

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.empty(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=True,
                                        conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution, up=False,
                                    conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.register_buffer("fir", make_fir_filter(), persistent=False)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def reset_parameters(self, gen: torch.Generator) -> None:
        if self.in_channels == 0:
            with torch.no_grad():
                self.const.copy_(torch.randn(self.const.shape, generator=gen))

    def layers(self) -> list[SynthesisLayer]:
        return [self.conv1] if self.in_channels == 0 else [self.conv0, self.conv1]

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, *, noise_mode: str,
                noise: list[torch.Tensor | None], fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """ws (N, num_conv + 1, w_dim): one w per conv plus the toRGB's (shared with the next block's conv0)."""
        if self.in_channels == 0:
            x = self.const.to(ws.dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        for i, layer in enumerate(self.layers()):
            x = layer(x, ws[:, i], noise_mode=noise_mode, noise=noise[i], fused=fused)
        if img is not None:
            img = upsample2d(img, self.fir)
        y = self.torgb(x, ws[:, self.num_conv], fused=fused)
        img = y if img is None else img + y
        assert x is not None  # layers() always holds conv1
        return x, img

    def extra_repr(self) -> str:
        return f"res={self.resolution}, {self.in_channels}->{self.out_channels}"


class SynthesisNetwork(nn.Module):
    def __init__(self, *, w_dim: int, img_resolution: int, img_channels: int, channel_base: int,
                 channel_max: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.resolutions = [2 ** i for i in range(2, img_resolution.bit_length())]
        self.num_ws = 0
        for res in self.resolutions:
            c_in = 0 if res == 4 else channels_at(res // 2, channel_base=channel_base, channel_max=channel_max)
            c_out = channels_at(res, channel_base=channel_base, channel_max=channel_max)
            if c_out < 1:
                raise ValueError(f"channel_base {channel_base} gives no channels at {res}x{res}")
            block = SynthesisBlock(c_in, c_out, w_dim=w_dim, resolution=res, img_channels=img_channels,
                                   conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last toRGB's own w

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.resolutions]

    def noise_layers(self) -> list[SynthesisLayer]:
        return [layer for block in self.blocks() for layer in block.layers()]

    def noise_shapes(self) -> list[tuple[int, int, int]]:
        """Per-layer noise shapes (1, r, r), in the order `forward(noise=...)` takes them."""
        return [(1, layer.resolution, layer.resolution) for layer in self.noise_layers()]

    def forward(self, ws: torch.Tensor, *, noise_mode: str = "const", noise: list[torch.Tensor] | None = None,
                fused: bool = True) -> torch.Tensor:
        """ws (N, num_ws, w_dim) -> image (N, img_channels, R, R), roughly in [-1, 1] for a trained G.

        noise: None, or one tensor per layer (see `noise_shapes`), each (N or 1, 1, r, r); it replaces the
        layer's `noise_const` and is scaled by the learned noise strength like it.
        """
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        n_layers = len(self.noise_layers())
        if noise is not None and len(noise) != n_layers:
            raise ValueError(f"noise must hold {n_layers} tensors (one per layer), got {len(noise)}")
        layer_noise: list[torch.Tensor | None] = [None] * n_layers if noise is None else list(noise)
        x: torch.Tensor | None = None
        img: torch.Tensor | None = None
        w_idx = 0
        k = 0
        for block in self.blocks():
            block_ws = ws[:, w_idx:w_idx + block.num_conv + block.num_torgb]
            x, img = block(x, img, block_ws, noise_mode=noise_mode, noise=layer_noise[k:k + block.num_conv],
                           fused=fused)
            w_idx += block.num_conv
            k += block.num_conv
        assert img is not None  # there is always the 4x4 block
        return img
