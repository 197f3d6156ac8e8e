"""Applying a drawn augmentation (:mod:`embedding.augment.params`) to images, and :func:`augment`.

Geometry. The geometric ops of one image compose into one 3x3 affine in pixel-centred coordinates
(origin at the image centre, x right, y down, one unit per pixel). An image on which only blit ops
fired is resampled *exactly*: its composed matrix maps pixel centres onto pixel centres, so the
output is a gather of input pixels (reflected at the borders), no interpolation. An image on which
any geom op fired is resampled once (bilinear, reflection
padding). The paper resamples through a wavelet-filtered 2x up/down-sampling to keep the
augmentation free of aliasing; plain bilinear sampling is an accepted simplification here: it blurs
and aliases slightly, and the discriminator might learn to spot that, which matters more at large p.

Colour. The colour ops of one image compose into one 4x4 matrix acting on homogeneous RGB
(r, g, b, 1), applied once. Images are expected in [-1, 1], where 0 is mid-grey, so contrast,
saturation, hue and luma flip pivot around mid-grey as in the paper. The luma axis is the paper's
(1, 1, 1) / sqrt(3), not a perceptual luma.

Single-channel (C = 1) images are treated as grey: brightness, contrast and luma flip act on them
(luma flip negates), hue and saturation are skipped (they are the identity on grey; their random
draws are still made so the stream of draws does not depend on C).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from embedding.augment.params import DEFAULT_OPS, AugmentParams, sample_params

_F64 = torch.float64


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Fold integer indices into [0, size) by mirroring about the borders (-1 -> 0, size -> size - 1),
    the same reflection as grid_sample's with align_corners=False."""
    m = torch.remainder(index, 2 * size)
    return torch.where(m >= size, 2 * size - 1 - m, m)


def _centred_grid(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(height, dtype=_F64, device=device) - (height - 1) / 2
    xs = torch.arange(width, dtype=_F64, device=device) - (width - 1) / 2
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return gx.reshape(-1), gy.reshape(-1)


def blit(images: torch.Tensor, geom_inv: torch.Tensor) -> torch.Tensor:
    """Resample (N, C, H, W) images by integer transforms (N, 3, 3) exactly: a gather, no interpolation.

    Raises ValueError where a matrix does not map pixel centres onto pixel centres.
    """
    n, c, h, w = images.shape
    gx, gy = _centred_grid(h, w, images.device)
    src_x = geom_inv[:, 0, :1] * gx + geom_inv[:, 0, 1:2] * gy + geom_inv[:, 0, 2:] + (w - 1) / 2
    src_y = geom_inv[:, 1, :1] * gx + geom_inv[:, 1, 1:2] * gy + geom_inv[:, 1, 2:] + (h - 1) / 2
    ix, iy = torch.round(src_x), torch.round(src_y)
    if not (torch.equal(ix, src_x) and torch.equal(iy, src_y)):
        raise ValueError("blit needs transforms that map pixel centres onto pixel centres")
    flat = _reflect(iy.long(), h) * w + _reflect(ix.long(), w)  # (N, H*W)
    out = images.reshape(n, c, h * w).gather(2, flat[:, None, :].expand(n, c, h * w))
    return out.reshape(n, c, h, w)


def resample(images: torch.Tensor, geom_inv: torch.Tensor) -> torch.Tensor:
    """Resample (N, C, H, W) images by (N, 3, 3) output-to-input transforms in pixel-centred
    coordinates: bilinear, reflection padding, one pass.

    The same values as F.grid_sample(bilinear, reflection, align_corners=False), written as four
    gathers so that it has a second derivative: the R1 penalty differentiates the discriminator's
    gradient through the augmentation, and CUDA has no double backward for grid_sample.
    Reflecting the four integer neighbours equals reflecting the continuous coordinate first.
    """
    n, c, h, w = images.shape
    gx, gy = _centred_grid(h, w, images.device)
    g = geom_inv.to(_F64)
    src_x = g[:, 0, :1] * gx + g[:, 0, 1:2] * gy + g[:, 0, 2:] + (w - 1) / 2   # (N, H*W) input pixel coords
    src_y = g[:, 1, :1] * gx + g[:, 1, 1:2] * gy + g[:, 1, 2:] + (h - 1) / 2
    x0, y0 = torch.floor(src_x), torch.floor(src_y)
    fx, fy = (src_x - x0).to(images.dtype)[:, None], (src_y - y0).to(images.dtype)[:, None]
    x0, y0 = x0.long(), y0.long()
    flat = images.reshape(n, c, h * w)

    def tap(dy: int, dx: int) -> torch.Tensor:
        idx = _reflect(y0 + dy, h) * w + _reflect(x0 + dx, w)
        return flat.gather(2, idx[:, None, :].expand(n, c, h * w))

    top = tap(0, 0) * (1 - fx) + tap(0, 1) * fx
    bottom = tap(1, 0) * (1 - fx) + tap(1, 1) * fx
    return (top * (1 - fy) + bottom * fy).reshape(n, c, h, w)


def recolor(images: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """Apply (N, 4, 4) colour matrices to (N, C, H, W) images, C = 3 (RGB) or 1 (grey)."""
    m = color.to(images.dtype)
    if images.shape[1] == 3:
        return torch.einsum("nij,njhw->nihw", m[:, :3, :3], images) + m[:, :3, 3, None, None]
    # A grey value g is the RGB pixel (g, g, g); the result's channel mean is the new grey value.
    gain = m[:, :3, :3].sum(dim=(1, 2)) / 3
    offset = m[:, :3, 3].mean(dim=1)
    return images * gain[:, None, None, None] + offset[:, None, None, None]


def apply_params(images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Apply a drawn augmentation to (N, C, H, W) images; images on which nothing fired pass through
    untouched (bit for bit). Differentiable w.r.t. ``images``."""
    out = images
    for mask, fn in ((params.geom_exact, blit), (params.geom_active & ~params.geom_exact, resample)):
        idx = mask.nonzero().squeeze(1)
        if idx.numel():
            out = out.index_copy(0, idx, fn(out.index_select(0, idx), params.geom_inv.index_select(0, idx)))
    idx = params.color_active.nonzero().squeeze(1)
    if idx.numel():
        out = out.index_copy(0, idx, recolor(out.index_select(0, idx), params.color.index_select(0, idx)))
    return out


def augment(images: torch.Tensor, *, p: float, generator: torch.Generator | None = None,
            ops: str | Iterable[str] = DEFAULT_OPS) -> torch.Tensor:
    """Augment (N, C, H, W) float images in [-1, 1] (C = 3, or C = 1 treated as grey), each selected op
    firing independently per image with probability ``p``. Returns (N, C, H, W), differentiable
    w.r.t. ``images``; with p = 0 the input itself is returned.

    ``ops``: an op or group name or an iterable of them (listed in :mod:`embedding.augment.params`); ``generator``
    makes the draws reproducible.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"images must have 3 (RGB) or 1 (grey) channels, got {c}")
    # No shortcut for p = 0: the draws are still made, so the generator's stream does not depend on p.
    params = sample_params(n, p=p, height=h, width=w, ops=ops, generator=generator, device=images.device,
                           grey=c == 1)
    return apply_params(images, params)
