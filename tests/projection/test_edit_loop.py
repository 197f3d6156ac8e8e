"""The health attribute's edit loop: edit along d, render, re-project with the real `project`, re-score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedding.editing import (
    edit_and_reproject,
    edit_latents,
    latent_spread,
    photo_like,
    render,
    to_uint8,
)
from embedding.projection import latent_statistics, project
from ground.errors import DataError
from training.edit_loop import cosine_with_ci, direction_cosine, edit_loop_stats, patient_spearman

STATS_SAMPLES = 256
STEPS = 30


@pytest.fixture(scope="module")
def loop(tiny_generator):
    """(G, patients' w (8, 512), visible unit direction d, betas (5,), latent stats)."""
    from embedding.direction import generator_direction

    G, _ = tiny_generator
    d = generator_direction(G, space="w", samples=8, seed=0, iterations=10).vector.numpy()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        w = G.mapping(torch.randn(8, G.z_dim, generator=gen), update_w_avg=False)[:, 0]
        ref = G.mapping(torch.randn(256, G.z_dim, generator=gen), update_w_avg=False)[:, 0]
    # 2 cohort SDs per step along d: well above what a 30-step projection blurs along d
    # (measured per-patient rho 0.7-1.0, pooled ~0.92 on 2 cores, 2026)
    betas = np.array([-4.0, -2.0, 0.0, 2.0, 4.0]) * latent_spread(ref, d)
    stats = latent_statistics(G, samples=STATS_SAMPLES)
    return G, w.numpy(), d, betas, stats


def _project_fn(G, stats):
    def fn(images):
        assert isinstance(images, torch.Tensor) and images.dtype == torch.float32
        assert images.shape[1:] == (3, G.img_resolution, G.img_resolution)
        return project(G, images, space="w", steps=STEPS, loss="mse", w_avg_samples=STATS_SAMPLES,
                       stats=stats, seed=0).latents
    return fn


@pytest.fixture(scope="module")
def reprojected(loop):
    G, w, d, betas, stats = loop
    return edit_and_reproject(G, w, d * 3.0, betas, space="w", project_fn=_project_fn(G, stats))


def test_reprojected_risk_rises_with_beta(loop, reprojected):
    G, w, d, betas, _ = loop
    assert reprojected.shape == (8, 5, 512) and reprojected.dtype == np.float32
    risk = reprojected @ d  # the score is latent @ d
    out = edit_loop_stats(risk, betas, bootstrap=200, seed=0)
    print(out["rho"], out["monotone_share"], out["mean_risk"])
    assert out["rho"]["value"] > 0.8
    assert out["rho"]["ci"][0] > 0.5
    assert np.all(np.diff(out["mean_risk"]) > 0)


def test_project_fn_sees_photo_like_images_in_patient_major_order(loop):
    G, w, d, betas, _ = loop
    seen = []

    def fake(images):
        seen.append(images)
        return torch.zeros(images.shape[0], 512)

    out = edit_and_reproject(G, w[:2], d, betas[:3], space="w", project_fn=fake, chunk_size=4)
    assert out.shape == (2, 3, 512) and not out.any()
    assert [x.shape[0] for x in seen] == [4, 2]
    images = torch.cat(seen)
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
    # on the 8-bit grid, as a saved photo read back by generator_input (x / 127.5 - 1)
    levels = (images + 1.0) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    expected = render(G, edit_latents(w[:2], d, betas[:3]).reshape(6, -1), space="w")
    assert torch.equal(images, photo_like(expected))
    assert np.array_equal(to_uint8(expected[4]), to_uint8(images[4]))  # patient 1, beta 1


def test_a_projection_that_ignores_the_photo_gives_no_rank_correlation(loop):
    G, w, d, betas, _ = loop
    rng = np.random.default_rng(0)

    def random_fn(images):
        return rng.normal(size=(images.shape[0], 512)).astype(np.float32)

    n = 40  # enough patients for a CI that is not all noise
    lat = np.repeat(w, n // len(w), axis=0)
    risk = edit_and_reproject(G, lat, d, betas, space="w", project_fn=random_fn) @ d
    out = edit_loop_stats(risk, betas, bootstrap=200, seed=0)
    assert abs(out["rho"]["value"]) < 0.3
    assert out["rho"]["ci"][0] < 0 < out["rho"]["ci"][1]
    assert out["monotone_share"] < 0.2


def test_edit_and_reproject_refuses_bad_inputs(loop):
    G, w, d, betas, _ = loop

    def short(images):
        return np.zeros((images.shape[0], 3))

    with pytest.raises(ValueError, match=r"project_fn must return \(10, 512\) latents"):
        edit_and_reproject(G, w[:2], d, betas, space="w", project_fn=short)
    with pytest.raises(ValueError, match="space must be 'z' or 'w'"):
        edit_and_reproject(G, w[:2], d, betas, space="w+", project_fn=short)
    with pytest.raises(ValueError, match="chunk_size must be None or an integer >= 1"):
        edit_and_reproject(G, w[:2], d, betas, space="w", project_fn=short, chunk_size=0)
    with pytest.raises(ValueError, match="direction has 3 entries but latents have 512"):
        edit_and_reproject(G, w[:2], d[:3], betas, space="w", project_fn=short)
    with pytest.raises(ValueError, match="NaN or infinite latents"):
        edit_and_reproject(G, w[:1], d, betas[:1], space="w",
                           project_fn=lambda im: np.full((im.shape[0], 512), np.nan))


def test_stats_of_a_monotone_matrix():
    betas = np.array([-1.0, 0.0, 0.5, 2.0])
    risk = np.array([[0.0, 1.0, 2.0, 3.0], [-5.0, -4.0, 10.0, 11.0], [1.0, 1.0, 2.0, 2.0]])
    out = edit_loop_stats(risk, betas, bootstrap=50, seed=1)
    assert out["rho_per_patient"][:2] == [1.0, 1.0]
    assert out["monotone_share"] == 1.0 and out["monotone"]["value"] == 1.0
    assert out["mean_risk"] == pytest.approx(risk.mean(axis=0).tolist())
    strict = edit_loop_stats(risk[:2], betas, bootstrap=50, seed=1)
    assert strict["rho"] == {"value": 1.0, "ci": [1.0, 1.0], "resamples": 50}
    falling = edit_loop_stats(-risk[:2], betas, bootstrap=0)
    assert falling["rho"]["value"] == -1.0 and falling["monotone_share"] == 0.0


def test_a_flat_patient_counts_as_no_correlation_and_no_rise():
    assert patient_spearman(np.array([[2.0, 2.0, 2.0]]), np.array([0.0, 1.0, 2.0])).tolist() == [0.0]
    out = edit_loop_stats(np.ones((4, 3)), np.array([0.0, 1.0, 2.0]), bootstrap=20)
    assert out["rho"]["value"] == 0.0 and out["monotone_share"] == 0.0


def test_edit_loop_stats_is_deterministic_given_seed():
    rng = np.random.default_rng(0)
    risk = rng.normal(size=(30, 4)) + np.arange(4)
    betas = np.arange(4.0)
    assert edit_loop_stats(risk, betas, seed=3) == edit_loop_stats(risk, betas, seed=3)
    assert edit_loop_stats(risk, betas, seed=3)["rho"]["ci"] != edit_loop_stats(risk, betas, seed=4)["rho"]["ci"]


@pytest.mark.parametrize(("risk", "betas", "match"), [
    (np.zeros((3, 2)), [0.0, 1.0], "at least 3 values"),
    (np.zeros((3, 3)), [0.0, 2.0, 1.0], "strictly increasing"),
    (np.zeros((3, 3)), [0.0, 0.0, 1.0], "strictly increasing"),
    (np.zeros((3, 4)), [0.0, 1.0, 2.0], r"risk must be \(patients, 3\)"),
    (np.zeros(3), [0.0, 1.0, 2.0], r"risk must be \(patients, 3\)"),
    (np.array([[0.0, 1.0, np.nan]]), [0.0, 1.0, 2.0], r"1 NaN or infinite values \(first in row 0\)"),
])
def test_edit_loop_stats_refuses_bad_input(risk, betas, match):
    with pytest.raises(DataError, match=match):
        edit_loop_stats(risk, np.asarray(betas))


def test_direction_cosine_is_signed():
    a = np.array([1.0, 2.0, 0.0])
    assert direction_cosine(a, 3 * a) == pytest.approx(1.0)
    assert direction_cosine(a, -a) == pytest.approx(-1.0)
    assert direction_cosine(a, np.array([-2.0, 1.0, 5.0])) == pytest.approx(0.0)
    with pytest.raises(DataError, match="a has 3 entries but b has 2"):
        direction_cosine(a, a[:2])
    with pytest.raises(DataError, match="zero vector"):
        direction_cosine(a, np.zeros(3))
    with pytest.raises(DataError, match="NaN or infinite"):
        direction_cosine(a, np.array([np.nan, 0.0, 1.0]))


def _linear_fits(n: int = 300, dim: int = 10, *, seed: int = 0):
    """Two least-squares fits of one noisy linear signal: on features 0-4 plus noise, and on all."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    beta = np.linspace(1.0, -1.0, dim)
    y = x @ beta + rng.normal(scale=1.0, size=n)
    noisy = x + rng.normal(scale=0.3, size=x.shape)  # a second, noisier measurement of the same latents

    def fit_a(idx):
        return np.linalg.lstsq(x[idx], y[idx], rcond=None)[0]

    def fit_b(idx):
        return np.linalg.lstsq(noisy[idx], y[idx], rcond=None)[0]

    return fit_a, fit_b, n


def test_cosine_of_two_fits_of_one_signal_is_high():
    fit_a, fit_b, n = _linear_fits()
    out = cosine_with_ci(fit_a, fit_b, n, bootstrap=100, seed=0)
    assert out["value"] > 0.8 and out["ci"][0] > 0.8 and out["resamples"] == 100
    assert out["ci"][0] <= out["value"] <= out["ci"][1] + 1e-9
    assert cosine_with_ci(fit_a, fit_b, n, bootstrap=20, seed=2) == cosine_with_ci(fit_a, fit_b, n, bootstrap=20, seed=2)
    flipped = cosine_with_ci(fit_a, lambda idx: -fit_b(idx), n, bootstrap=20)
    assert flipped["value"] < -0.8  # signed: a flipped refit reads as disagreement


def test_cosine_with_ci_skips_resamples_without_events_and_checks_inputs():
    fit_a, fit_b, n = _linear_fits(n=12)
    event = np.zeros(n, dtype=bool)
    event[0] = True  # most resamples of 12 miss patient 0
    out = cosine_with_ci(fit_a, fit_b, n, bootstrap=50, seed=0, event=event)
    assert 0 < out["resamples"] < 50
    with pytest.raises(DataError, match=r"event has shape \(3,\) but n is 12"):
        cosine_with_ci(fit_a, fit_b, n, event=np.ones(3))
    with pytest.raises(DataError, match="n must be an integer >= 2"):
        cosine_with_ci(fit_a, fit_b, 1)
    with pytest.raises(DataError, match="fit_a returned 10 entries but fit_b 2"):
        cosine_with_ci(fit_a, lambda idx: np.ones(2), n)
    with pytest.raises(DataError, match="bootstrap must be an integer >= 0"):
        cosine_with_ci(fit_a, fit_b, n, bootstrap=-2)
