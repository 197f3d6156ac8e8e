"""The most-visible-direction estimate: exact on functions whose J^T J is known, and on the
real generator more visible than random directions."""

from __future__ import annotations

import pytest
import torch

from embedding.direction import broadcast_synthesis, generator_direction, top_jtj_direction


def _explicit_top(fn, points):
    jac = torch.stack([torch.autograd.functional.jacobian(lambda x: fn(x[None])[0].reshape(-1), p, vectorize=True)
                       for p in points])
    m = (jac.transpose(1, 2) @ jac).mean(0)
    vals, vecs = torch.linalg.eigh(m)
    return vals[-1], vecs[:, -1]


def test_linear_map_gives_top_right_singular_vector():
    gen = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(40, 12, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(12, 12, generator=gen))
    sing = torch.linspace(1.0, 6.0, 12)  # a clear gap at the top: 6 vs 5.55
    A = u @ torch.diag(sing) @ v.T
    d = top_jtj_direction(lambda x: x @ A.T, torch.randn(5, 12, generator=gen), iterations=300, tol=1e-7)
    assert abs(float(d.vector @ v[:, -1])) > 0.999
    assert d.eigenvalue == pytest.approx(36.0, rel=1e-3)
    assert d.converged


def test_nonlinear_function_matches_explicit_jacobian():
    gen = torch.Generator().manual_seed(2)
    B = torch.randn(30, 8, generator=gen)

    def fn(x):
        return torch.sin(x @ B.T) * x.sum(1, keepdim=True)

    pts = torch.randn(6, 8, generator=gen)
    top_val, top_vec = _explicit_top(fn, pts)
    d = top_jtj_direction(fn, pts, iterations=500, tol=1e-8, batch_size=4)  # batches must not matter
    assert abs(float(d.vector @ top_vec)) > 0.999
    assert d.eigenvalue == pytest.approx(float(top_val), rel=1e-3)


def test_unit_norm_fixed_sign_and_deterministic():
    B = torch.randn(20, 10, generator=torch.Generator().manual_seed(3))
    pts = torch.randn(4, 10, generator=torch.Generator().manual_seed(4))
    a = top_jtj_direction(lambda x: torch.tanh(x @ B.T), pts, seed=0)
    b = top_jtj_direction(lambda x: torch.tanh(x @ B.T), pts, seed=0)
    assert torch.equal(a.vector, b.vector)
    assert float(a.vector.norm()) == pytest.approx(1.0, abs=1e-5)
    assert a.vector[a.vector.abs().argmax()] > 0


def test_generator_direction_is_more_visible_than_random(tiny_G, tiny_direction):
    d = tiny_direction.vector
    assert d.shape == (tiny_G.w_dim,)
    z = torch.randn(8, tiny_G.z_dim, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        w = tiny_G.mapping(z)[:, 0]
    fn = broadcast_synthesis(tiny_G)

    def visibility(v):
        _, jv = torch.func.jvp(fn, (w,), (v.expand_as(w).contiguous(),))
        return float(jv.pow(2).sum()) / len(w)

    rand = torch.randn(5, tiny_G.w_dim, generator=torch.Generator().manual_seed(10))
    best_random = max(visibility(r / r.norm()) for r in rand)
    assert visibility(d) > 3 * best_random


def test_generator_direction_matches_explicit_jacobian_at_the_same_points(tiny_G):
    # forward-mode AD through the real synthesis ops; 4x4-pooled images keep the explicit
    # Jacobian (48 outputs) cheap
    z = torch.randn(3, tiny_G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = tiny_G.mapping(z)[:, 0]
    synth = broadcast_synthesis(tiny_G)

    def fn(x):
        return torch.nn.functional.avg_pool2d(synth(x), 4)

    top_val, top_vec = _explicit_top(fn, w)
    d = top_jtj_direction(fn, w, iterations=100, tol=1e-6, seed=1)
    assert abs(float(d.vector @ top_vec)) > 0.999
    assert d.eigenvalue == pytest.approx(float(top_val), rel=1e-3)


def test_z_space_direction_has_z_dim(tiny_G):
    d = generator_direction(tiny_G, space="z", samples=4, iterations=3)
    assert d.vector.shape == (tiny_G.z_dim,)


def test_bad_points_shape():
    with pytest.raises(ValueError, match=r"points must be \(N, D\)"):
        top_jtj_direction(lambda x: x, torch.zeros(3))


def test_bad_iterations():
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        top_jtj_direction(lambda x: x, torch.zeros(2, 3), iterations=0)


def test_constant_function_has_no_direction():
    with pytest.raises(ValueError, match="Jacobian is zero"):
        top_jtj_direction(lambda x: x * 0.0, torch.ones(2, 3))


def test_bad_space(tiny_G):
    with pytest.raises(ValueError, match="space must be 'z' or 'w'"):
        generator_direction(tiny_G, space="w+")


def test_bad_samples(tiny_G):
    with pytest.raises(ValueError, match="samples must be >= 1"):
        generator_direction(tiny_G, samples=0)
