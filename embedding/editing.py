"""Latent editing along an attribute direction (the paper's "health attribute").

The health attribute is the Cox coefficient vector on the latents: moving a latent along
+coef raises the model's risk (a sicker look), along -coef lowers it (a healthier look).
Amounts are in latent units along the unit direction; `latent_spread` turns "k standard
deviations of the cohort along d" into such amounts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from embedding.stylegan2.generator import Generator


def _tensor(x: torch.Tensor | np.ndarray | Sequence[float]) -> torch.Tensor:
    return x.detach().to(torch.float32) if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float32))


def unit(direction: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(D,) -> (D,) float32 of unit norm; raises ValueError for a zero or non-finite vector."""
    d = _tensor(direction).reshape(-1)
    norm = d.norm()
    if not torch.isfinite(norm) or float(norm) == 0.0:
        raise ValueError("direction must be a finite non-zero vector")
    return d / norm


def latent_spread(latents: torch.Tensor | np.ndarray, direction: torch.Tensor | np.ndarray) -> float:
    """Standard deviation of the latents' (N, D) components along unit(direction)."""
    return float((_tensor(latents) @ unit(direction)).std(unbiased=False))


def edit_latents(
    latents: torch.Tensor | np.ndarray,
    direction: torch.Tensor | np.ndarray,
    amounts: Sequence[float] | torch.Tensor | np.ndarray,
) -> torch.Tensor:
    """latents (N, D) moved by each amount (K,) along unit(direction) -> (N, K, D) float32.

    edited[n, k] = latents[n] + amounts[k] * unit(direction).
    """
    lat = _tensor(latents)
    if lat.ndim != 2:
        raise ValueError(f"latents must be (N, D), got shape {tuple(lat.shape)}")
    d = unit(direction)
    if d.shape[0] != lat.shape[1]:
        raise ValueError(f"direction has {d.shape[0]} entries but latents have {lat.shape[1]}")
    a = _tensor(amounts).reshape(-1).to(lat.device)
    return lat[:, None, :] + a[None, :, None] * d.to(lat.device)[None, None, :]


def render(
    G: Generator,
    latents: torch.Tensor,
    *,
    space: str = "w",
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
    batch_size: int = 32,
) -> torch.Tensor:
    """latents (M, D) in z or w (one w for every layer), or (M, num_ws, w_dim) in w+,
    -> images (M, 3, R, R) float32 in about [-1, 1], on the CPU."""
    if space not in ("z", "w", "w+"):
        raise ValueError(f"space must be 'z', 'w' or 'w+', got {space!r}")
    device = next(iter(G.parameters())).device
    out = []
    with torch.no_grad():
        for start in range(0, latents.shape[0], batch_size):
            x = latents[start:start + batch_size].to(device, torch.float32)
            if space == "z":
                ws = G.mapping(x, truncation_psi=truncation_psi)
            elif space == "w":
                ws = x.unsqueeze(1).expand(-1, G.num_ws, -1)
            else:
                ws = x
            out.append(G.synthesis(ws, noise_mode=noise_mode).float().cpu())
    return torch.cat(out, dim=0)


