"""The perceptual distance: weight loading (stlpips stand-in and torchvision VGG-16) and its behaviour."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from embedding.perceptual import (
    PerceptualDistance,
    _load_state,
    _map_stlpips,
    find_stlpips_weights,
    load_perceptual,
)


def _images(n=3, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # smooth images (upsampled noise) look more like photos than white noise does
    small = torch.rand(n, 3, size // 4, size // 4, generator=gen) * 2 - 1
    return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)


def test_stlpips_state_dict_maps_fully():
    path = find_stlpips_weights()
    assert path is not None and path.name == "vgg_shift_tolerant.pth"
    mapped = _map_stlpips(_load_state(path))
    expected = PerceptualDistance(network="stlpips").state_dict()
    assert set(mapped) == set(expected)            # no missing, no unexpected keys
    assert len(expected) == 2 + 13 * 2 + 4 + 5     # scaling, 13 convs, 4 blur filters, 5 heads
    for key, value in mapped.items():
        assert value.shape == expected[key].shape, key


def test_stlpips_is_a_labelled_stand_in(stlpips):
    net, info = stlpips
    assert info.network == "stlpips" and info.is_stand_in
    assert "STAND-IN" in info.description and "not the ImageNet VGG-16" in info.description
    assert len(info.sha256) == 64
    # the blur-pool filters loaded from the file are the binomial [1,2,1]^2 / 16
    a = torch.tensor([1.0, 2.0, 1.0])
    for layer in net.trunk.features:
        if hasattr(layer, "filt"):
            assert torch.allclose(layer.filt[0, 0], torch.outer(a, a) / 16)


def test_distance_zero_for_identical_and_grows_with_noise(stlpips):
    net, _ = stlpips
    x = _images()
    assert torch.equal(net.distance(x, x), torch.zeros(3))
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=gen)
    d = [net.distance(x, (x + s * noise).clamp(-1, 1)) for s in (0.02, 0.1, 0.4)]
    assert bool((d[0] > 0).all() and (d[1] > d[0]).all() and (d[2] > d[1]).all())
    assert torch.allclose(net.distance(x, x + 0.1 * noise), net.distance(x + 0.1 * noise, x), rtol=1e-5)


def test_distance_tolerates_one_pixel_shift_more_than_noise(stlpips):
    net, _ = stlpips
    x = _images(size=64)
    shifted = torch.roll(x, shifts=1, dims=3)
    noisy = x + (shifted - x).std() * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    assert bool((net.distance(x, shifted) < net.distance(x, noisy)).all())


def test_large_images_are_area_downsampled(stlpips):
    net, _ = stlpips
    small = PerceptualDistance(network="stlpips", resize=32)
    small.load_state_dict(net.state_dict())
    a, b = _images(2, 64, seed=3), _images(2, 64, seed=4)
    direct = small.distance(F.interpolate(a, size=(32, 32), mode="area"), F.interpolate(b, size=(32, 32), mode="area"))
    assert torch.allclose(small.distance(a, b), direct, rtol=1e-5)


def test_gradient_is_finite(stlpips):
    net, _ = stlpips
    x = torch.zeros(2, 3, 16, 16, requires_grad=True)     # all-zero features: the LPIPS eps case
    d = net.distance(x, _images(2, 16))
    (g,) = torch.autograd.grad(d.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_torchvision_vgg16_state_dict_loads(tmp_path):
    src = PerceptualDistance(network="vgg16")
    state = {k.removeprefix("trunk."): v for k, v in src.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)      # the ImageNet head is present and ignored
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    net, info = load_perceptual("vgg16", path)
    assert not info.is_stand_in and info.network == "vgg16" and str(path) in info.description
    x = _images()
    assert torch.equal(net.distance(x, x), torch.zeros(3))
    assert bool((net.distance(x, x.flip(0))[[0, 2]] > 0).all())


def test_vgg16_needs_a_path():
    with pytest.raises(ValueError, match="needs vgg16_path"):
        load_perceptual("vgg16", None)


def test_vgg16_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_perceptual("vgg16", tmp_path / "nope.pth")


def test_vgg16_wrong_keys(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="missing keys"):
        load_perceptual("vgg16", path)


def test_vgg16_not_a_state_dict(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a loadable PyTorch state dict"):
        load_perceptual("vgg16", path)


def test_unknown_network():
    with pytest.raises(ValueError, match="must be one of auto, lpips-vgg16, stlpips, vgg16"):
        load_perceptual("alexnet")


def test_images_must_be_rgb(stlpips):
    net, _ = stlpips
    with pytest.raises(ValueError, match=r"must be \(N, 3, H, W\)"):
        net.embed(torch.zeros(1, 1, 16, 16))
