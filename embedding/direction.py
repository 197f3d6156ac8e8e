"""The generator's most visible direction in latent space.

For an image function f (latent -> image) with Jacobian J_i at latent i, the direction
that changes images the most on average is the top eigenvector of M = mean_i J_iᵀ J_i.
A random direction in a random-init mapping network's z is nearly invisible (many z give
the same image), while this one is what projection can recover from pixels, so the
semi-synthetic cohort hides its prognostic signal along it.

M is never formed: power iteration needs only M v = mean_i J_iᵀ (J_i v), one
Jacobian-vector product (forward mode) and one vector-Jacobian product per latent. The
rows of f's batch must be independent (true of StyleGAN2: no batch statistics).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from embedding.stylegan2.generator import Generator

ImageFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Direction:
    """A unit direction and how visible it is.

    vector: (D,) float32, unit norm, sign fixed so that its largest-magnitude entry is > 0.
    eigenvalue: vᵀ M v = mean_i ||J_i v||², the mean squared image change per unit step.
    iterations: power iterations run; converged: whether the tolerance was met.
    """

    vector: torch.Tensor
    eigenvalue: float
    iterations: int
    converged: bool


def _jtj_product(fn: ImageFn, points: torch.Tensor, v: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float]:
    """Return (sum_i J_iᵀ J_i v  (D,), sum_i ||J_i v||²) over the rows of points (N, D)."""
    total = torch.zeros_like(v)
    sq = 0.0
    # torch.func transforms ignore an outer no_grad, which only stops autograd from also
    # recording the generator's parameters (several times slower otherwise)
    with torch.no_grad():
        for start in range(0, points.shape[0], batch_size):
            p = points[start:start + batch_size]
            tangent = v.expand_as(p).contiguous()
            jv = _jvp(fn, p, tangent)
            vjp_fn = torch.func.vjp(fn, p)[1]  # (output, vjp_fn)
            (jtjv,) = vjp_fn(jv)
            total += jtjv.sum(dim=0)
            sq += float(jv.pow(2).sum())
    return total, sq


def _jvp(fn: ImageFn, p: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
    try:
        return torch.func.jvp(fn, (p,), (tangent,))[1]  # (output, J tangent)
    except (NotImplementedError, RuntimeError) as exc:
        if "forward" not in str(exc).lower():
            raise
    # An op without forward-mode AD: J v = d/du [(Jᵀ u) · v], the double-vjp identity.
    with torch.enable_grad():
        p_ = p.detach().requires_grad_(True)
        out = fn(p_)
        u = torch.zeros_like(out, requires_grad=True)
        (g,) = torch.autograd.grad(out, p_, u, create_graph=True)
        (jv,) = torch.autograd.grad(g, u, tangent)
    return jv.detach()


def top_jtj_direction(
    fn: ImageFn,
    points: torch.Tensor,
    *,
    iterations: int = 50,
    tol: float = 1e-4,
    seed: int = 0,
    batch_size: int = 64,
) -> Direction:
    """Top eigenvector of mean_i J_iᵀ J_i by power iteration with Jacobian-vector products.

    Args:
        fn: maps latents (n, D) to outputs (n, ...) with independent rows (e.g. images).
        points: (N, D) latents at which the Jacobians are taken.
        iterations: at most this many power iterations.
        tol: stop when 1 - |cos(v_new, v_old)| < tol.
        seed: seeds the random start vector (the result is deterministic for a seed).
        batch_size: latents per Jacobian product (memory bound).

    Returns:
        Direction with vector (D,) float32 unit norm.
    """
    if points.ndim != 2 or points.shape[0] < 1:
        raise ValueError(f"points must be (N, D) with N >= 1, got shape {tuple(points.shape)}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    points = points.detach()
    n, dim = points.shape
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(dim, generator=gen, dtype=torch.float32).to(points.device, points.dtype)
    v = v / v.norm()
    converged = False
    it = 0
    eigen = 0.0
    for it in range(1, iterations + 1):  # noqa: B007 - `it` is reported
        mv, sq = _jtj_product(fn, points, v, batch_size)
        eigen = sq / n
        norm = mv.norm()
        if float(norm) == 0.0:
            raise ValueError("the function's Jacobian is zero at every point: no visible direction")
        v_new = mv / norm
        change = 1.0 - float(torch.abs(torch.dot(v_new, v)))
        v = v_new
        if change < tol:
            converged = True
            break
    # eigenvalue is the Rayleigh quotient at the previous v, within tol of the final one
    idx = int(torch.argmax(v.abs()))
    if v[idx] < 0:
        v = -v
    return Direction(vector=v.detach().to(torch.float32).cpu(), eigenvalue=float(eigen),
                     iterations=it, converged=converged)


def synthesis_options(G: Generator) -> dict[str, bool]:
    """Keyword options for G.synthesis on batches: the unfused modulated convolution (one
    shared-weight conv instead of a grouped conv per sample) when the generator offers it;
    same images to float rounding, about 10% less CPU for the power iteration at res 32
    (benchmarks/synth_speed.py)."""
    try:
        params = inspect.signature(G.synthesis.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"fused": False} if "fused" in params else {}


def broadcast_synthesis(G: Generator, *, noise_mode: str = "const") -> ImageFn:
    """w (n, w_dim) -> images (n, 3, R, R): one w for every synthesis layer."""
    opts = synthesis_options(G)

    def fn(w: torch.Tensor) -> torch.Tensor:
        return G.synthesis(w.unsqueeze(1).expand(-1, G.num_ws, -1), noise_mode=noise_mode, **opts)

    return fn


def full_generator(G: Generator, *, truncation_psi: float = 1.0, noise_mode: str = "const") -> ImageFn:
    """z (n, z_dim) -> images (n, 3, R, R) through mapping and synthesis."""
    opts = synthesis_options(G)

    def fn(z: torch.Tensor) -> torch.Tensor:
        return G.synthesis(G.mapping(z, truncation_psi=truncation_psi), noise_mode=noise_mode, **opts)

    return fn


def generator_direction(
    G: Generator,
    *,
    space: str = "w",
    samples: int = 64,
    seed: int = 0,
    iterations: int = 50,
    tol: float = 1e-4,
    truncation_psi: float = 1.0,
    batch_size: int = 64,
) -> Direction:
    """The generator's most visible direction in z or w (one w broadcast to all layers).

    The Jacobians are taken at `samples` latents: seeded z ~ N(0, I), mapped to w when
    space == "w". Returns Direction with vector (z_dim,) or (w_dim,).
    """
    if space not in ("z", "w"):
        raise ValueError(f"space must be 'z' or 'w', got {space!r}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    device = next(iter(G.parameters())).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(samples, G.z_dim, generator=gen).to(device)
    with torch.no_grad():
        if space == "w":
            points = G.mapping(z, truncation_psi=truncation_psi)[:, 0, :]
            fn = broadcast_synthesis(G)
        else:
            points = z
            fn = full_generator(G, truncation_psi=truncation_psi)
    return top_jtj_direction(fn, points, iterations=iterations, tol=tol, seed=seed + 1, batch_size=batch_size)
