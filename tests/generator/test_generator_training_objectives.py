"""The StyleGAN2 training method as pure pieces: the discriminator, the losses, the regularisers, style
mixing and G's moving average, each checked against its closed form on tiny seeded networks (CPU)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from embedding.stylegan2 import Generator, GeneratorConfig
from embedding.stylegan2.discriminator import (
    Conv2dLayer,
    Discriminator,
    DiscriminatorConfig,
    MinibatchStd,
)
from embedding.stylegan2.layers import blur2d, make_fir_filter
from embedding.stylegan2.objectives import (
    d_logistic,
    ema_beta,
    ema_update,
    g_nonsaturating,
    lazy_adam,
    lazy_weight,
    mix_styles,
    path_length_penalty,
    r1_penalty,
)

TINY_D = dict(channel_base=128, channel_max=8, mbstd_group_size=2)


def tiny_D(res: int = 16, *, seed: int = 0, **kw) -> Discriminator:
    return Discriminator(DiscriminatorConfig(resolution=res, **{**TINY_D, **kw}), seed=seed)


def tiny_G(seed: int = 0) -> Generator:
    cfg = GeneratorConfig(z_dim=16, w_dim=16, mapping_layers=2, resolution=8, channel_base=64, channel_max=8)
    return Generator(cfg, seed=seed)


# --- discriminator ------------------------------------------------------------------------------------

@pytest.mark.parametrize("res", [4, 8, 16, 32])
def test_discriminator_gives_one_logit_per_image_at_each_resolution(res):
    D = tiny_D(res)
    logits = D(torch.randn(4, 3, res, res, generator=torch.Generator().manual_seed(1)))
    assert logits.shape == (4,) and torch.isfinite(logits).all()
    blocks = [f"b{r}" for r in (32, 16, 8) if r <= res]
    assert [n for n, _ in D.named_children()] == blocks + ["b4"]
    # fromRGB only at the input resolution (residual D), skip path without bias
    assert [n for n in D.state_dict() if "fromrgb" in n] == [f"b{res}.fromrgb.weight", f"b{res}.fromrgb.bias"]
    assert all(not n.endswith("skip.bias") for n in D.state_dict())


def test_discriminator_layer_shapes_follow_the_channel_rule():
    D = Discriminator(DiscriminatorConfig(resolution=16, channel_base=64, channel_max=8, mbstd_features=2), seed=0)
    shapes = {k: tuple(v.shape) for k, v in D.state_dict().items()}
    # C(16) = 4, C(8) = 8, C(4) = 8 (capped)
    assert shapes == {
        "b16.fromrgb.weight": (4, 3, 1, 1), "b16.fromrgb.bias": (4,),
        "b16.conv0.weight": (4, 4, 3, 3), "b16.conv0.bias": (4,),
        "b16.conv1.weight": (8, 4, 3, 3), "b16.conv1.bias": (8,), "b16.skip.weight": (8, 4, 1, 1),
        "b8.conv0.weight": (8, 8, 3, 3), "b8.conv0.bias": (8,),
        "b8.conv1.weight": (8, 8, 3, 3), "b8.conv1.bias": (8,), "b8.skip.weight": (8, 8, 1, 1),
        "b4.conv.weight": (8, 10, 3, 3), "b4.conv.bias": (8,),
        "b4.fc.weight": (8, 128), "b4.fc.bias": (8,), "b4.out.weight": (1, 8), "b4.out.bias": (1,),
    }


def test_every_discriminator_parameter_gets_a_gradient():
    D = tiny_D(16)
    D(torch.randn(4, 3, 16, 16)).sum().backward()
    missing = [n for n, p in D.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_parameter_count_grows_with_channel_max():
    counts = [sum(p.numel() for p in tiny_D(16, channel_base=256, channel_max=cm).parameters()) for cm in (4, 8, 16)]
    assert counts[0] < counts[1] < counts[2]


def test_for_generator_mirrors_the_generator_and_reads_its_images(tiny_config):
    dcfg = DiscriminatorConfig.for_generator(tiny_config)
    assert (dcfg.resolution, dcfg.channel_base, dcfg.channel_max, dcfg.img_channels) == (
        tiny_config.resolution, tiny_config.channel_base, tiny_config.channel_max, tiny_config.img_channels)
    assert (dcfg.mbstd_group_size, dcfg.mbstd_features) == (4, 1)
    G = Generator(tiny_config, seed=0).eval()
    D = Discriminator(dcfg, seed=0)
    with torch.no_grad():
        assert D(G(torch.randn(8, tiny_config.z_dim))).shape == (8,)
    for r in (16, 8):
        assert getattr(D, f"b{r}").conv0.out_channels == min(tiny_config.channel_base // r, tiny_config.channel_max)


def test_discriminator_is_deterministic_given_the_seed_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = (Discriminator(DiscriminatorConfig(resolution=8, **TINY_D), seed=s) for s in (3, 3, 4))
    assert torch.equal(state, torch.random.get_rng_state())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if k.endswith("weight"))
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(a(x), b(x))


def test_minibatch_std_changes_the_logits_of_the_changed_images_group_only():
    D = tiny_D(8, mbstd_group_size=2)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[1] += 1.0
    with torch.no_grad():
        before, after = D(x), D(y)
    assert before[0] != after[0]  # image 0 shares its group (images 0, 1) with the changed image
    assert torch.equal(before[2:], after[2:])  # the other group is untouched
    D0 = tiny_D(8, mbstd_features=0)  # without the layer each image is judged alone
    with torch.no_grad():
        assert torch.equal(D0(x)[[0, 2, 3]], D0(y)[[0, 2, 3]])


def test_minibatch_std_closed_form():
    # two images, two channels in two feature slices, 1x1: feature f = std over the pair = |a_f - b_f| / 2
    x = torch.tensor([[1.0, 5.0], [3.0, -1.0]]).reshape(2, 2, 1, 1)
    out = MinibatchStd(group_size=4, num_features=2)(x)  # group = the whole batch of 2
    assert out.shape == (2, 4, 1, 1)
    torch.testing.assert_close(out[:, 2:, 0, 0], torch.tensor([[1.0, 3.0], [1.0, 3.0]]))
    assert torch.equal(out[:, :2], x)


def test_minibatch_std_group_must_divide_the_batch():
    with pytest.raises(ValueError, match=r"group size 4 must divide the batch size 6"):
        tiny_D(8, mbstd_group_size=4)(torch.randn(6, 3, 8, 8))
    assert tiny_D(8, mbstd_group_size=4)(torch.randn(1, 3, 8, 8)).shape == (1,)  # smaller batch = one group


def test_down_sampling_conv_equals_full_resolution_conv_then_fir_decimation():
    gen = torch.Generator().manual_seed(0)
    layer = Conv2dLayer(2, 3, 3, bias=False, activation="linear", down=True)
    layer.reset_parameters(gen)
    x = torch.randn(1, 2, 8, 8, generator=gen)
    out = layer(x)
    assert out.shape == (1, 3, 4, 4)
    full = F.conv2d(x, layer.weight * layer.weight_gain, padding=1)
    ref = blur2d(full, make_fir_filter(), gain=1.0, pad=1)[..., ::2, ::2]  # low-pass, keep every 2nd pixel
    torch.testing.assert_close(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])  # equal away from the zero padding


@pytest.mark.parametrize("kwargs, match", [
    (dict(resolution=6), r"power of two from 4"),
    (dict(resolution=2048), r"power of two from 4 to 1024"),
    (dict(resolution=16, channel_base=8), r"channel_base 8 leaves no channels at 16x16"),
    (dict(resolution=8, channel_max=0), r"channel_max must be an integer from 1"),
    (dict(resolution=8, mbstd_group_size=0), r"mbstd_group_size must be an integer from 1"),
    (dict(resolution=8, channel_base=32, channel_max=8, mbstd_features=3), r"mbstd_features 3 must divide the 8"),
    (dict(resolution=8, img_channels=5), r"img_channels must be an integer from 1 to 4"),
])
def test_discriminator_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiscriminatorConfig(**kwargs)


def test_discriminator_rejects_images_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"images must be \(N, 3, 8, 8\), got \(2, 3, 16, 16\)"):
        tiny_D(8)(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"kernel_size must be odd"):
        Conv2dLayer(2, 2, 2)


# --- adversarial losses -------------------------------------------------------------------------------

def test_losses_equal_their_closed_forms():
    fake = torch.tensor([0.0, math.log(3.0), -math.log(3.0)], dtype=torch.float64)
    real = torch.tensor([[math.log(3.0)], [0.0]], dtype=torch.float64)  # (N, 1) is accepted too
    # softplus(-t) = log(1 + e^-t): log 2, log(4/3), log 4
    g = (math.log(2) + math.log(4 / 3) + math.log(4)) / 3
    torch.testing.assert_close(g_nonsaturating(fake), torch.tensor(g, dtype=torch.float64))
    # softplus(fake) = log 2, log 4, log(4/3); softplus(-real) = log(4/3), log 2
    d = (math.log(2) + math.log(4) + math.log(4 / 3)) / 3 + (math.log(4 / 3) + math.log(2)) / 2
    torch.testing.assert_close(d_logistic(real, fake), torch.tensor(d, dtype=torch.float64))
    big = torch.tensor([80.0, -80.0])  # no overflow at large logits
    assert torch.isfinite(d_logistic(big, big)) and torch.isfinite(g_nonsaturating(big))


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(3, 2), r"fake_logits must be one logit per image, \(N,\) or \(N, 1\)"),
    (torch.zeros(0), r"with N >= 1"),
    (torch.zeros(3, dtype=torch.long), r"fake_logits must be floating point"),
])
def test_losses_reject_bad_logits(bad, match):
    with pytest.raises(ValueError, match=match):
        g_nonsaturating(bad)
    with pytest.raises(ValueError, match=match):
        d_logistic(torch.zeros(3), bad)


# --- R1 -----------------------------------------------------------------------------------------------

def test_r1_of_a_linear_discriminator_is_the_squared_norm_of_its_weights():
    a = torch.randint(-3, 4, (3, 4, 4), generator=torch.Generator().manual_seed(0)).double()
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64).requires_grad_(True)
    logits = (x * a).sum(dim=(1, 2, 3))  # D(x) = <a, x>
    r1 = r1_penalty(x, logits)
    assert r1.shape == (5,)
    assert torch.equal(r1, torch.full((5,), float(a.square().sum()), dtype=torch.float64))


def test_r1_keeps_the_graph_so_it_trains_the_discriminator():
    D = tiny_D(8)
    x = torch.randn(4, 3, 8, 8).requires_grad_(True)
    r1 = r1_penalty(x, D(x))
    assert r1.requires_grad and (r1 > 0).all()
    r1.mean().backward()
    assert D.b8.conv0.weight.grad is not None and D.b8.conv0.weight.grad.abs().sum() > 0


def test_r1_rejects_inputs_without_a_graph():
    D = tiny_D(8)
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"real_images must require grad.*requires_grad_\(True\)"):
        r1_penalty(x, D(x))
    x.requires_grad_(True)
    with pytest.raises(ValueError, match=r"real_logits hold 1 values for 2 images"):
        r1_penalty(x, D(x)[:1])
    with torch.no_grad():
        detached = D(x)
    with pytest.raises(ValueError, match=r"real_logits carry no graph.*torch.no_grad"):
        r1_penalty(x, detached)
    other = torch.randn(2, 3, 8, 8, requires_grad=True)
    with pytest.raises(ValueError, match=r"do not depend on real_images"):
        r1_penalty(other, D(x))
    with pytest.raises(ValueError, match=r"real_images must be a batch of images \(N, C, H, W\)"):
        r1_penalty(torch.randn(2, 3, requires_grad=True), D(x))


def test_lazy_weights_and_adam_hyperparameters():
    assert lazy_weight(10.0 / 2, 16) == 80.0
    assert lazy_weight(2.0, 1) == 2.0
    lr, (b1, b2) = lazy_adam(0.002, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.002 * 16 / 17) and b1 == 0.0 and b2 == pytest.approx(0.99 ** (16 / 17))
    assert lazy_adam(0.002, (0.0, 0.99), 1) == (0.002, (0.0, 0.99))
    with pytest.raises(ValueError, match=r"interval must be a whole number of steps >= 1"):
        lazy_weight(1.0, 0)
    with pytest.raises(ValueError, match=r"weight must be a finite number from 0"):
        lazy_weight(-1.0, 4)
    with pytest.raises(ValueError, match=r"betas must be Adam's pair"):
        lazy_adam(0.002, (0.9,), 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"each beta must be a finite number from 0 to 1"):
        lazy_adam(0.002, (0.0, 1.5), 4)


# --- path length --------------------------------------------------------------------------------------

def test_path_length_of_a_scaled_identity_is_the_scaled_noise_norm():
    n, num_ws, w_dim, scale = 3, 4, 6, 2.5
    ws = torch.randn(n, num_ws, w_dim, dtype=torch.float64, requires_grad=True)
    images = scale * ws.reshape(n, 1, num_ws, w_dim)  # an "image" of H = num_ws, W = w_dim
    penalty, pl_mean = path_length_penalty(images, ws, 0.0, decay=0.01,
                                           generator=torch.Generator().manual_seed(5))
    y = torch.randn((n, 1, num_ws, w_dim), generator=torch.Generator().manual_seed(5)).double()
    y = y / math.sqrt(num_ws * w_dim)
    lengths = scale * y[:, 0].square().sum(dim=2).mean(dim=1).sqrt()  # J^T y = scale * y
    torch.testing.assert_close(pl_mean, 0.01 * lengths.mean())  # first call: a moves from 0 by decay
    torch.testing.assert_close(penalty, (lengths - pl_mean).square())
    assert not pl_mean.requires_grad and pl_mean.ndim == 0


def test_path_length_penalty_trains_the_generator_and_tracks_the_mean():
    G = tiny_G()
    ws = G.mapping(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(0)))
    penalty, m1 = path_length_penalty(G.synthesis(ws), ws, 0.0, generator=torch.Generator().manual_seed(1))
    assert penalty.shape == (4,) and penalty.requires_grad and 0 < float(m1)
    penalty.mean().backward()
    for p in (G.synthesis.b8.conv1.weight, G.synthesis.b4.conv1.affine.weight, G.mapping.fc0.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    ws = G.mapping(torch.randn(4, G.z_dim))
    _, m2 = path_length_penalty(G.synthesis(ws), ws, m1, decay=0.5)
    assert abs(float(m2) - float(m1)) > 0  # the running mean keeps moving toward the lengths


def test_path_length_penalty_rejects_bad_inputs():
    G = tiny_G()
    ws = G.mapping(torch.randn(2, G.z_dim))
    img = G.synthesis(ws)
    with pytest.raises(ValueError, match=r"ws must be \(N=2, num_ws, w_dim\)"):
        path_length_penalty(img, ws[0], 0.0)
    with pytest.raises(ValueError, match=r"fake_images must be computed from ws inside the graph"):
        path_length_penalty(img.detach(), ws, 0.0)
    with pytest.raises(ValueError, match=r"do not depend on ws"):
        path_length_penalty(img, ws.detach().requires_grad_(True), 0.0)
    with pytest.raises(ValueError, match=r"decay must be a finite number from 0 to 1"):
        path_length_penalty(img, ws, 0.0, decay=1.5)
    with pytest.raises(ValueError, match=r"pl_mean must be a finite number or 0-d tensor"):
        path_length_penalty(img, ws, float("nan"))
    with pytest.raises(ValueError, match=r"fake_images must be a batch of images"):
        path_length_penalty(img[0], ws, 0.0)


# --- style mixing -------------------------------------------------------------------------------------

def test_style_mixing_with_prob_0_is_the_plain_mapping():
    G = tiny_G().eval()
    z, z2 = torch.randn(5, G.z_dim), torch.randn(5, G.z_dim)
    assert torch.equal(mix_styles(G, z, z2, 0.0), G.mapping(z))


def test_style_mixing_with_prob_1_switches_every_image_to_z2_at_one_crossover():
    G = tiny_G().eval()
    n = 32
    z, z2 = torch.randn(n, G.z_dim), torch.randn(n, G.z_dim)
    ws = mix_styles(G, z, z2, 1.0, generator=torch.Generator().manual_seed(0))
    w1, w2 = G.mapping(z), G.mapping(z2)
    assert ws.shape == (n, G.num_ws, G.w_dim)
    crossovers = set()
    for i in range(n):
        from_z = [bool(torch.equal(ws[i, k], w1[i, k])) for k in range(G.num_ws)]
        from_z2 = [bool(torch.equal(ws[i, k], w2[i, k])) for k in range(G.num_ws)]
        k = from_z.index(False)  # first layer not from z
        assert 1 <= k <= G.num_ws - 1
        assert all(from_z[:k]) and all(from_z2[k:])  # two distinct segments
        crossovers.add(k)
    assert len(crossovers) > 1  # drawn per image, not once per batch
    again = mix_styles(G, z, z2, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ws, again)


def test_style_mixing_updates_w_avg_from_z_only():
    G = tiny_G().train()
    ref = copy.deepcopy(G)
    z, z2 = torch.randn(4, G.z_dim), torch.randn(4, G.z_dim)
    mix_styles(G, z, z2, 1.0)
    ref.mapping(z)
    assert torch.equal(G.w_avg, ref.w_avg)


def test_style_mixing_rejects_bad_arguments():
    G = tiny_G()
    z = torch.randn(2, G.z_dim)
    with pytest.raises(ValueError, match=r"prob must be a finite number from 0 to 1"):
        mix_styles(G, z, z, 1.5)
    with pytest.raises(ValueError, match=r"z and z2 must be tensors of the same shape"):
        mix_styles(G, z, torch.randn(3, G.z_dim), 0.5)


# --- moving average -----------------------------------------------------------------------------------

def _perturbed(G: Generator, seed: int) -> Generator:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(G.parameters()) + list(G.buffers()):
            t.add_(torch.randn(t.shape, generator=gen))
    return G


def test_ema_with_beta_0_copies_g_and_with_beta_1_keeps_g_ema():
    G = _perturbed(tiny_G(), 1)
    old = _perturbed(tiny_G(), 2)
    for beta in (0.0, 1.0, 0.25):
        G_ema = copy.deepcopy(old)
        ema_update(G_ema, G, beta)
        for name, p in G_ema.named_parameters():
            expected = {0.0: dict(G.named_parameters())[name],
                        1.0: dict(old.named_parameters())[name],
                        0.25: 0.75 * dict(G.named_parameters())[name] + 0.25 * dict(old.named_parameters())[name]}[beta]
            if beta == 0.25:
                torch.testing.assert_close(p, expected)
            else:
                assert torch.equal(p, expected), (beta, name)
        for name, b in G_ema.named_buffers():  # buffers always come from G
            assert torch.equal(b, dict(G.named_buffers())[name])


def test_ema_beta_is_a_half_life_in_kimg():
    assert ema_beta(32, ema_kimg=0.032) == pytest.approx(0.5)
    assert ema_beta(32, ema_kimg=10.0) == pytest.approx(0.5 ** (32 / 10_000))
    assert ema_beta(64) < ema_beta(32) < 1.0


def test_ema_rejects_bad_arguments():
    G = tiny_G()
    with pytest.raises(ValueError, match=r"beta must be a finite number from 0 to 1"):
        ema_update(copy.deepcopy(G), G, 1.5)
    other = Generator(GeneratorConfig(z_dim=16, w_dim=16, mapping_layers=2, resolution=8, channel_base=64,
                                      channel_max=4), seed=0)
    with pytest.raises(ValueError, match=r"is \(8,.*in G but \(4,.*build G_ema as copy.deepcopy\(G\)"):
        ema_update(other, G, 0.5)
    with pytest.raises(ValueError, match=r"differ in their parameters"):
        ema_update(tiny_D(8), G, 0.5)
    with pytest.raises(ValueError, match=r"batch_size must be a whole number of images >= 1"):
        ema_beta(0)
    with pytest.raises(ValueError, match=r"ema_kimg must be > 0"):
        ema_beta(32, ema_kimg=0.0)


# --- a toy run ----------------------------------------------------------------------------------------

def test_discriminator_trained_with_logistic_loss_and_r1_separates_two_image_sets():
    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(-1, 1, 8)
    real = (ramp[None, None, None, :] * torch.ones(8, 3, 8, 1)) + 0.1 * torch.randn(8, 3, 8, 8, generator=gen)
    fake = 0.6 * torch.randn(8, 3, 8, 8, generator=gen)  # noise: no horizontal ramp
    D = tiny_D(8, channel_base=64, channel_max=16, mbstd_group_size=4, seed=0)
    lr, betas = lazy_adam(0.002, (0.0, 0.99), 4)
    opt = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    for step in range(30):
        opt.zero_grad(set_to_none=True)
        loss = d_logistic(D(real), D(fake))
        if step % 4 == 0:  # lazy R1 every 4 steps
            x = real.detach().requires_grad_(True)
            loss = loss + lazy_weight(0.1 / 2, 4) * r1_penalty(x, D(x)).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        r, f = D(real), D(fake)
    assert r.min() > f.max(), (r, f)
