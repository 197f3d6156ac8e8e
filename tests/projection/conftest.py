"""Projection fixtures: a tiny seeded random-init generator, photos it rendered, and the perceptual net."""

from __future__ import annotations

import pytest
import torch

# Kept tiny so the whole area runs in seconds: 16 px, 16 channels, 2 mapping layers.
TINY = dict(resolution=16, channel_max=16, mapping_layers=2)
FAST = dict(steps=6, w_avg_samples=64)


@pytest.fixture(scope="session")
def tiny_generator():
    from embedding.stylegan2 import GeneratorConfig, load_generator

    G, info = load_generator(None, config=GeneratorConfig(**TINY), seed=0)
    return G, info


@pytest.fixture(scope="session")
def rendered_photos(tiny_generator):
    """(latent w (6, 512), images (6, 3, 16, 16) in [-1, 1]) rendered from known w."""
    G, _ = tiny_generator
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(6, G.z_dim, generator=gen)
    with torch.no_grad():
        ws = G.mapping(z, update_w_avg=False)
        img = G.synthesis(ws, noise_mode="const")
    # a random-init generator's output is not confined to [-1, 1]; photos are
    img = img / img.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1.0)
    return ws[:, 0], img


@pytest.fixture(scope="session")
def stlpips():
    from embedding.perceptual import load_perceptual

    return load_perceptual("stlpips")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # The CI box has 2 cores shared with other jobs; two OpenMP threads fighting for them
    # made these tests ~7x slower. Batch invariance was also checked with 2 threads.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
