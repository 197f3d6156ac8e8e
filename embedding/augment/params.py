"""The random draws of ADA's augmentation pipeline (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"), written from the paper's description.

Every op fires independently per image with probability ``p``. The ops run in the paper's order:

=============  ======================================================================================
blit           ``xflip`` (mirror x, i ~ U{0, 1}), ``rotate90`` (k * 90 degrees, k ~ U{0..3}),
               ``xint`` (integer translation, each axis ~ U(-1/8, 1/8) of the size, rounded to pixels)
geom           ``scale`` (isotropic, lognormal std 0.2 ln 2), ``rotate`` (uniform angle, see below),
               ``aniso`` (x by s, y by 1/s, lognormal std 0.2 ln 2), ``xfrac`` (translation, normal
               with std 1/8 of the size per axis)
color          ``brightness`` (additive, normal std 0.2), ``contrast`` (multiplicative, lognormal std
               0.5 ln 2), ``lumaflip`` (reflect through the plane orthogonal to the luma axis,
               i ~ U{0, 1}), ``hue`` (rotation around the luma axis, uniform angle), ``saturation``
               (scale off the luma axis, lognormal std 1 ln 2)
=============  ======================================================================================

Groups: ``"blit"``, ``"geom"``, ``"color"`` and ``"bgc"`` (all three, the default). ``rotate90`` needs
square images. Borders are filled by reflection (see :mod:`embedding.augment.pipeline`, which applies
the draws).

``rotate`` follows the paper: the arbitrary rotation is applied twice, once before and once after the
anisotropic scaling (so the stretch gets an arbitrary orientation), each time with probability
``1 - sqrt(1 - p)``; the probability that at least one of the two fires is then exactly ``p``.

Every draw is made for every selected op on every call, whatever p is, so a seeded
``torch.Generator`` reproduces the same augmentation, and raising p only adds firing ops to the
same draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

BLIT_OPS: tuple[str, ...] = ("xflip", "rotate90", "xint")
GEOM_OPS: tuple[str, ...] = ("scale", "rotate", "aniso", "xfrac")
COLOR_OPS: tuple[str, ...] = ("brightness", "contrast", "lumaflip", "hue", "saturation")
ALL_OPS: tuple[str, ...] = BLIT_OPS + GEOM_OPS + COLOR_OPS
OP_GROUPS: dict[str, tuple[str, ...]] = {
    "blit": BLIT_OPS,
    "geom": GEOM_OPS,
    "color": COLOR_OPS,
    "bgc": ALL_OPS,
}
DEFAULT_OPS = "bgc"

# The paper's strengths (Karras et al. 2020, the appendix that details the pipeline).
XINT_MAX = 0.125
SCALE_STD = 0.2 * math.log(2.0)
ANISO_STD = 0.2 * math.log(2.0)
XFRAC_STD = 0.125
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5 * math.log(2.0)
SATURATION_STD = 1.0 * math.log(2.0)

_F64 = torch.float64
# Exact cos/sin of k * 90 degrees: math.cos(math.pi / 2) is 6e-17, not 0, and would blur blits.
_COS90 = (1.0, 0.0, -1.0, 0.0)
_SIN90 = (0.0, 1.0, 0.0, -1.0)


def resolve_ops(ops: str | Iterable[str]) -> frozenset[str]:
    """The op names selected by ``ops``: one op or group name, or an iterable of them.

    Raises ValueError naming the known ops and groups for an unknown name. Order does not matter; the
    ops always run in the pipeline's order.
    """
    names = [ops] if isinstance(ops, str) else list(ops)
    selected: set[str] = set()
    for name in names:
        if name in OP_GROUPS:
            selected.update(OP_GROUPS[name])
        elif name in ALL_OPS:
            selected.add(name)
        else:
            raise ValueError(f"unknown augmentation {name!r}; known groups: {', '.join(OP_GROUPS)}; "
                             f"known ops: {', '.join(ALL_OPS)}")
    return frozenset(selected)


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the pipeline for a batch of N images.

    geom_inv:     (N, 3, 3) float64, maps output pixel-centred coordinates to input ones (the inverse of
                  the composed geometric transform); the identity where no geometric op fired.
    geom_exact:   (N,) bool, True where some blit op fired and no geom op did (resampled by gather).
    geom_active:  (N,) bool, True where any geometric op fired.
    color:        (N, 4, 4) float64, the composed colour matrix on homogeneous RGB; the identity where no
                  colour op fired.
    color_active: (N,) bool, True where any colour op fired.
    """

    geom_inv: torch.Tensor
    geom_exact: torch.Tensor
    geom_active: torch.Tensor
    color: torch.Tensor
    color_active: torch.Tensor


