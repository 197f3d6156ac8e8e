"""Latent editing along a unit direction and the grid helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedding.editing import edit_grid, edit_latents, latent_spread, render, tile, to_uint8, unit


def test_edit_latents_moves_along_the_unit_direction_only():
    lat = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    d = torch.tensor([0.0, 3.0, 0.0, 4.0, 0.0, 0.0])
    out = edit_latents(lat, d, [-1.0, 0.0, 2.5])
    assert out.shape == (3, 3, 6) and out.dtype == torch.float32
    assert torch.equal(out[:, 1], lat)
    delta = out[:, 2] - lat
    assert torch.allclose(delta, 2.5 * d.expand_as(delta) / 5.0, atol=1e-6)
    assert torch.allclose((out[:, 0] - lat) @ (d / 5.0), torch.full((3,), -1.0), atol=1e-6)


def test_edit_latents_accepts_numpy():
    out = edit_latents(np.zeros((2, 4)), np.array([2.0, 0, 0, 0]), np.array([1.0]))
    assert torch.equal(out[:, 0], torch.tensor([[1.0, 0, 0, 0]] * 2))


def test_latent_spread_is_sd_along_direction():
    lat = np.array([[1.0, 5.0], [3.0, -5.0]])
    assert latent_spread(lat, [2.0, 0.0]) == pytest.approx(1.0)


def test_zero_direction_is_refused():
    with pytest.raises(ValueError, match="finite non-zero"):
        unit(np.zeros(4))


def test_direction_length_must_match():
    with pytest.raises(ValueError, match="direction has 3 entries but latents have 4"):
        edit_latents(np.zeros((2, 4)), np.ones(3), [1.0])


def test_latents_must_be_2d():
    with pytest.raises(ValueError, match=r"latents must be \(N, D\)"):
        edit_latents(np.zeros(4), np.ones(4), [1.0])


def test_bad_render_space(tiny_G):
    with pytest.raises(ValueError, match="space must be 'z', 'w' or 'w\\+'"):
        render(tiny_G, torch.zeros(1, 512), space="x")


def test_grid_renders_each_edit_and_zero_amount_is_the_original(tiny_G, tiny_direction):
    z = torch.randn(2, tiny_G.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        w = tiny_G.mapping(z)[:, 0]
        direct = tiny_G.synthesis(w.unsqueeze(1).expand(-1, tiny_G.num_ws, -1), noise_mode="const")
    spread = latent_spread(w, tiny_direction.vector)
    grid = edit_grid(tiny_G, w, tiny_direction.vector, [-3 * spread, 0.0, 3 * spread], batch_size=4)
    assert grid.shape == (2, 3, 3, 16, 16)
    assert torch.allclose(grid[:, 1], direct, atol=1e-5)
    assert float((grid[:, 0] - grid[:, 2]).abs().mean()) > 0.05  # the edit is visible


def test_z_space_render_goes_through_mapping(tiny_G):
    z = torch.randn(2, tiny_G.z_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = tiny_G(z, noise_mode="const")
    assert torch.allclose(render(tiny_G, z, space="z"), expected, atol=1e-5)


def test_tile_layout():
    grid = torch.full((2, 3, 3, 4, 4), -1.0)
    grid[1, 2] = 1.0
    pic = tile(grid, pad=1)
    assert pic.shape == (2 * 4 + 3, 3 * 4 + 4, 3) and pic.dtype == np.uint8
    assert (pic[0, :] == 255).all()  # padding
    assert (pic[1:5, 1:5] == 0).all()
    assert (pic[6:10, 11:15] == 255).all()


def test_to_uint8_matches_nvidia_convention():
    x = torch.tensor([-1.0, 0.0, 1.0]).reshape(1, 3, 1, 1)
    assert to_uint8(x).reshape(-1).tolist() == [0, 128, 255]


def test_tile_needs_five_dims():
    with pytest.raises(ValueError, match=r"grid must be \(N, K, 3, R, R\)"):
        tile(torch.zeros(3, 4, 4))