def edit_grid(
    G: Generator,
    latents: torch.Tensor | np.ndarray,
    direction: torch.Tensor | np.ndarray,
    amounts: Sequence[float] | torch.Tensor | np.ndarray,
    *,
    space: str = "w",
    truncation_psi: float = 1.0,
    batch_size: int = 32,
) -> torch.Tensor:
    """Render every latent (N, D) at every amount (K,) -> images (N, K, 3, R, R) in [-1, 1]."""
    edited = edit_latents(latents, direction, amounts)
    n, k, dim = edited.shape
    imgs = render(G, edited.reshape(n * k, dim), space=space, truncation_psi=truncation_psi,
                  batch_size=batch_size)
    return imgs.reshape(n, k, *imgs.shape[1:])


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(..., 3, R, R) float in [-1, 1] -> (..., R, R, 3) uint8 (NVIDIA's x·127.5 + 128)."""
    x = (images.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def tile(grid: torch.Tensor, *, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Grid images (N, K, 3, R, R) -> one uint8 picture (N·R + (N+1)·pad, K·R + (K+1)·pad, 3):
    row n holds latent n, column k amount k."""
    if grid.ndim != 5:
        raise ValueError(f"grid must be (N, K, 3, R, R), got shape {tuple(grid.shape)}")
    cells = to_uint8(grid)  # (N, K, R, R, 3)
    n, k, h, w, c = cells.shape
    out = np.full((n * h + (n + 1) * pad, k * w + (k + 1) * pad, c), fill, dtype=np.uint8)
    for i in range(n):
        for j in range(k):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = cells[i, j]
    return out


ProjectFn = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]


def photo_like(images: torch.Tensor) -> torch.Tensor:
    """Rendered images (M, 3, R, R) float -> (M, 3, R, R) float32 in [-1, 1] on the 8-bit grid.

    What a rendered face becomes once saved as a photo and read back for projection: clipped,
    quantised by to_uint8 and rescaled by embedding.project_batch.generator_input's x / 127.5 - 1.
    """
    u = torch.from_numpy(to_uint8(images))  # (M, R, R, 3) uint8
    return u.movedim(-1, -3).to(torch.float32) / 127.5 - 1.0


def edit_and_reproject(
    G: Generator,
    latents: torch.Tensor | np.ndarray,
    direction: torch.Tensor | np.ndarray,
    betas: Sequence[float] | torch.Tensor | np.ndarray,
    *,
    space: str,
    project_fn: ProjectFn,
    quantize: bool = True,
    truncation_psi: float = 1.0,
    chunk_size: int | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Edit every latent along the direction, render it, and project the picture back.

    The edit loop of the health attribute: a direction is only a property of faces if moving
    along it changes pictures in a way that projection recovers, so the edited latents are not
    scored directly but through rendered images, as a photo would be.

    Args:
        G: generator (embedding.stylegan2 API); used only to render, not modified.
        latents: (N, D) patients' latents in `space` ("z" or "w"; one w for every layer).
        direction: (D,) e.g. the embedding Cox model's coefficients b on raw latents. It is
            normalised, d̂ = direction / ||direction||, so a beta is a distance in latent units
            along d̂ (the Cox risk then moves by beta·||b||); latent_spread turns "k SDs of the
            cohort along d̂" into betas.
        betas: (K,) edit amounts; edited[n, k] = latents[n] + betas[k] · d̂.
        space: "z" or "w", the space of `latents`, `direction` and project_fn's output.
        project_fn: images -> latents. It receives ONE float32 CPU tensor (M, 3, R, R) in
            [-1, 1] (R = G.img_resolution), the format of embedding.projection.project's
            `images`, in patient-major order (image j is patient j // K at beta j % K), and
            returns (M, D) latents in `space` (array or tensor), e.g.
            `lambda im: project(G, im, space="w", steps=..., stats=stats).latents`.
        quantize: True (default) passes the images on the 8-bit grid, as a saved photo read
            back (photo_like); False passes the renders clipped to [-1, 1] but unquantised.
        truncation_psi: used when space is "z" (mapping at render time).
        chunk_size: images per project_fn call; None: all N·K in one call. A project_fn that
            seeds by position in its batch (project's int seed) then sees other seeds per image.
        batch_size: render batch.

    Returns:
        (N, K, D) float32 numpy: the re-projected latent of each patient at each beta.

    Raises:
        ValueError: bad shapes, space, chunk_size, or a project_fn answer of the wrong shape.
    """
    if space not in ("z", "w"):
        raise ValueError(f"space must be 'z' or 'w' (the space of the Cox model's latents), got {space!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or an integer >= 1, got {chunk_size!r}")
    b = _tensor(betas).reshape(-1)
    if b.numel() < 1 or not torch.isfinite(b).all():
        raise ValueError("betas must be a non-empty sequence of finite numbers")
    edited = edit_latents(latents, direction, b)  # (N, K, D), checks shapes and the direction
    n, k, dim = edited.shape
    if n < 1:
        raise ValueError("latents is empty; pass at least one patient's latent")
    images = render(G, edited.reshape(n * k, dim), space=space, truncation_psi=truncation_psi,
                    batch_size=batch_size)
    # a random-init (or overshooting) generator leaves [-1, 1]; a photo is clipped there
    images = photo_like(images) if quantize else images.clamp(-1.0, 1.0)
    step = n * k if chunk_size is None else chunk_size
    out = []
    for start in range(0, n * k, step):
        chunk = images[start:start + step]
        got = project_fn(chunk)
        arr = (got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)).astype(np.float32)
        if arr.shape != (chunk.shape[0], dim):
            raise ValueError(f"project_fn must return ({chunk.shape[0]}, {dim}) latents for {chunk.shape[0]} images, "
                             f"got shape {arr.shape}; return the result's .latents (space {space!r})")
        if not np.isfinite(arr).all():
            raise ValueError("project_fn returned NaN or infinite latents; check the projection settings")
        out.append(arr)
    return np.concatenate(out).reshape(n, k, dim)
