"""End-to-end CNN baselines (training.cnn, training.cnn_arch): shapes, the ImageNet VGG-16 start,
frozen blocks, that a fit learns a planted signal and not shuffled outcomes, early stopping,
save/load, and one-line errors for bad input. Tiny seeded images; no network access."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
import torch
from sksurv.metrics import concordance_index_censored

from embedding import perceptual
from ground.errors import DataError
from training.cnn import (
    CNNConfig,
    fit_cox_cnn,
    load_cnn,
    predict_log_risk,
    save_cnn,
)
from training.cnn_arch import ResNet18Cox, VGG16Cox, build_cnn

SIDE = 16


def brightness_cohort(n: int, *, seed: int, side: int = SIDE, nuisance: float = 0.5):
    """(images (n, side, side, 3) uint8, time, event): the hazard is exp(2 * z), z = standardised brightness.

    Each image is its brightness plus pixel noise and zero-mean nuisance (horizontal and
    vertical ramps, a colour tint that sums to 0 over the channels), so that a network that
    learned nothing is not concordant by accident just because brightness is all there is.
    Times are drawn from the true hazard, then censored uniformly.
    """
    rng = np.random.default_rng(seed)
    b = rng.uniform(0.3, 0.7, n)
    z = (b - 0.5) / 0.115
    ramp = np.linspace(-1, 1, side)
    img = b[:, None, None, None] + rng.normal(0, 0.06, (n, side, side, 3))
    img = img + rng.uniform(-nuisance, nuisance, n)[:, None, None, None] * ramp[None, None, :, None]
    img = img + rng.uniform(-nuisance, nuisance, n)[:, None, None, None] * ramp[None, :, None, None]
    tint = rng.normal(0, nuisance / 2, (n, 3))
    img = img + (tint - tint.mean(1, keepdims=True))[:, None, None, :]
    t = rng.exponential(1.0 / np.exp(2.0 * z)) * 500 + 1
    c = rng.uniform(100, 3000, n)
    return np.clip(img * 255, 0, 255).astype(np.uint8), np.minimum(t, c), t <= c


def lpips_file():
    path = perceptual.find_lpips_vgg16_weights()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("real LPIPS-VGG16 weights missing: `make install` must download and convert them")
        pytest.skip("real LPIPS-VGG16 (ImageNet VGG-16) not installed here (run make install)")
    return path


def c_index(event, time, risk) -> float:
    return float(concordance_index_censored(event, time, risk)[0])


LEARN = CNNConfig(arch="resnet18", image_size=SIDE, epochs=15, batch_size=32, lr=1e-3, val_fraction=0.25,
                  patience=6, seed=0, augment=False)


@pytest.fixture(scope="module")
def learned():
    """ResNet-18 fits on 160 training images: true outcomes, and the same outcomes shuffled."""
    images, time, event = brightness_cohort(160, seed=0)
    lines: list[str] = []
    fitted = fit_cox_cnn(images, time, event, config=LEARN, progress=lines.append)
    perm = np.random.default_rng(50).permutation(len(time))
    shuffled = fit_cox_cnn(images, time[perm], event[perm], config=LEARN)
    return fitted, shuffled, lines


@pytest.fixture(scope="module")
def test_cohort():
    return brightness_cohort(300, seed=99)


@pytest.fixture(scope="module")
def frozen_vgg():
    """VGG-16 at 32 px with only conv block 5 and the head trainable (cached lower blocks, flip augmentation)."""
    lpips_file()
    images, time, event = brightness_cohort(40, seed=3, side=32)
    cfg = CNNConfig(arch="vgg16", image_size=32, epochs=2, batch_size=16, lr=1e-3, val_fraction=0.25,
                    patience=2, seed=1, trainable_blocks=1, augment=True)
    return fit_cox_cnn(images, time, event, config=cfg, init_convs=perceptual.imagenet_vgg16_convs()), images


# -- architectures -----------------------------------------------------------------------------

def test_resnet18_gives_one_log_risk_per_image_and_has_resnet18s_size():
    torch.manual_seed(0)
    net = ResNet18Cox().eval()
    with torch.no_grad():
        for side in (32, 64):
            assert net(torch.rand(3, 3, side, side)).shape == (3,)
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == pytest.approx(11.2e6, rel=0.01)   # torchvision's 11,689,512 less the 1000-class head
    assert net.fc.out_features == 1 and net.fc.bias is None


def test_vgg16_has_13_convolutions_and_gives_one_log_risk_per_image():
    net = build_cnn("vgg16").eval()
    assert isinstance(net, VGG16Cox)
    assert len(net.convs()) == 13
    assert [c.out_channels for c in net.convs()] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    with torch.no_grad():
        for side in (32, 64):
            assert net(torch.rand(2, 3, side, side)).shape == (2,)


def test_vgg16_starts_from_the_installed_imagenet_vgg16():
    path = lpips_file()
    state = perceptual._load_lpips_vgg16(path)
    net = VGG16Cox(init_convs=perceptual.imagenet_vgg16_convs())
    convs = net.convs()
    assert torch.equal(convs[0].weight, state["trunk.features.0.weight"])
    assert torch.equal(convs[12].bias, state["trunk.features.28.bias"])
    # torchvision vgg16-397923af features.0.weight[0, 0, 0], to 4 decimals
    np.testing.assert_allclose(convs[0].weight[0, 0, 0].detach().numpy(), [-0.5537, 0.1427, 0.5290], atol=1e-4)


def test_vgg16_without_the_installed_weights_says_to_run_make_install(monkeypatch):
    monkeypatch.setattr(perceptual, "find_lpips_vgg16_weights", lambda: None)
    with pytest.raises(FileNotFoundError, match="run `make install`"):
        perceptual.imagenet_vgg16_convs()
    with pytest.raises(ValueError, match="init_convs must hold 13"):
        VGG16Cox(init_convs=[])


def test_frozen_vgg_blocks_do_not_change_and_the_top_does(frozen_vgg):
    fitted, _ = frozen_vgg
    fresh = VGG16Cox(init_convs=perceptual.imagenet_vgg16_convs())
    before, after = fresh.convs(), fitted.module.convs()
    for k in range(10):                        # conv1_1 .. conv4_3: blocks 1-4, frozen
        assert torch.equal(before[k].weight, after[k].weight), f"frozen conv {k} changed"
        assert not after[k].weight.requires_grad
    for k in range(10, 13):                    # conv5_1 .. conv5_3: trained
        assert not torch.equal(before[k].weight, after[k].weight), f"trainable conv {k} did not change"
    assert not torch.equal(fresh.fc.weight, fitted.module.fc.weight)


# -- training ----------------------------------------------------------------------------------

def test_the_fit_learns_a_planted_signal_and_not_shuffled_outcomes(learned, test_cohort):
    fitted, shuffled, _ = learned
    images, time, event = test_cohort
    c_true = c_index(event, time, predict_log_risk(fitted, images))
    c_shuffled = c_index(event, time, predict_log_risk(shuffled, images))
    assert c_true > 0.7, f"ResNet-18 on the brightness signal reached only C = {c_true:.3f}"
    assert c_shuffled <= 0.62, f"a model trained on shuffled outcomes reached C = {c_shuffled:.3f}"


def test_early_stopping_keeps_the_best_epoch(learned):
    fitted, shuffled, lines = learned
    for fit in (fitted, shuffled):
        hist = fit.history
        assert 1 <= len(hist) <= LEARN.epochs
        val = [h["val_loss"] for h in hist]
        assert fit.best_epoch == int(np.argmin(val)) + 1
        if len(hist) < LEARN.epochs:          # stopped: patience epochs without a better loss
            assert len(hist) == fit.best_epoch + LEARN.patience
        assert fit.n_train + fit.n_val == 160 and fit.n_val == 40
    # shuffled outcomes: the validation loss only rises after the first epochs
    assert shuffled.best_epoch < LEARN.epochs and len(shuffled.history) < LEARN.epochs
    assert len(lines) == len(fitted.history)
    assert lines[0].startswith("resnet18 epoch 1/15: train loss ") and "val loss" in lines[0]
    assert not fitted.module.training


def test_a_fit_is_deterministic_given_its_seed():
    images, time, event = brightness_cohort(48, seed=5)
    # trainable_blocks is vgg16's: a resnet18 trains every block and records 5
    cfg = dataclasses.replace(LEARN, epochs=2, augment=True, batch_size=16, trainable_blocks=2)
    a = fit_cox_cnn(images, time, event, config=cfg)
    b = fit_cox_cnn(images, time, event, config=cfg)
    assert a.config == dataclasses.replace(cfg, trainable_blocks=5)
    np.testing.assert_array_equal(predict_log_risk(a, images), predict_log_risk(b, images))
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]


# -- files -------------------------------------------------------------------------------------

def test_save_load_round_trip_and_a_tampered_file_is_refused(learned, test_cohort, tmp_path):
    fitted, _, _ = learned
    images = test_cohort[0][:50]
    directory = save_cnn(fitted, tmp_path / "cnn")
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "weights.safetensors"]
    loaded = load_cnn(directory)
    np.testing.assert_array_equal(predict_log_risk(loaded, images), predict_log_risk(fitted, images))
    assert loaded.config == fitted.config and loaded.best_epoch == fitted.best_epoch
    assert loaded.history == fitted.history

    save_cnn(fitted, directory)                         # saving again replaces the directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn"]

    tampered = tmp_path / "tampered"
    shutil.copytree(directory, tampered)
    with open(tampered / "weights.safetensors", "r+b") as fh:
        fh.seek(-8, os.SEEK_END)
        fh.write(b"\x00\x01\x02\x03\x04\x05\x06\x07")
    with pytest.raises(ValueError, match="sha256 .* the file was altered: retrain and save"):
        load_cnn(tampered)
    with pytest.raises(DataError, match="not a saved CNN"):
        load_cnn(tmp_path / "absent")


def test_a_frozen_vgg_round_trips_through_files(frozen_vgg, tmp_path):
    fitted, images = frozen_vgg
    loaded = load_cnn(save_cnn(fitted, tmp_path / "vgg"))
    assert loaded.config.trainable_blocks == 1
    np.testing.assert_array_equal(predict_log_risk(loaded, images), predict_log_risk(fitted, images))


# -- bad input ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    return brightness_cohort(40, seed=7, side=SIDE)


OK = CNNConfig(arch="resnet18", image_size=SIDE, epochs=1, batch_size=8)


def test_bad_images_are_refused(small):
    images, time, event = small
    with pytest.raises(DataError, match=r"must be uint8 \(0..255\), got dtype float64"):
        fit_cox_cnn(images.astype(np.float64), time, event, config=OK)
    with pytest.raises(DataError, match=r"must have shape \(N, H, W, 3\)"):
        fit_cox_cnn(images[..., 0], time, event, config=OK)
    with pytest.raises(DataError, match=r"must have shape \(N, H, W, 3\)"):
        fit_cox_cnn(images.transpose(0, 3, 1, 2), time, event, config=OK)
    with pytest.raises(DataError, match="must be a numpy array"):
        fit_cox_cnn(images.tolist(), time, event, config=OK)
    with pytest.raises(DataError, match=r"must be uint8"):
        predict_log_risk(None, images.astype(np.float32))  # type: ignore[arg-type]


def test_bad_targets_are_refused(small):
    images, time, event = small
    with pytest.raises(DataError, match="40 images but 39 times and events; pass one time and one event per image"):
        fit_cox_cnn(images, time[:-1], event[:-1], config=OK)
    with pytest.raises(DataError, match="time has 40 values but event has 39"):
        fit_cox_cnn(images, time, event[:-1], config=OK)
    with pytest.raises(DataError, match="all 40 patients are censored"):
        fit_cox_cnn(images, time, np.zeros(40, bool), config=OK)
    few = np.zeros(40, bool)
    few[:3] = True                                      # val_fraction 0.2 -> round(0.6) = 1 validation event
    with pytest.raises(DataError, match="has 1 events; early stopping needs at least 2: raise val_fraction or add patients"):
        fit_cox_cnn(images, time, few, config=OK)
    with pytest.raises(DataError, match="training part .* has no event left .* lower val_fraction"):
        fit_cox_cnn(images, time, few, config=dataclasses.replace(OK, val_fraction=0.9))


@pytest.mark.parametrize("change, message", [
    ({"arch": "resnet50"}, "unknown arch 'resnet50'; use one of resnet18, vgg16"),
    ({"arch": "vgg16", "trainable_blocks": 0}, r"trainable_blocks must be an integer 1..5 .* got 0"),
    ({"arch": "vgg16", "trainable_blocks": 6}, r"trainable_blocks must be an integer 1..5 .* got 6"),
    ({"trainable_blocks": 0}, r"trainable_blocks must be an integer 1..5 .* got 0"),
    ({"arch": "vgg16", "image_size": 16}, "image_size 16 is too small for vgg16; use at least 32"),
    ({"batch_size": 1}, "batch_size must be an integer >= 2"),
    ({"val_fraction": 0.0}, "val_fraction must be between 0 and 1"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"patience": 0}, "patience must be an integer >= 1"),
])
def test_bad_options_are_refused(small, change, message):
    images, time, event = small
    with pytest.raises(DataError, match=message):
        fit_cox_cnn(images, time, event, config=dataclasses.replace(OK, **change))
