"""The StyleGAN2 generator (Karras et al. 2020) and its configuration."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from embedding.stylegan2.layers import reset_seeded
from embedding.stylegan2.mapping import MappingNetwork
from embedding.stylegan2.synthesis import SynthesisNetwork, channels_at

W_AVG_SAMPLES = 1024


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of an unconditional StyleGAN2 generator ('skip' G, [1,3,3,1] FIR filter).

    resolution: 2^k from 8 to 1024. Channels at resolution r: min(channel_base // r, channel_max).
    conv_clamp: clamp after every conv (NVIDIA's configs use 256 when num_fp16_res > 0; None = off).
    num_fp16_res is recorded from imported checkpoints only; this implementation computes in float32.
    """

    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    resolution: int = 32
    channel_base: int = 32768
    channel_max: int = 512
    lr_multiplier: float = 0.01
    img_channels: int = 3
    conv_clamp: float | None = None
    w_avg_beta: float = 0.995
    num_fp16_res: int = 0

    def __post_init__(self) -> None:
        r = self.resolution
        if not (isinstance(r, int) and 8 <= r <= 1024 and r & (r - 1) == 0):
            raise ValueError(f"resolution must be a power of two from 8 to 1024, got {r!r}")
        # Upper bounds far above any StyleGAN2: a crafted config must not make the constructor
        # allocate terabytes before the weights are even compared with it.
        for name, most in (("z_dim", 8192), ("w_dim", 8192), ("mapping_layers", 64), ("channel_base", 1 << 20),
                           ("channel_max", 8192), ("img_channels", 4)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= most:
                raise ValueError(f"{name} must be an integer from 1 to {most}, got {v!r}")
        if not self.lr_multiplier > 0:
            raise ValueError(f"lr_multiplier must be > 0, got {self.lr_multiplier!r}")
        if self.conv_clamp is not None and not self.conv_clamp > 0:
            raise ValueError(f"conv_clamp must be > 0 or None, got {self.conv_clamp!r}")
        if channels_at(r, channel_base=self.channel_base, channel_max=self.channel_max) < 1:
            raise ValueError(f"channel_base {self.channel_base} leaves no channels at {r}x{r}; "
                             f"use channel_base >= {r}")

    @property
    def num_ws(self) -> int:
        return 2 * (self.resolution.bit_length() - 1) - 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, g: Any) -> GeneratorConfig:
        """From any object with the `generator:` fields of params.yaml (e.g. facesurv's GeneratorParams)."""
        return cls(z_dim=g.z_dim, w_dim=g.w_dim, mapping_layers=g.mapping_layers, resolution=g.resolution,
                   channel_base=g.channel_base, channel_max=g.channel_max, lr_multiplier=g.lr_multiplier)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorConfig:
        """Build from a mapping; unknown keys are an error (a typo must not silently change the model)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown generator config keys: {', '.join(unknown)}")
        return cls(**d)


class Generator(nn.Module):
    """z (N, z_dim) -> image (N, img_channels, R, R). `mapping` and `synthesis` are usable on their own.

    State-dict names equal stylegan2-ada-pytorch's G_ema (mapping.fc0.weight, mapping.w_avg,
    synthesis.b4.const, synthesis.b8.conv0.affine.weight, synthesis.b8.torgb.weight, ...noise_const),
    minus its constant `resample_filter` buffers.
    """

    def __init__(self, config: GeneratorConfig, *, seed: int | None = 0) -> None:
        """Build the network; with a seed, initialise it as in the paper from a local RNG (global RNG untouched):
        weights N(0, 1) with runtime equalized-lr scaling, affine biases 1, other biases 0, const N(0, 1),
        noise strengths 0, noise_const N(0, 1); w_avg = mean w of 1024 seeded z (the paper starts the EMA at
        0; training moves it there). seed=None leaves the tensors uninitialised for loading.
        """
        super().__init__()
        self.config = config
        self.z_dim = config.z_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.resolution
        self.img_channels = config.img_channels
        self.synthesis = SynthesisNetwork(w_dim=config.w_dim, img_resolution=config.resolution,
                                          img_channels=config.img_channels, channel_base=config.channel_base,
                                          channel_max=config.channel_max, conv_clamp=config.conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=config.z_dim, w_dim=config.w_dim, num_ws=self.num_ws,
                                      num_layers=config.mapping_layers, lr_multiplier=config.lr_multiplier,
                                      w_avg_beta=config.w_avg_beta)
        # Set while the weights are the seeded stand-in; stored with the weights so lineage keeps saying so.
        self.random_init_seed: int | None = None
        if seed is not None:
            self.reset_parameters(seed)

    def reset_parameters(self, seed: int) -> None:
        gen = reset_seeded(self, seed)
        # w_avg is a tracked statistic, not a weight: give the stand-in the value training's EMA converges
        # to (the mean w), so truncation and projections that start at w_avg start on the w distribution.
        with torch.no_grad():
            z = torch.randn(W_AVG_SAMPLES, self.z_dim, generator=gen)
            self.mapping.w_avg.copy_(self.mapping.embed(z).mean(dim=0))
        self.random_init_seed = int(seed)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.random_init_seed = None  # loaded weights are no longer the seeded stand-in
        return result

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def forward(self, z: torch.Tensor, *, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                noise_mode: str = "const", noise: list[torch.Tensor] | None = None, fused: bool = True) -> torch.Tensor:
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, noise=noise, fused=fused)