class _Draws:
    """Random draws in a fixed order on the generator's device, handed over as float64 on `device`."""

    def __init__(self, n: int, generator: torch.Generator | None, device: torch.device) -> None:
        self.n = n
        self.generator = generator
        self.source = generator.device if generator is not None else device
        self.device = device

    def uniform(self) -> torch.Tensor:
        return torch.rand(self.n, generator=self.generator, device=self.source, dtype=_F64).to(self.device)

    def normal(self) -> torch.Tensor:
        return torch.randn(self.n, generator=self.generator, device=self.source, dtype=_F64).to(self.device)

    def fires(self, prob: float) -> torch.Tensor:
        # `<` so that prob = 0 never fires, even on a draw of exactly 0.
        return self.uniform() < prob


def _eye(n: int, size: int, device: torch.device) -> torch.Tensor:
    return torch.eye(size, dtype=_F64, device=device).expand(n, size, size).clone()


def _affine(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor,
            tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) [[a, b, tx], [c, d, ty], [0, 0, 1]] from (N,) entries."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([torch.stack([a, b, tx], -1), torch.stack([c, d, ty], -1),
                        torch.stack([zero, zero, one], -1)], -2)


def _rotation(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(cos)
    return _affine(cos, -sin, sin, cos, zero, zero)


def _scaling(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(sx)
    return _affine(sx, zero, zero, sy, zero, zero)


def _translation(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    one = torch.ones_like(tx)
    return _affine(one, torch.zeros_like(tx), torch.zeros_like(tx), one, tx, ty)


def _only_where(fires: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    # Select, not blend: an op that did not fire must leave an exact identity, not 1 +- an ulp.
    eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
    return torch.where(fires[:, None, None], m, eye)


def _sample_geometry(d: _Draws, p: float, ops: frozenset[str], height: int, width: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(geom_inv (N, 3, 3), any blit fired (N,), any geom fired (N,))."""
    n, dev = d.n, d.device
    inv = _eye(n, 3, dev)
    blitted = torch.zeros(n, dtype=torch.bool, device=dev)
    warped = torch.zeros(n, dtype=torch.bool, device=dev)

    # The forward transform is M_last @ ... @ M_first; its inverse is built as
    # M_first^-1 @ ... @ M_last^-1, each factor inverted in closed form (exact for the blits).
    def then(fires: torch.Tensor, m_inv: torch.Tensor) -> None:
        nonlocal inv
        inv = inv @ _only_where(fires, m_inv)

    if "xflip" in ops:
        fires = d.fires(p) & (d.uniform() < 0.5)
        sx = torch.where(fires, -1.0, 1.0).to(_F64)
        then(fires, _scaling(sx, torch.ones_like(sx)))
        blitted |= fires
    if "rotate90" in ops:
        fires = d.fires(p)
        k = (d.uniform() * 4).floor().clamp(max=3).long()
        fires &= k != 0
        # Inverse of a rotation by k quarter turns: (4 - k) quarter turns, cos/sin from the exact table.
        k_inv = (4 - k) % 4
        cos = torch.tensor(_COS90, dtype=_F64, device=dev)[k_inv]
        sin = torch.tensor(_SIN90, dtype=_F64, device=dev)[k_inv]
        then(fires, _rotation(cos, sin))
        blitted |= fires
    if "xint" in ops:
        fires = d.fires(p)
        tx = torch.round((d.uniform() * 2 - 1) * XINT_MAX * width)
        ty = torch.round((d.uniform() * 2 - 1) * XINT_MAX * height)
        fires &= (tx != 0) | (ty != 0)
        then(fires, _translation(-tx, -ty))
        blitted |= fires
    if "scale" in ops:
        fires = d.fires(p)
        s = torch.exp(d.normal() * SCALE_STD)
        then(fires, _scaling(1 / s, 1 / s))
        warped |= fires
    p_rot = 1 - math.sqrt(1 - p)
    rotations: list[tuple[torch.Tensor, torch.Tensor]] = []
    if "rotate" in ops:
        for _ in range(2):
            fires = d.fires(p_rot)
            rotations.append((fires, (d.uniform() * 2 - 1) * math.pi))
    if rotations:
        fires, theta = rotations[0]
        then(fires, _rotation(torch.cos(-theta), torch.sin(-theta)))
        warped |= fires
    if "aniso" in ops:
        fires = d.fires(p)
        s = torch.exp(d.normal() * ANISO_STD)
        then(fires, _scaling(1 / s, s))
        warped |= fires
    if rotations:
        fires, theta = rotations[1]
        then(fires, _rotation(torch.cos(-theta), torch.sin(-theta)))
        warped |= fires
    if "xfrac" in ops:
        fires = d.fires(p)
        tx = d.normal() * XFRAC_STD * width
        ty = d.normal() * XFRAC_STD * height
        then(fires, _translation(-tx, -ty))
        warped |= fires
    return inv, blitted, warped


def _luma_axis(device: torch.device) -> torch.Tensor:
    return torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=_F64, device=device) / math.sqrt(3.0)


def _sample_color(d: _Draws, p: float, ops: frozenset[str], grey: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(colour matrix (N, 4, 4), any colour op fired (N,))."""
    n, dev = d.n, d.device
    mat = _eye(n, 4, dev)
    active = torch.zeros(n, dtype=torch.bool, device=dev)
    v = _luma_axis(dev)
    vvt = torch.outer(v, v)
    eye4 = torch.eye(4, dtype=_F64, device=dev)

    def then(fires: torch.Tensor, m: torch.Tensor) -> None:
        nonlocal mat, active
        mat = _only_where(fires, m) @ mat
        active |= fires

    if "brightness" in ops:
        fires = d.fires(p)
        b = d.normal() * BRIGHTNESS_STD
        m = _eye(n, 4, dev)
        m[:, :3, 3] = b[:, None]
        then(fires, m)
    if "contrast" in ops:
        fires = d.fires(p)
        c = torch.exp(d.normal() * CONTRAST_STD)
        m = _eye(n, 4, dev)
        m[:, :3, :3] *= c[:, None, None]
        then(fires, m)
    if "lumaflip" in ops:
        fires = d.fires(p) & (d.uniform() < 0.5)
        then(fires, (eye4 - 2 * vvt).expand(n, 4, 4))
    if "hue" in ops:
        fires = d.fires(p)
        theta = (d.uniform() * 2 - 1) * math.pi
        # Rodrigues' rotation around the unit luma axis v: cos I + sin [v]x + (1 - cos) v v^T.
        cross = torch.zeros(4, 4, dtype=_F64, device=dev)
        cross[0, 1], cross[0, 2], cross[1, 2] = -v[2], v[1], -v[0]
        cross[1, 0], cross[2, 0], cross[2, 1] = v[2], -v[1], v[0]
        cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        rot = cos * eye4 + sin * cross + (1 - cos) * vvt
        rot[:, 3, :] = eye4[3]
        rot[:, :, 3] = eye4[:, 3]
        if not grey:
            then(fires, rot)
    if "saturation" in ops:
        fires = d.fires(p)
        s = torch.exp(d.normal() * SATURATION_STD)
        sat = vvt + (eye4 - vvt) * s[:, None, None]
        sat[:, 3, :] = eye4[3]
        sat[:, :, 3] = eye4[:, 3]
        if not grey:
            then(fires, sat)
    return mat, active


def sample_params(n: int, *, p: float, height: int, width: int, ops: str | Iterable[str] = DEFAULT_OPS,
                  generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                  grey: bool = False) -> AugmentParams:
    """Draw the augmentation of N images of size (height, width); ``grey`` skips hue and saturation.

    The draws are made on ``generator``'s device (the global RNG of ``device`` without one) and
    returned on ``device``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    selected = resolve_ops(ops)
    if "rotate90" in selected and height != width:
        raise ValueError(f"the rotate90 op needs square images, got height {height} and width {width}")
    d = _Draws(n, generator, torch.device(device))
    inv, blitted, warped = _sample_geometry(d, p, selected, height, width)
    color, color_active = _sample_color(d, p, selected, grey)
    return AugmentParams(geom_inv=inv, geom_exact=blitted & ~warped, geom_active=blitted | warped, color=color,
                         color_active=color_active)
