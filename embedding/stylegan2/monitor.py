"""What a training run is watched by: sample grids and KID against the real photos.

Both draw their latents from their own seed (same seed, same samples at every tick), so a grid or
a KID value changes over a run only because the generator did.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from embedding.kid import KidResult, kid, perceptual_features
from embedding.perceptual import PerceptualDistance


def fixed_latents(n: int, z_dim: int, *, seed: int) -> torch.Tensor:
    """(n, z_dim) standard normal z from `seed`, whatever the global RNG."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generate(G: Any, z: torch.Tensor, *, batch_size: int = 64, truncation_psi: float = 1.0) -> torch.Tensor:
    """Images of G for z (N, z_dim) -> (N, 3, R, R) float32 on the CPU, constant noise (noise_mode='const')."""
    device = next(G.parameters()).device
    out = []
    for start in range(0, z.shape[0], batch_size):
        ws = G.mapping(z[start:start + batch_size].to(device), truncation_psi=truncation_psi)
        out.append(G.synthesis(ws, noise_mode="const").float().cpu())
    return torch.cat(out)


def image_grid(images: torch.Tensor, *, columns: int = 8) -> np.ndarray:
    """(N, 3, R, R) in [-1, 1] -> one (rows*R, columns*R, 3) uint8 picture, row-major, black padding."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 1:
        raise ValueError(f"images must be (N, 3, R, R) with N >= 1, got {tuple(images.shape)}")
    n, _, h, w = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    grid = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = pixels[i]
    return grid


def generator_kid(G: Any, net: PerceptualDistance, real_features: np.ndarray, *, n_fake: int, seed: int,
                  subsets: int = 100, subset_size: int = 1000) -> KidResult:
    """KID between `real_features` (perceptual_features of the real photos) and n_fake samples of G
    drawn from `seed` (no truncation)."""
    fakes = generate(G, fixed_latents(n_fake, G.z_dim, seed=seed))
    fake_features = perceptual_features(net, fakes)
    return kid(real_features, fake_features, subsets=subsets, subset_size=subset_size,
               seed=seed)
