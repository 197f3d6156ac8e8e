"""End-to-end CNN survival baselines: a network maps a portrait to one Cox log-risk.

The paper's baselines (DeepSurv on ResNet-18, C = 0.51; on VGG-16, C = 0.47) train a CNN on
the photos themselves with the Cox partial likelihood, instead of a Cox model on StyleGAN2
latents. The architectures are in `training.cnn_arch`; this module fits, predicts, saves and
loads them:

    fitted = fit_cox_cnn(images, time, event, config=CNNConfig(arch="resnet18", image_size=64))
    risk = predict_log_risk(fitted, test_images)        # (N,) float64, higher = shorter survival
    save_cnn(fitted, "models/cnn"); fitted = load_cnn("models/cnn")

Training: Adam on the Cox partial likelihood (pycox's loss) over shuffled minibatches; a batch
without an event has no likelihood term and is skipped. Early stopping watches the partial
likelihood of a seeded, event-stratified validation slice of the training images (the same
split as DeepSurv's) and the best epoch's weights are kept. A fit is deterministic given the
seed on one machine (it does not touch torch's global random state).

VGG-16 with frozen lower blocks (`trainable_blocks` < 5): those blocks never change, so their
output is computed once per image before the first epoch and cached as a tensor; each epoch
then runs only the trainable top. With `augment`, the cache also holds every image's mirror
image (an exact horizontal flip); the small random shift is not applied in this mode (it
would need the frozen blocks again per batch). The cache costs memory: at 64 px and
trainable_blocks=4 it is 256 KiB per image (twice that with augment).

Saved models are a directory with `weights.safetensors` (never a pickle) and `config.json`
(the configuration, the training history and the weights' sha256, checked on load).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ground.atomic import atomic_dir
from ground.errors import DataError
from ground.types import check_survival_target
from training.cnn_arch import ARCHS, MIN_IMAGE_SIZE, VGG16_BLOCKS, CoxCNN, build_cnn
from training.deepsurv import pycox_models, validation_split

FORMAT = "facesurv-cnn/1"
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
_CHUNK = 64   # images converted / pushed through frozen blocks at a time, to bound memory


@dataclass(frozen=True)
class CNNConfig:
    """How to build and train one CNN.

    arch: "resnet18" (from scratch) or "vgg16" (ImageNet convolutions).
    image_size: side in pixels the photos are resized to (>= 16 for resnet18, >= 32 for vgg16).
    epochs: the most epochs; early stopping usually ends sooner.
    batch_size: images per step (>= 2: a Cox likelihood compares patients within a batch).
    lr, weight_decay: Adam's.
    val_fraction: share of the training images (stratified by event) held out for early stopping.
    patience: epochs without a better validation loss before training stops.
    seed: weight init, validation split, shuffles, augmentation and dropout.
    trainable_blocks: vgg16 only, 1..5 conv blocks counted from the top that learn (5 = all);
        resnet18 always trains every block (a fit records 5 for it).
    augment: random horizontal flip and a shift of up to image_size // 16 pixels (at least 1).
    dropout: vgg16 only, before the linear head.
    """

    arch: str = "resnet18"
    image_size: int = 64
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    patience: int = 5
    seed: int = 0
    trainable_blocks: int = VGG16_BLOCKS
    augment: bool = True
    dropout: float = 0.5


@dataclass
class FittedCNN:
    """A trained network (eval mode) with what produced it.

    history: one dict per epoch run: epoch, train_loss, val_loss, seconds, skipped_batches.
    best_epoch: 1-based epoch whose weights `module` holds. seconds: the whole fit.
    """

    module: CoxCNN
    config: CNNConfig
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    n_train: int = 0
    n_val: int = 0


# -- checks ------------------------------------------------------------------------------------

def check_config(config: CNNConfig) -> None:
    """DataError (one line, with the fix) for an option no network can be trained with."""
    c = config
    if c.arch not in ARCHS:
        raise DataError(f"cnn: unknown arch {c.arch!r}; use one of {', '.join(ARCHS)}")
    if isinstance(c.trainable_blocks, bool) or not isinstance(c.trainable_blocks, int) \
            or not 1 <= c.trainable_blocks <= VGG16_BLOCKS:
        raise DataError(f"cnn: trainable_blocks must be an integer 1..{VGG16_BLOCKS} (5 = train every conv block), "
                        f"got {c.trainable_blocks!r}")
    if not isinstance(c.image_size, int) or c.image_size < MIN_IMAGE_SIZE[c.arch]:
        raise DataError(f"cnn: image_size {c.image_size!r} is too small for {c.arch}; use at least "
                        f"{MIN_IMAGE_SIZE[c.arch]} pixels")
    if not isinstance(c.epochs, int) or c.epochs < 1:
        raise DataError(f"cnn: epochs must be a positive integer, got {c.epochs!r}")
    if not isinstance(c.batch_size, int) or c.batch_size < 2:
        raise DataError(f"cnn: batch_size must be an integer >= 2 (the Cox loss compares patients in a batch), "
                        f"got {c.batch_size!r}")
    if not (isinstance(c.lr, int | float) and math.isfinite(c.lr) and c.lr > 0):
        raise DataError(f"cnn: lr must be a positive number, got {c.lr!r}")
    if not (isinstance(c.weight_decay, int | float) and math.isfinite(c.weight_decay) and c.weight_decay >= 0):
        raise DataError(f"cnn: weight_decay must be a number >= 0, got {c.weight_decay!r}")
    if not (isinstance(c.val_fraction, int | float) and 0 < c.val_fraction < 1):
        raise DataError(f"cnn: val_fraction must be between 0 and 1 (exclusive; early stopping needs a "
                        f"validation slice), got {c.val_fraction!r}")
    if not isinstance(c.patience, int) or c.patience < 1:
        raise DataError(f"cnn: patience must be an integer >= 1, got {c.patience!r}")
    if not (isinstance(c.dropout, int | float) and 0 <= c.dropout < 1):
        raise DataError(f"cnn: dropout must be in [0, 1), got {c.dropout!r}")


def check_images(images: object, *, what: str = "images") -> np.ndarray:
    """The (N, H, W, 3) uint8 array, or DataError saying what shape and type are needed."""
    if not isinstance(images, np.ndarray):
        raise DataError(f"cnn: {what} must be a numpy array (N, H, W, 3) of uint8 RGB, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[3] != 3:
        raise DataError(f"cnn: {what} must have shape (N, H, W, 3) (RGB, channels last), got {images.shape}")
    if images.dtype != np.uint8:
        raise DataError(f"cnn: {what} must be uint8 (0..255), got dtype {images.dtype}; convert with "
                        "np.clip(x, 0, 255).astype(np.uint8)")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise DataError(f"cnn: {what} are empty (shape {images.shape}); pass at least one image")
    return images


def _to_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) float32 in [0, 1].

    Anti-aliased bilinear resizing (a plain bilinear downscale of a large photo would alias);
    a non-square photo is stretched to the square.
    """
    out = []
    for start in range(0, len(images), _CHUNK):   # one chunk at float32 full size at a time
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + _CHUNK])).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.clamp_(0.0, 1.0))   # bilinear overshoot stays in range
    return torch.cat(out).contiguous()


