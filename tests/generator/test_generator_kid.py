"""KID (unbiased MMD² with the cubic polynomial kernel) and the perceptual features it is computed on."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import embedding.kid as kid_module
from embedding.kid import FEATURE_DIM, KidResult, feature_source, kid, perceptual_features


def reference_mmd2(x, y):
    """The unbiased MMD² of Binkowski et al. written out with plain loops, for equal-size x and y."""
    m, d = len(x), len(x[0])

    def k(a, b):
        return (sum(a[i] * b[i] for i in range(d)) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2.0 * xy


def _gaussian(n, d, seed, shift=0.0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# ------------------------------------------------------------------------------------------
# kid
# ------------------------------------------------------------------------------------------

def test_one_subset_of_everything_equals_the_double_loop_reference():
    x, y = _gaussian(6, 3, 1), _gaussian(6, 3, 2, shift=0.5)
    result = kid(x, y, subsets=1, subset_size=6)
    expected = reference_mmd2(x.tolist(), y.tolist())
    assert result.value == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert result == KidResult(value=result.value, std_error=result.std_error, subsets=1, subset_size=6,
                               n_real=6, n_fake=6)
    assert math.isnan(result.std_error)       # one subset has no spread to report


def test_torch_float32_inputs_are_computed_in_float64():
    x, y = _gaussian(6, 3, 1), _gaussian(6, 3, 2, shift=0.5)
    x32, y32 = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    expected = reference_mmd2(x32.double().tolist(), y32.double().tolist())
    assert kid(x32, y32, subsets=1, subset_size=6).value == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_subset_size_is_capped_by_the_smaller_set():
    result = kid(_gaussian(9, 3, 1), _gaussian(5, 3, 2), subsets=3, subset_size=1000)
    assert (result.subset_size, result.n_real, result.n_fake) == (5, 9, 5)


def test_subsets_that_are_both_whole_sets_have_no_spread():
    # every subset is a permutation of all rows and MMD² ignores order: documented, not hidden
    x, y = _gaussian(8, 3, 1), _gaussian(8, 3, 2)
    result = kid(x, y, subsets=10, subset_size=8)
    assert result.value == pytest.approx(reference_mmd2(x.tolist(), y.tolist()), rel=1e-12)
    assert result.std_error == pytest.approx(0.0, abs=1e-12)


def test_the_cached_kernel_matrix_gives_the_same_subsets_and_values(monkeypatch):
    x, y = _gaussian(10, 3, 1), _gaussian(12, 3, 2, shift=0.3)
    cached = kid(x, y, subsets=20, subset_size=4, seed=3)
    monkeypatch.setattr(kid_module, "_GRAM_LIMIT", 0)          # forces one kernel per subset
    direct = kid(x, y, subsets=20, subset_size=4, seed=3)
    assert cached.value == pytest.approx(direct.value, rel=1e-10, abs=1e-12)
    assert cached.std_error == pytest.approx(direct.std_error, rel=1e-10, abs=1e-12)


def test_samples_of_one_gaussian_give_kid_near_zero():
    # subsets * subset_size == n keeps the subsets nearly disjoint, so std_error is honest
    result = kid(_gaussian(2000, 4, 1), _gaussian(2000, 4, 2), subsets=20, subset_size=100)
    assert result.std_error > 0
    assert abs(result.value) < 3 * result.std_error


def test_shifted_gaussians_give_kid_many_standard_errors_above_zero():
    result = kid(_gaussian(2000, 4, 1), _gaussian(2000, 4, 2, shift=1.0), subsets=20, subset_size=100)
    assert result.value > 0
    assert result.value > 10 * result.std_error


def test_the_seed_makes_it_reproducible():
    x, y = _gaussian(50, 3, 1), _gaussian(40, 3, 2)
    assert kid(x, y, subsets=5, subset_size=10, seed=4) == kid(x, y, subsets=5, subset_size=10, seed=4)
    assert kid(x, y, subsets=5, subset_size=10, seed=4).value != kid(x, y, subsets=5, subset_size=10, seed=5).value


def test_several_subsets_give_a_positive_standard_error():
    result = kid(_gaussian(50, 3, 1), _gaussian(40, 3, 2), subsets=5, subset_size=10)
    values = []
    rng = np.random.default_rng(0)                           # the draws kid makes for seed=0
    x, y = _gaussian(50, 3, 1), _gaussian(40, 3, 2)
    for _ in range(5):
        ix, iy = rng.choice(50, 10, replace=False), rng.choice(40, 10, replace=False)
        values.append(reference_mmd2(x[ix].tolist(), y[iy].tolist()))
    assert result.std_error > 0
    assert result.value == pytest.approx(np.mean(values), rel=1e-10)
    assert result.std_error == pytest.approx(np.std(values, ddof=1) / math.sqrt(5), rel=1e-8)


def _with(a, row, col, value):
    a = a.copy()
    a[row, col] = value
    return a


GOOD = _gaussian(6, 3, 1)


@pytest.mark.parametrize(("real", "fake", "kwargs", "match"), [
    (GOOD[:1], GOOD, {}, r"real_features needs at least 2 samples, got 1"),
    (GOOD, GOOD[:1], {}, r"fake_features needs at least 2 samples, got 1"),
    (GOOD, _gaussian(6, 4, 2), {}, r"real_features have d=3 but fake_features have d=4.*same perceptual network"),
    (_with(GOOD, 2, 1, np.nan), GOOD, {}, r"real_features has non-finite values .* in 1 rows \(2\); drop"),
    (GOOD, _with(GOOD, 0, 0, np.inf), {}, r"fake_features has non-finite values"),
    (GOOD, GOOD, {"subsets": 0}, r"subsets must be an integer >= 1, got 0"),
    (GOOD, GOOD, {"subsets": 2.5}, r"subsets must be an integer >= 1"),
    (GOOD, GOOD, {"subset_size": 1}, r"subset_size must be an integer >= 2, got 1"),
    (GOOD[0], GOOD, {}, r"real_features must be \(N, d\).*got shape \(3,\)"),
    (GOOD, [["a", "b", "c"]] * 3, {}, r"fake_features must be an \(N, d\) array of numbers"),
])
def test_bad_arguments_are_refused_with_a_fix(real, fake, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kid(real, fake, **kwargs)


# ------------------------------------------------------------------------------------------
# perceptual_features on the stlpips stand-in
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stlpips():
    # the same loader as tests/projection's fixture: weights come from the installed wheel
    from embedding.perceptual import load_perceptual

    before = torch.get_num_threads()
    torch.set_num_threads(1)           # the CI box has 2 shared cores
    yield load_perceptual("stlpips")
    torch.set_num_threads(before)


def _images(n=5, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, size // 4, size // 4, generator=gen) * 2 - 1
    return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)


def test_features_are_one_finite_deterministic_row_per_image(stlpips):
    net, _ = stlpips
    images = _images()
    feats = perceptual_features(net, images, batch_size=2)
    assert isinstance(feats, np.ndarray) and feats.shape == (5, FEATURE_DIM) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and (feats >= 0).all()          # ReLU activations, averaged
    assert np.array_equal(feats, perceptual_features(net, images, batch_size=2))
    np.testing.assert_allclose(perceptual_features(net, images), feats, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(perceptual_features(net, images.numpy(), batch_size=2), feats, rtol=1e-6)
    assert not np.allclose(feats[0], feats[1])                      # different images, different rows
    assert not any(p.requires_grad for p in net.parameters())


def test_overshooting_pixels_are_clamped_like_saved_pictures(stlpips):
    net, _ = stlpips
    images = _images(n=2) * 3
    np.testing.assert_array_equal(perceptual_features(net, images), perceptual_features(net, images.clamp(-1, 1)))


@pytest.mark.parametrize(("images", "kwargs", "match"), [
    (torch.zeros(2, 1, 16, 16), {}, r"images must be \(N, 3, H, W\) with N >= 1, got shape \(2, 1, 16, 16\)"),
    (torch.zeros(0, 3, 16, 16), {}, r"with N >= 1"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), {}, r"images must be float in \[-1, 1\].*x / 127.5 - 1"),
    (torch.full((2, 3, 16, 16), float("nan")), {}, r"non-finite pixels"),
    (torch.zeros(2, 3, 16, 16), {"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
])
def test_bad_images_are_refused_with_a_fix(stlpips, images, kwargs, match):
    net, _ = stlpips
    with pytest.raises(ValueError, match=match):
        perceptual_features(net, images, **kwargs)


def test_kid_on_perceptual_features_end_to_end(stlpips):
    net, info = stlpips
    real = perceptual_features(net, _images(n=6, seed=1))
    fake = perceptual_features(net, _images(n=6, seed=2))
    result = kid(real, fake, subsets=4, subset_size=4)
    assert math.isfinite(result.value) and result.std_error > 0 and result.subset_size == 4


def test_the_feature_source_names_the_network_and_says_stand_in(stlpips):
    _, info = stlpips
    source = feature_source(info)
    assert "stlpips" in source and "STAND-IN" in source and "not ImageNet VGG-16" in source
    assert "relu5_3" in source and f"{FEATURE_DIM}-d" in source and info.sha256 in source
    real = feature_source(dataclasses.replace(info, network="vgg16", is_stand_in=False, sha256="ab" * 32))
    assert real.startswith("vgg16: ImageNet VGG-16") and "STAND-IN" not in real and "ab" * 32 in real
