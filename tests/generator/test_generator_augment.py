"""ADA's augmentation pipeline and its probability controller (embedding.augment): identities, exactness
of the integer ops, colour invariants, gradients, seeding, and the controller's adaptation of p."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedding.augment import (
    ALL_OPS,
    BLIT_OPS,
    COLOR_OPS,
    GEOM_OPS,
    OP_GROUPS,
    P_MAX,
    AdaController,
    augment,
    blit,
    resample,
    resolve_ops,
    sample_params,
)

N, SIZE = 16, 16


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def images() -> torch.Tensor:
    """(16, 3, 16, 16) in [-1, 1], every value distinct within an image (a multiset check means something)."""
    g = _gen(0)
    vals = torch.stack([torch.randperm(3 * SIZE * SIZE, generator=g) for _ in range(N)]).float()
    return (vals / (3 * SIZE * SIZE - 1) * 2 - 1).reshape(N, 3, SIZE, SIZE)


# --------------------------------------------------------------------------------------------
# Identity, change, gradients
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ops", [*ALL_OPS, "bgc"])
@pytest.mark.parametrize("channels", [3, 1])
def test_p_zero_is_exactly_the_identity(images, ops, channels):
    x = images[:, :channels]
    assert torch.equal(augment(x, p=0.0, ops=ops, generator=_gen(1)), x)


@pytest.mark.parametrize("ops", [*ALL_OPS, *OP_GROUPS])
def test_each_op_alone_at_p_one_changes_the_images_and_keeps_gradients(images, ops):
    x = images.clone().requires_grad_(True)
    y = augment(x, p=1.0, ops=ops, generator=_gen(2))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert (y - x).abs().mean() > 0
    weights = torch.rand(y.shape, generator=_gen(3))
    (y * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_images_on_which_nothing_fired_pass_bit_for_bit(images):
    params = sample_params(N, p=0.3, height=SIZE, width=SIZE, ops="bgc", generator=_gen(4))
    untouched = ~params.geom_active & ~params.color_active
    assert untouched.any() and (~untouched).any()
    y = augment(images, p=0.3, ops="bgc", generator=_gen(4))
    assert torch.equal(y[untouched], images[untouched])
    assert (y[~untouched] != images[~untouched]).flatten(1).any(1).all()


def test_geometric_resampling_stays_in_the_input_range(images):
    # Bilinear weights are convex and reflection padding invents no values.
    y = augment(images, p=1.0, ops="geom", generator=_gen(5))
    assert y.amin() >= images.amin() - 1e-6 and y.amax() <= images.amax() + 1e-6


# --------------------------------------------------------------------------------------------
# Integer ops: exact, no resampling blur
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ops", ["xflip", "rotate90"])
def test_flip_and_rot90_alone_permute_the_pixels_of_each_image(images, ops):
    y = augment(images, p=1.0, ops=ops, generator=_gen(6))
    for a, b in zip(images, y, strict=True):
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values)
    if ops == "xflip":
        candidates = [lambda t: t.flip(-1)]
    else:
        candidates = [lambda t, k=k: torch.rot90(t, k, dims=(-2, -1)) for k in (1, 2, 3)]
    changed = 0
    for a, b in zip(images, y, strict=True):
        if not torch.equal(a, b):
            changed += 1
            assert sum(torch.equal(f(a), b) for f in candidates) == 1
    assert changed >= N // 4


def test_integer_translation_alone_is_an_exact_shift_with_reflected_borders(images):
    y = augment(images, p=1.0, ops="xint", generator=_gen(7))
    reach = SIZE // 8
    shifts_seen = set()
    for a, b in zip(images.numpy(), y.numpy(), strict=True):
        padded = np.pad(a, ((0, 0), (reach, reach), (reach, reach)), mode="symmetric")
        matches = [(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)
                   if np.array_equal(padded[:, reach - dy:reach - dy + SIZE, reach - dx:reach - dx + SIZE], b)]
        assert len(matches) == 1, "each output must be exactly one shifted copy of its input"
        shifts_seen.add(matches[0])
        assert np.isin(b, a).all()
    assert len(shifts_seen) > 3


def test_blit_group_only_moves_pixel_values(images):
    y = augment(images, p=1.0, ops="blit", generator=_gen(8))
    for a, b in zip(images, y, strict=True):
        assert torch.isin(b, a).all()
    assert not torch.equal(y, images)


def test_integer_transforms_land_on_pixel_centres_through_grid_sample_too(images):
    # The same integer matrices through the bilinear path agree with the exact gather: the pixel-centred
    # coordinates, the normalisation for affine_grid and the reflection padding all line up.
    params = sample_params(N, p=1.0, height=SIZE, width=SIZE, ops="blit", generator=_gen(9))
    exact = blit(images, params.geom_inv)
    assert torch.allclose(resample(images, params.geom_inv), exact, atol=1e-5)
    assert not torch.equal(exact, images)


def test_one_pixel_fractional_translation_matches_the_integer_shift_in_the_interior(images):
    inv = torch.eye(3, dtype=torch.float64).repeat(N, 1, 1)
    inv[:, 0, 2] = -1.0  # output x reads input x - 1: content moves right by one pixel
    y = resample(images, inv)
    assert torch.allclose(y[..., 1:], images[..., :-1], atol=1e-5)
    assert torch.allclose(y[..., 0], images[..., 0], atol=1e-5)  # reflected border


def test_blit_refuses_transforms_off_the_pixel_grid(images):
    inv = torch.eye(3, dtype=torch.float64).repeat(N, 1, 1)
    inv[:, 0, 2] = 0.5
    with pytest.raises(ValueError, match="pixel centres"):
        blit(images, inv)


# --------------------------------------------------------------------------------------------
# Colour ops
# --------------------------------------------------------------------------------------------

def _luma(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1)


def test_hue_rotation_keeps_luma_and_chroma_magnitude(images):
    y = augment(images, p=1.0, ops="hue", generator=_gen(10))
    assert torch.allclose(_luma(y), _luma(images), atol=1e-5)
    chroma = lambda t: (t - _luma(t)[:, None]).norm(dim=1)  # noqa: E731
    assert torch.allclose(chroma(y), chroma(images), atol=1e-5)
    assert (y - images).abs().mean() > 0.05


def test_luma_flip_twice_is_the_identity(images):
    once = augment(images, p=1.0, ops="lumaflip", generator=_gen(11))
    twice = augment(once, p=1.0, ops="lumaflip", generator=_gen(11))
    assert not torch.allclose(once, images)
    assert torch.allclose(twice, images, atol=1e-6)
    flipped = (once - images).flatten(1).abs().amax(1) > 0
    # A flipped pixel keeps its chroma and negates its luma.
    assert torch.allclose(_luma(once[flipped]), -_luma(images[flipped]), atol=1e-6)


@pytest.mark.parametrize("ops", ["hue", "saturation"])
def test_hue_and_saturation_leave_grey_pixels_alone(images, ops):
    grey = images[:, :1].expand(-1, 3, -1, -1)
    y = augment(grey, p=1.0, ops=ops, generator=_gen(12))
    assert torch.allclose(y, grey, atol=1e-6)


def test_brightness_adds_one_offset_and_contrast_scales_around_mid_grey(images):
    y = augment(images, p=1.0, ops="brightness", generator=_gen(13))
    offset = (y - images).flatten(1)
    assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-6)
    assert offset[:, 0].std() > 0.05
    y = augment(images, p=1.0, ops="contrast", generator=_gen(13))
    ratio = (y / images).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)
    assert (ratio[:, 0] > 0).all() and ratio[:, 0].std() > 0.05


def test_single_channel_images_are_treated_as_grey(images):
    x = images[:, :1]
    for ops in ("hue", "saturation"):  # the identity on grey: skipped, bit for bit
        assert torch.equal(augment(x, p=1.0, ops=ops, generator=_gen(14)), x)
    y = augment(x, p=1.0, ops="lumaflip", generator=_gen(14))
    assert all(torch.equal(b, a) or torch.allclose(b, -a, atol=1e-6) for a, b in zip(x, y, strict=True))
    assert not torch.equal(y, x)
    y = augment(x, p=1.0, ops="bgc", generator=_gen(14))
    assert y.shape == x.shape and not torch.equal(y, x)


# --------------------------------------------------------------------------------------------
# Selection, probabilities, seeding, argument checks
# --------------------------------------------------------------------------------------------

def test_op_selection_by_name_group_and_iterable():
    assert resolve_ops("blit") == {"xflip", "rotate90", "xint"}
    assert resolve_ops("bgc") == set(ALL_OPS) == set(BLIT_OPS) | set(GEOM_OPS) | set(COLOR_OPS)
    assert resolve_ops(["blit", "hue"]) == {"xflip", "rotate90", "xint", "hue"}
    with pytest.raises(ValueError, match=r"unknown augmentation 'cutout'.*known groups: blit.*known ops: xflip"):
        resolve_ops(["blit", "cutout"])


def test_bad_inputs_are_refused(images):
    with pytest.raises(ValueError, match="p must be in"):
        augment(images, p=1.5)
    with pytest.raises(ValueError, match="3 \\(RGB\\) or 1 \\(grey\\) channels"):
        augment(torch.zeros(2, 4, 8, 8), p=0.5)
    with pytest.raises(ValueError, match="float \\(N, C, H, W\\)"):
        augment(torch.zeros(3, 8, 8), p=0.5)
    with pytest.raises(ValueError, match="rotate90 op needs square images"):
        augment(torch.zeros(2, 3, 8, 12), p=0.5)
    y = augment(torch.rand(2, 3, 8, 12) * 2 - 1, p=1.0, ops=["xflip", "xint", "geom", "color"], generator=_gen(0))
    assert y.shape == (2, 3, 8, 12)


@pytest.mark.parametrize("op", [*ALL_OPS])
def test_each_op_fires_with_probability_p(op):
    n, p = 4000, 0.3
    params = sample_params(n, p=p, height=SIZE, width=SIZE, ops=op, generator=_gen(15))
    fired = (params.geom_active | params.color_active).double().mean().item()
    # Ops that draw a possible no-op (flip or not, k = 0, zero shift) fire visibly less often.
    visible = {"xflip": 0.5, "lumaflip": 0.5, "rotate90": 0.75}.get(op, 1.0)
    if op == "xint":
        visible = 1 - (1 / (2 * 0.125 * SIZE)) ** 2  # both axes round to 0 with probability 1/4 each
    assert fired == pytest.approx(p * visible, abs=0.03)


def test_seeded_draws_are_reproducible_and_independent_of_p(images):
    a = augment(images, p=0.5, generator=_gen(16))
    assert torch.equal(a, augment(images, p=0.5, generator=_gen(16)))
    assert not torch.equal(a, augment(images, p=0.5, generator=_gen(17)))
    g0, g1 = _gen(18), _gen(18)
    augment(images, p=0.0, generator=g0)
    augment(images, p=0.9, generator=g1)
    assert torch.equal(g0.get_state(), g1.get_state())


# --------------------------------------------------------------------------------------------
# AdaController
# --------------------------------------------------------------------------------------------

def test_p_rises_while_real_logits_are_all_positive():
    ctl = AdaController(batch_size=8, interval=4, speed_kimg=1.0)
    assert ctl.step_size == pytest.approx(8 * 4 / 1000)
    for step in range(1, 13):
        ctl.update(torch.rand(8) + 0.1)
        assert ctl.p == pytest.approx((step // 4) * ctl.step_size)
    assert ctl.r_t == 1.0


def test_p_falls_to_zero_and_stays_there_when_real_logits_are_all_negative():
    ctl = AdaController(batch_size=8, interval=1, speed_kimg=0.1, p=0.5)
    ps = [ctl.update(-torch.rand(8) - 0.1) for _ in range(10)]
    assert ps[0] == pytest.approx(0.5 - ctl.step_size)
    assert all(b <= a for a, b in zip(ps, ps[1:], strict=False))
    assert ps[-1] == 0.0 and ctl.r_t == -1.0


def test_p_stays_below_one():
    ctl = AdaController(batch_size=64, interval=1, speed_kimg=0.01)
    for _ in range(5):
        ctl.update(torch.ones(64))
    assert ctl.p == P_MAX < 1.0


def test_r_t_is_the_mean_sign_over_the_interval():
    ctl = AdaController(batch_size=4, interval=2, target=0.6)
    ctl.update([1.0, 2.0, -1.0, 0.0])
    assert ctl.r_t is None and ctl.p == 0.0
    ctl.update(torch.tensor([[3.0, 1.0], [1.0, -2.0]]))
    assert ctl.r_t == pytest.approx((1 + 1 - 1 + 0 + 1 + 1 + 1 - 1) / 8)
    assert ctl.p == 0.0  # r_t = 0.375 < target: p would go down, and it is clamped at 0


def test_fixed_mode_never_moves_and_still_tracks_r_t():
    ctl = AdaController(batch_size=8, interval=1, speed_kimg=0.1, p=0.25, mode="fixed")
    for sign in (1.0, -1.0, 1.0):
        assert ctl.update(sign * torch.ones(8)) == 0.25
        assert ctl.r_t == sign


def test_off_mode_keeps_p_at_zero_and_skips_augment(images):
    ctl = AdaController(batch_size=8, interval=1, mode="off")
    ctl.update(torch.ones(8))
    assert ctl.p == 0.0 and not ctl.enabled
    g = _gen(19)
    state = g.get_state()
    assert ctl.augment(images, generator=g) is images
    assert torch.equal(g.get_state(), state)  # skipped: not even the draws were made


def test_controller_augment_uses_the_current_p(images):
    ctl = AdaController(batch_size=8, interval=1, speed_kimg=0.1)
    assert torch.equal(ctl.augment(images, generator=_gen(20)), images)
    ctl.update(torch.ones(8))
    assert torch.equal(ctl.augment(images, generator=_gen(20)), augment(images, p=ctl.p, generator=_gen(20)))


def test_state_dict_round_trip_resumes_identically():
    def logits(step: int) -> torch.Tensor:
        return torch.randn(8, generator=_gen(100 + step)) + 0.9

    straight = AdaController(batch_size=8, interval=3, speed_kimg=0.05)
    for step in range(7):  # stop mid-interval: the accumulation must survive too
        straight.update(logits(step))
    state = json.loads(json.dumps(straight.state_dict()))
    resumed = AdaController(batch_size=1)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == straight.state_dict()
    ps = []
    for step in range(7, 40):
        ps.append(straight.update(logits(step)))
        assert resumed.update(logits(step)) == ps[-1]
        assert resumed.r_t == straight.r_t
    assert len(set(ps)) > 3  # p moved, so the comparison means something


def test_load_state_dict_refuses_a_broken_state():
    state = AdaController(batch_size=8).state_dict()
    with pytest.raises(ValueError, match="target"):
        AdaController(batch_size=8).load_state_dict({**state, "target": 2.0})
    with pytest.raises(ValueError, match="version"):
        AdaController(batch_size=8).load_state_dict({**state, "version": 99})
    with pytest.raises(ValueError, match="steps and count"):
        AdaController(batch_size=8).load_state_dict({**state, "steps": 9})


@pytest.mark.parametrize(("kwargs", "argument"), [
    ({"target": 0.0}, "target"),
    ({"target": 1.0}, "target"),
    ({"target": -0.3}, "target"),
    ({"mode": "adaptive"}, "mode"),
    ({"speed_kimg": -1.0}, "speed_kimg"),
    ({"speed_kimg": 0.0}, "speed_kimg"),
    ({"speed_kimg": math.inf}, "speed_kimg"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"interval": 0}, "interval"),
    ({"p": 1.0}, "p"),
    ({"p": -0.1}, "p"),
    ({"p": 0.2, "mode": "off"}, "p"),
])
def test_bad_controller_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument} must"):
        AdaController(**{"batch_size": 8, **kwargs})


def test_update_refuses_empty_logits():
    with pytest.raises(ValueError, match="real_logits"):
        AdaController(batch_size=8).update(torch.empty(0))


# --------------------------------------------------------------------------------------------
# A tiny overfitting discriminator
# --------------------------------------------------------------------------------------------

def _overfit_discriminator():
    """A fixed linear D that has memorised a real set of four 8x8 images against noise: its weights
    are the reals' mean minus the noise's mean (the linear discriminant of the two), its bias half
    way to the weakest real. Returns (reals, D)."""
    g = _gen(21)
    reals = F.interpolate(torch.rand(4, 3, 2, 2, generator=g) * 2 - 1, size=8, mode="bilinear",
                          align_corners=False)
    noise = 0.5 * torch.randn(256, 3, 8, 8, generator=g)
    w = reals.mean(0) - noise.mean(0)
    bias = 0.5 * (reals * w).flatten(1).sum(1).min()

    def D(x: torch.Tensor) -> torch.Tensor:
        return (x * w).flatten(1).sum(1) - bias

    assert (D(reals) > 0).all() and (D(noise) < 0).float().mean() > 0.5
    return reals, D


def test_p_increases_while_the_discriminator_overfits():
    reals, D = _overfit_discriminator()
    ctl = AdaController(batch_size=8, interval=2, speed_kimg=1.0)
    g = _gen(22)
    ps = [ctl.update(D(reals[torch.randint(0, 4, (8,), generator=g)])) for _ in range(40)]
    assert all(b >= a for a, b in zip(ps, ps[1:], strict=False))
    assert ps[-1] == pytest.approx(20 * ctl.step_size)


def test_augmenting_the_reals_pulls_r_t_down_to_the_target():
    # The feedback loop of ADA: p rises while D recognises every real, until the augmented reals are
    # hard enough to recognise that r_t hovers around the target.
    reals, D = _overfit_discriminator()
    ctl = AdaController(batch_size=8, interval=2, speed_kimg=1.0, target=0.6)
    g, aug_g = _gen(23), _gen(24)
    ps, rs = [], []
    for _ in range(300):
        batch = reals[torch.randint(0, 4, (8,), generator=g)]
        ps.append(ctl.update(D(ctl.augment(batch, generator=aug_g))))
        rs.append(ctl.r_t)
    assert ps[1] > ps[0] == 0.0
    late = [r for r in rs[150:] if r is not None]
    assert 0.3 < sum(late) / len(late) < 0.85
    assert 0.02 < sum(ps[150:]) / 150 < 0.5


def test_resample_equals_grid_sample_and_has_a_second_derivative():
    """R1 differentiates the discriminator's gradient through the augmentation: CUDA's grid_sample
    has no double backward, so resample is written as gathers and must still equal grid_sample."""
    from embedding.augment.pipeline import resample

    torch.manual_seed(0)
    n, c, h, w = 3, 3, 16, 12
    x = torch.randn(n, c, h, w, dtype=torch.float64, requires_grad=True)
    angle, scale = torch.rand(n) * 6.28, 0.7 + torch.rand(n)
    g = torch.zeros(n, 3, 3, dtype=torch.float64)
    g[:, 0, 0], g[:, 0, 1] = torch.cos(angle) * scale, -torch.sin(angle) * scale
    g[:, 1, 0], g[:, 1, 1] = torch.sin(angle) * scale, torch.cos(angle) * scale
    g[:, :2, 2], g[:, 2, 2] = torch.randn(n, 2) * 3, 1.0
    to_norm = torch.diag(torch.tensor([2 / w, 2 / h, 1.0], dtype=torch.float64))
    from_norm = torch.diag(torch.tensor([w / 2, h / 2, 1.0], dtype=torch.float64))
    grid = F.affine_grid((to_norm @ g @ from_norm)[:, :2, :], [n, c, h, w], align_corners=False)
    want = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    got = resample(x, g)
    assert torch.allclose(got, want, atol=1e-12)
    (grad,) = torch.autograd.grad(got.square().sum(), x, create_graph=True)
    grad.square().sum().backward()      # the R1 path: a derivative of a derivative
    assert x.grad is not None and x.grad.abs().sum() > 0
