"""The StyleGAN2 network itself: shapes, names, determinism, and the maths of each building block."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from embedding.stylegan2 import Generator, GeneratorConfig, load_generator, random_init_description
from embedding.stylegan2.layers import make_fir_filter, modulated_conv2d, upsample2d


@pytest.mark.parametrize("res", [8, 16, 32])
def test_shapes_per_resolution(res):
    cfg = GeneratorConfig(z_dim=32, w_dim=32, mapping_layers=2, resolution=res, channel_base=128, channel_max=8)
    G = Generator(cfg, seed=0).eval()
    z = torch.randn(3, 32)
    ws = G.mapping(z)
    assert ws.shape == (3, G.num_ws, 32)
    assert G.num_ws == 2 * int(math.log2(res)) - 2 == cfg.num_ws
    img = G.synthesis(ws)
    assert img.shape == (3, 3, res, res) and torch.isfinite(img).all()
    assert G.synthesis.noise_shapes() == [(1, 4, 4)] + [(1, r, r) for r in [2 ** k for k in range(3, res.bit_length())]
                                                          for _ in range(2)]
    assert len(G.synthesis.noise_shapes()) == G.num_ws - 1
    for r in [2 ** k for k in range(2, res.bit_length())]:
        assert getattr(G.synthesis, f"b{r}").out_channels == min(128 // r, 8)


@pytest.mark.slow
@pytest.mark.parametrize("res", [64, 128, 256, 512, 1024])
def test_large_resolutions_with_tiny_channels(res):
    cfg = GeneratorConfig(z_dim=16, w_dim=16, mapping_layers=1, resolution=res, channel_base=4 * res, channel_max=8)
    G = Generator(cfg, seed=0).eval()
    with torch.no_grad():
        img = G(torch.randn(1, 16))
    assert img.shape == (1, 3, res, res) and torch.isfinite(img).all()
    assert G.num_ws == 2 * int(math.log2(res)) - 2 and len(G.synthesis.noise_shapes()) == G.num_ws - 1


def test_state_dict_names_and_shapes_follow_nvidia_layout():
    cfg = GeneratorConfig(z_dim=32, w_dim=24, mapping_layers=2, resolution=16, channel_base=128, channel_max=16)
    sd = Generator(cfg, seed=0).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    expected = {"mapping.w_avg": (24,), "mapping.fc0.weight": (24, 32), "mapping.fc0.bias": (24,),
                "mapping.fc1.weight": (24, 24), "mapping.fc1.bias": (24,), "synthesis.b4.const": (16, 4, 4)}

    def layer(p, cin, cout, r):
        expected.update({f"{p}.weight": (cout, cin, 3, 3), f"{p}.bias": (cout,), f"{p}.noise_strength": (),
                         f"{p}.noise_const": (r, r), f"{p}.affine.weight": (cin, 24), f"{p}.affine.bias": (cin,)})

    def torgb(p, cin):
        expected.update({f"{p}.weight": (3, cin, 1, 1), f"{p}.bias": (3,), f"{p}.affine.weight": (cin, 24),
                         f"{p}.affine.bias": (cin,)})

    layer("synthesis.b4.conv1", 16, 16, 4)
    torgb("synthesis.b4.torgb", 16)
    layer("synthesis.b8.conv0", 16, 16, 8)
    layer("synthesis.b8.conv1", 16, 16, 8)
    torgb("synthesis.b8.torgb", 16)
    layer("synthesis.b16.conv0", 16, 8, 16)
    layer("synthesis.b16.conv1", 8, 8, 16)
    torgb("synthesis.b16.torgb", 8)
    assert shapes == expected


def test_random_init_is_seeded_and_leaves_global_rng_alone(tiny_config):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    G1, info1 = load_generator(None, config=tiny_config, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)
    G2, info2 = load_generator(None, config=tiny_config, seed=5)
    G3, info3 = load_generator(None, config=tiny_config, seed=6)
    for k, v in G1.state_dict().items():
        assert torch.equal(v, G2.state_dict()[k]), k
    assert info1.sha256 == info2.sha256 != info3.sha256
    z = torch.randn(2, tiny_config.z_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(G1(z), G2(z))
    assert not torch.allclose(G1(z), G3(z))
    assert info1.is_random_init and info1.source == "random-init:seed=5"
    assert info1.description == random_init_description(5)
    assert "random-init stand-in generator (seed 5): no pretrained StyleGAN2 weights were provided" in info1.description
    assert "not those of the paper's FFHQ generator" in info1.description
    assert not any(p.requires_grad for p in G1.parameters()) and not G1.training


def test_random_init_follows_the_paper(tiny_config):
    G = Generator(tiny_config, seed=0)
    sd = G.state_dict()
    c = sd["synthesis.b4.const"]
    assert abs(c.mean().item()) < 0.2 and 0.8 < c.std().item() < 1.2
    w = sd["mapping.fc0.weight"] * tiny_config.lr_multiplier  # stored as N(0, 1) / lr_multiplier
    assert 0.9 < w.std().item() < 1.1
    assert torch.all(sd["synthesis.b8.conv0.affine.bias"] == 1)
    assert torch.all(sd["synthesis.b8.conv0.bias"] == 0) and sd["synthesis.b8.conv0.noise_strength"] == 0
    z = torch.randn(4096, tiny_config.z_dim, generator=torch.Generator().manual_seed(99))
    w_mean = G.mapping.embed(z).mean(0)
    spread = G.mapping.embed(z).std(0).mean()
    assert (sd["mapping.w_avg"] - w_mean).abs().max() < 0.15 * spread  # w_avg = mean w, as training tracks it


def test_random_init_images_have_spatial_structure(tiny_config):
    G, _ = load_generator(None, config=tiny_config, seed=0)
    img = G(torch.randn(8, tiny_config.z_dim, generator=torch.Generator().manual_seed(1)))
    spatial_std = img.std(dim=(2, 3)).mean().item()
    across = img.std(dim=0).mean().item()
    assert spatial_std > 0.1 and across > 0.1, (spatial_std, across)


def test_truncation_pulls_toward_w_avg(tiny_config):
    G = Generator(tiny_config, seed=0)
    z = torch.randn(64, tiny_config.z_dim, generator=torch.Generator().manual_seed(0))
    G.train()
    start = G.w_avg.clone()
    G.mapping(z)  # one training-mode call moves w_avg 0.5% of the way to the batch mean
    w_mean = G.mapping.embed(z).mean(0)
    assert torch.allclose(G.w_avg, start + 0.005 * (w_mean - start), atol=1e-5)
    G.eval()
    before = G.w_avg.clone()
    ws1 = G.mapping(z[:4])
    assert torch.equal(G.w_avg, before)  # eval mode: no update
    ws_half = G.mapping(z[:4], truncation_psi=0.5)
    d1 = (ws1 - G.w_avg).norm(dim=-1)
    dh = (ws_half - G.w_avg).norm(dim=-1)
    assert torch.allclose(dh, 0.5 * d1, rtol=1e-4)
    assert torch.allclose(G.mapping(z[:4], truncation_psi=0.0), G.w_avg.expand_as(ws1), atol=1e-6)
    cut = G.mapping(z[:4], truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(cut[:, :2], ws_half[:, :2]) and torch.equal(cut[:, 2:], ws1[:, 2:])


def test_mapping_normalises_z_scale(tiny_config):
    G = Generator(tiny_config, seed=0).eval()
    z = torch.randn(3, tiny_config.z_dim)
    assert torch.allclose(G.mapping(z), G.mapping(z * 7.0), atol=1e-5)


def test_demodulation_normalises_output_std():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 16, 16, generator=gen)
    weight = torch.randn(32, 64, 3, 3, generator=gen)
    styles = torch.rand(8, 64, generator=gen) * 3 + 0.1
    y = modulated_conv2d(x, weight, styles, demodulate=True)
    inner = y[:, :, 1:-1, 1:-1]
    per_channel = inner.std(dim=(2, 3))
    assert 0.8 < per_channel.mean().item() < 1.2 and per_channel.max().item() < 1.5
    y10 = modulated_conv2d(x, weight, styles * 10, demodulate=True)
    assert torch.allclose(y10, y, atol=1e-4)  # scale invariant
    raw = modulated_conv2d(x, weight, styles, demodulate=False)
    raw10 = modulated_conv2d(x, weight, styles * 10, demodulate=False)
    assert torch.allclose(raw10, raw * 10, rtol=1e-4, atol=1e-3)
    assert raw[:, :, 1:-1, 1:-1].std().item() > 3  # without demodulation the std is not normalised


def test_fir_upsample_on_known_signals():
    f = make_fir_filter()
    assert torch.allclose(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    impulse = torch.zeros(1, 1, 4, 4)
    impulse[0, 0, 1, 1] = 1.0
    up = upsample2d(impulse, f)
    k = torch.tensor([0.25, 0.75, 0.75, 0.25])
    expected = torch.zeros(8, 8)
    expected[1:5, 1:5] = torch.outer(k, k)
    assert torch.allclose(up[0, 0], expected, atol=1e-6)
    ramp = torch.arange(6.0).reshape(1, 1, 1, 6).expand(1, 1, 6, 6).contiguous()
    up = upsample2d(ramp, f)[0, 0, 2:-2, 2:-2]  # interior: the ramp sampled at m -/+ 0.25
    expected = (torch.arange(12.0) / 2 - 0.25)[2:-2].expand(8, 8)
    assert torch.allclose(up, expected, atol=1e-5)
    const = torch.full((1, 2, 5, 5), 3.0)
    assert torch.allclose(upsample2d(const, f)[..., 1:-1, 1:-1], torch.full((1, 2, 8, 8), 3.0))


def _upsample_reference(x, f):
    """Zero insertion, pad 2/1, correlate with the 4-tap filter times 4 (the textbook definition)."""
    n, c, h, w = x.shape
    z = torch.zeros(n, c, 2 * h, 2 * w)
    z[:, :, ::2, ::2] = x
    z = F.pad(z, [2, 1, 2, 1])
    return F.conv2d(z.reshape(n * c, 1, 2 * h + 3, 2 * w + 3), (f * 4).flip([0, 1])[None, None]).reshape(n, c, 2 * h, 2 * w)


def test_upsample_matches_zero_insertion_reference():
    x = torch.randn(2, 3, 5, 7)
    f = make_fir_filter()
    assert torch.allclose(upsample2d(x, f), _upsample_reference(x, f), atol=1e-5)


def test_upsampling_modconv_equals_upsample_then_true_convolution():
    """The fused transposed-conv path equals: FIR-upsample (pad 3/2) then convolve with the flipped kernel."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 5, 5, generator=gen)
    weight = torch.randn(6, 4, 3, 3, generator=gen)
    styles = torch.randn(2, 4, generator=gen)
    f = make_fir_filter()
    got = modulated_conv2d(x, weight, styles, demodulate=True, up=True, fir=f)
    for i in range(2):
        w = weight * styles[i].reshape(1, 4, 1, 1)
        w = w / torch.sqrt(w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        zi = torch.zeros(1, 4, 10, 10)
        zi[:, :, ::2, ::2] = x[i:i + 1]
        zi = F.pad(zi, [3, 2, 3, 2])
        up = F.conv2d(zi.reshape(4, 1, 15, 15), (f * 4)[None, None]).reshape(1, 4, 12, 12)
        ref = F.conv2d(up, w.flip([2, 3]))
        assert torch.allclose(got[i:i + 1], ref, atol=1e-4)
    unfused = modulated_conv2d(x, weight, styles, demodulate=True, up=True, fir=f, fused=False)
    assert torch.allclose(got, unfused, atol=1e-4)


def test_fused_and_unfused_generators_agree(tiny_G):
    z = torch.randn(3, tiny_G.z_dim)
    assert torch.allclose(tiny_G(z, fused=True), tiny_G(z, fused=False), atol=1e-4)


def test_explicit_noise_replaces_noise_const_per_sample(tiny_G):
    ws = tiny_G.mapping(torch.randn(2, tiny_G.z_dim))
    shapes = tiny_G.synthesis.noise_shapes()
    consts = [layer.noise_const[None, None] for layer in tiny_G.synthesis.noise_layers()]
    assert [tuple(c.shape[1:]) for c in consts] == shapes
    assert torch.allclose(tiny_G.synthesis(ws, noise=consts), tiny_G.synthesis(ws, noise_mode="const"))
    none = tiny_G.synthesis(ws, noise_mode="none")
    assert not torch.allclose(none, tiny_G.synthesis(ws, noise_mode="const"))
    gen = torch.Generator().manual_seed(0)
    per_photo = [torch.randn(2, *s, generator=gen) for s in shapes]
    both = tiny_G.synthesis(ws, noise=per_photo)
    first = tiny_G.synthesis(ws[:1], noise=[n[:1] for n in per_photo])
    assert torch.allclose(both[:1], first, atol=1e-5)  # a photo's image depends only on its own noise
    with pytest.raises(ValueError, match="noise must hold"):
        tiny_G.synthesis(ws, noise=per_photo[:-1])
    with pytest.raises(ValueError, match=r"must be \(N or 1, 1, 4, 4\)"):
        tiny_G.synthesis(ws, noise=[torch.zeros(2, 1, 5, 5)] + per_photo[1:])


def test_gradients_flow_to_latents_and_noise(tiny_G):
    ws = tiny_G.mapping(torch.randn(2, tiny_G.z_dim)).detach().requires_grad_(True)
    noise = [torch.randn(2, *s).requires_grad_(True) for s in tiny_G.synthesis.noise_shapes()]
    tiny_G.synthesis(ws, noise=noise).square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    assert all(n.grad is not None and n.grad.abs().sum() > 0 for n in noise)


def test_conv_clamp_bounds_activations():
    cfg = GeneratorConfig(z_dim=16, w_dim=16, mapping_layers=1, resolution=16, channel_base=64, channel_max=8,
                          conv_clamp=0.05)
    G = Generator(cfg, seed=0).eval()
    img = G(torch.randn(4, 16))
    assert img.abs().max().item() <= 3 * 0.05 + 1e-6  # three toRGB outputs, each clamped, FIR keeps bounds
    unclamped = Generator(GeneratorConfig(**{**cfg.to_dict(), "conv_clamp": None}), seed=0).eval()
    assert unclamped(torch.randn(4, 16)).abs().max().item() > 0.2


@pytest.mark.parametrize("bad, match", [
    (dict(resolution=12), "power of two from 8 to 1024"),
    (dict(resolution=4), "power of two from 8 to 1024"),
    (dict(resolution=2048), "power of two from 8 to 1024"),
    (dict(z_dim=0), "z_dim must be an integer from 1 to 8192"),
    (dict(w_dim=10**9), "w_dim must be an integer from 1 to 8192"),
    (dict(lr_multiplier=0.0), "lr_multiplier must be > 0"),
    (dict(channel_base=8, resolution=16), "leaves no channels at 16x16"),
    (dict(conv_clamp=-1.0), "conv_clamp must be > 0"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        GeneratorConfig(**{**dict(resolution=16, channel_max=16), **bad})


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown generator config keys: chanel_max"):
        GeneratorConfig.from_dict({"resolution": 16, "chanel_max": 16})


def test_load_generator_none_needs_config():
    with pytest.raises(ValueError, match="needs config="):
        load_generator(None)