# -- training ----------------------------------------------------------------------------------

def _frozen_in_chunks(module: CoxCNN, x: torch.Tensor) -> torch.Tensor:
    """frozen_features of (N, 3, S, S) in chunks -> (N, C, h, w), no autograd graph kept."""
    with torch.no_grad():
        return torch.cat([module.frozen_features(x[i:i + _CHUNK]) for i in range(0, len(x), _CHUNK)])


def _augment(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """Random horizontal flip (p = 0.5) and a shift of up to max_shift pixels per image (edge-replicated)."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen).tolist()
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def _sorted_cox_loss(log_h: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood per event of (B,) risks, times and 0/1 events.

    pycox's cox_ph_loss sorts by descending time with an unstable sort; here the sort is
    stable (tied times keep their order, so a fit is reproducible) and the sorted batch goes
    to pycox's cox_ph_loss_sorted, the same computation.
    """
    loss = pycox_models().loss
    order = torch.argsort(time, descending=True, stable=True)
    return loss.cox_ph_loss_sorted(log_h[order], event[order])


def _predict_top(module: CoxCNN, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([module.top(inputs[i:i + _CHUNK]) for i in range(0, len(inputs), _CHUNK)])


def fit_cox_cnn(images: np.ndarray, time: np.ndarray, event: np.ndarray, *, config: CNNConfig,
                init_convs: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                progress: Callable[[str], None] | None = None) -> FittedCNN:
    """Train a CNN on photos with the Cox partial likelihood; returns the best epoch's network.

    Args:
        images: (N, H, W, 3) uint8 RGB photos, resized to config.image_size inside.
        time: (N,) follow-up in days, > 0.
        event: (N,) bool (or 0/1), True = death observed.
        config: architecture and training options (see CNNConfig).
        init_convs: vgg16: the 13 (weight, bias) pairs its convolutions start from (the caller
            passes the installed ImageNet VGG-16's); None: random init. Ignored for resnet18.
        progress: called once per epoch with one line (epoch, train loss, val loss, seconds).

    Returns:
        FittedCNN with the module in eval mode holding the weights of the epoch with the lowest
        validation loss (negative partial log-likelihood per event on the whole validation slice).

    Raises:
        DataError (one line, with the fix): bad images, lengths that differ, no events, a
        validation slice with fewer than 2 events or a training part without one, a bad config,
        or a loss that diverges.

    For vgg16 with trainable_blocks < 5 the frozen lower blocks are run once per image (and
    per mirror image when augment) before the first epoch and only the top is trained on
    that cache; the random shift augmentation is then not applied (see the module docstring).
    """
    check_config(config)
    images = check_images(images)
    time_arr, event_arr = check_survival_target(time, event, what="cnn training target")
    n = images.shape[0]
    if len(time_arr) != n:
        raise DataError(f"cnn: {n} images but {len(time_arr)} times and events; pass one time and one "
                        "event per image, in the same order")
    c = config
    if c.arch == "resnet18" and c.trainable_blocks != VGG16_BLOCKS:
        # one params section serves both networks; a from-scratch ResNet has nothing to freeze
        c = dataclasses.replace(c, trainable_blocks=VGG16_BLOCKS)
    tr, va = validation_split(event_arr, c.val_fraction, c.seed)
    if int(event_arr[va].sum()) < 2:
        raise DataError(f"cnn: the validation slice ({len(va)} patients, val_fraction {c.val_fraction}) has "
                        f"{int(event_arr[va].sum())} events; early stopping needs at least 2: raise val_fraction "
                        f"or add patients with events ({int(event_arr.sum())} now)")
    if int(event_arr[tr].sum()) < 1 or len(tr) < 2:
        raise DataError(f"cnn: the training part ({len(tr)} patients) has no event left after the validation "
                        f"slice; lower val_fraction (now {c.val_fraction}) or add patients with events")

    started = _time.perf_counter()
    # fork_rng: the seed fixes init, dropout and shuffles without touching the caller's torch RNG
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(c.seed)
        gen = torch.Generator().manual_seed(c.seed)
        module = build_cnn(c.arch, trainable_blocks=c.trainable_blocks, dropout=c.dropout,
                           init_convs=init_convs if c.arch == "vgg16" else None)
        x = _to_tensor(images, c.image_size)
        t = torch.from_numpy(time_arr)                      # float64: sorting keeps day fractions
        e = torch.from_numpy(event_arr.astype(np.float32))
        cached = module.n_frozen_blocks > 0
        flipped: torch.Tensor | None = None
        if cached:
            # frozen blocks never change: run them once per image (and per mirror image)
            module.eval()
            inputs = _frozen_in_chunks(module, x)
            if c.augment:
                flipped = _frozen_in_chunks(module, x.flip(3))
            del x
        else:
            inputs = x
        max_shift = max(1, c.image_size // 16)
        val_inputs = inputs[torch.from_numpy(va)]
        if not cached:
            val_inputs = _frozen_in_chunks(module, val_inputs)   # the normalisation only
        val_t, val_e = t[torch.from_numpy(va)], e[torch.from_numpy(va)]
        tr_idx = torch.from_numpy(tr)

        params = [p for p in module.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        history: list[dict[str, Any]] = []
        best_loss, best_epoch, bad_epochs = math.inf, 0, 0
        best_state: dict[str, torch.Tensor] = {}
        for epoch in range(1, c.epochs + 1):
            t0 = _time.perf_counter()
            module.train()
            perm = tr_idx[torch.randperm(len(tr_idx), generator=gen)]
            losses: list[float] = []
            skipped = 0
            for start in range(0, len(perm), c.batch_size):
                idx = perm[start:start + c.batch_size]
                # a batch of one cannot train BatchNorm, and one without an event has no likelihood
                if len(idx) < 2 or float(e[idx].sum()) == 0:
                    skipped += 1
                    continue
                if cached:
                    xb = inputs[idx]
                    if flipped is not None:
                        mirror = torch.rand(len(idx), generator=gen) < 0.5
                        xb = torch.where(mirror.view(-1, 1, 1, 1), flipped[idx], xb)
                else:
                    xb = inputs[idx]
                    if c.augment:
                        xb = _augment(xb, gen, max_shift)
                    xb = module.frozen_features(xb)
                loss = _sorted_cox_loss(module.top(xb), t[idx], e[idx])
                if not torch.isfinite(loss):
                    raise DataError(f"cnn: the training loss became non-finite in epoch {epoch}; lower lr "
                                    f"(now {c.lr})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            if not losses:
                raise DataError(f"cnn: no training batch had an event in epoch {epoch}; raise batch_size "
                                f"(now {c.batch_size}) or add patients with events")
            module.eval()
            val_loss = float(_sorted_cox_loss(_predict_top(module, val_inputs), val_t, val_e))
            if not math.isfinite(val_loss):
                raise DataError(f"cnn: the validation loss became non-finite in epoch {epoch}; lower lr (now {c.lr})")
            seconds = _time.perf_counter() - t0
            train_loss = float(np.mean(losses))
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                            "seconds": round(seconds, 3), "skipped_batches": skipped})
            if progress is not None:
                progress(f"{c.arch} epoch {epoch}/{c.epochs}: train loss {train_loss:.4f}, "
                         f"val loss {val_loss:.4f}, {seconds:.1f}s")
            if val_loss < best_loss:
                best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                bad_epochs += 1
                if bad_epochs >= c.patience:
                    break
        module.load_state_dict(best_state)
        module.eval()
    return FittedCNN(module=module, config=c, best_epoch=best_epoch, history=history,
                     seconds=round(_time.perf_counter() - started, 3), n_train=len(tr), n_val=len(va))


def predict_log_risk(fitted: FittedCNN, images: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """(N, H, W, 3) uint8 photos -> (N,) float64 log relative hazards (higher = shorter survival)."""
    images = check_images(images)
    if batch_size < 1:
        raise DataError(f"cnn: batch_size must be >= 1, got {batch_size}")
    module = fitted.module
    module.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = _to_tensor(images[start:start + batch_size], fitted.config.image_size)
            out.append(module(x))
    risk = torch.cat(out).double().numpy()
    if not np.isfinite(risk).all():
        raise DataError("cnn: the network produced non-finite risks; retrain with a lower lr")
    return risk


# -- files -------------------------------------------------------------------------------------

def save_cnn(fitted: FittedCNN, directory: str | Path) -> Path:
    """Write `directory`/weights.safetensors and config.json, replacing the directory atomically.

    config.json holds the config, best_epoch, history, n_train, n_val, seconds and the weights
    file's sha256. Returns the directory.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in fitted.module.state_dict().items()}
    with atomic_dir(directory) as tmp:   # a crash leaves the old directory or the new one
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        digest = hashlib.sha256((tmp / WEIGHTS_FILE).read_bytes()).hexdigest()
        meta = {"format": FORMAT, "config": dataclasses.asdict(fitted.config), "best_epoch": fitted.best_epoch,
                "history": fitted.history, "seconds": fitted.seconds, "n_train": fitted.n_train,
                "n_val": fitted.n_val, "weights_sha256": digest}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def load_cnn(directory: str | Path) -> FittedCNN:
    """Rebuild a network saved by save_cnn; refuses weights whose sha256 is not the recorded one.

    Raises DataError for a directory that is not a saved CNN, ValueError for altered weights.
    """
    from safetensors.torch import load as load_safetensors

    directory = Path(directory)
    cfg_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not cfg_path.is_file() or not weights_path.is_file():
        raise DataError(f"{directory}: not a saved CNN (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
                        "write one with training.cnn.save_cnn")
    try:
        meta = json.loads(cfg_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        config = CNNConfig(**meta["config"])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DataError(f"{cfg_path}: not a {FORMAT} config ({exc}); save the model again with save_cnn") from None
    check_config(config)
    blob = weights_path.read_bytes()   # hash and load the same bytes
    digest = hashlib.sha256(blob).hexdigest()
    if digest != meta.get("weights_sha256"):
        raise ValueError(f"{weights_path}: sha256 {digest[:16]}... is not the {str(meta.get('weights_sha256'))[:16]}... "
                         f"recorded in {CONFIG_FILE}; the file was altered: retrain and save the model again")
    module = build_cnn(config.arch, trainable_blocks=config.trainable_blocks, dropout=config.dropout)
    # every weight comes from the file
    module.load_state_dict(load_safetensors(blob), strict=True)
    module.eval()
    return FittedCNN(module=module, config=config, best_epoch=int(meta["best_epoch"]), history=list(meta["history"]),
                     seconds=float(meta.get("seconds", 0.0)), n_train=int(meta.get("n_train", 0)),
                     n_val=int(meta.get("n_val", 0)))
