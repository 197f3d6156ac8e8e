"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs") on perceptual features.

KID is the squared maximum mean discrepancy (MMD²) between two feature sets under the cubic
polynomial kernel k(x, y) = (x·y / d + 1)³, estimated without bias (the k(x_i, x_i) terms are
left out) and averaged over random equal-size subsets of the two sets. Its expectation is 0
when both sets come from one distribution, so small samples give no systematic offset (unlike
FID); a single estimate can be slightly negative.

The paper computes it on Inception-v3 pool3 features; those weights cannot be downloaded on
these machines, so the features here are the workspace's perceptual network's: the relu5_3 map
of its VGG-16 trunk, spatially averaged (`perceptual_features`). That is ImageNet VGG-16 where
the weights are installed and the shift-tolerant LPIPS stand-in otherwise; `feature_source`
names which. Values are comparable only between runs on the same features, never with
published Inception KID.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from embedding.perceptual import PerceptualDistance, PerceptualInfo

FEATURE_LAYER = "relu5_3"
FEATURE_DIM = 512  # channels of VGG-16's relu5_3
KERNEL = "polynomial k(x, y) = (x.y / d + 1)^3"

# Below this many kernel entries over both pooled sets (64 MiB of float64), the whole kernel
# matrix is computed once and subsets index into it: with a few hundred photos and 100 subsets
# that is far cheaper than 3 matrix products per subset.
_GRAM_LIMIT = 2**23


@dataclass(frozen=True)
class KidResult:
    """A KID estimate.

    value: mean unbiased MMD² over the subsets (can be slightly < 0 for matching sets).
    std_error: sample std (ddof=1) of the per-subset MMD² / sqrt(subsets); NaN for one subset.
        Subsets are drawn from the same pool, so they overlap and this understates the
        uncertainty when subsets * subset_size exceeds the sample sizes; when subset_size is
        both n_real and n_fake every subset is the whole set and it is 0 (up to rounding).
    subsets: how many subsets were averaged.
    subset_size: the size used, min(requested, n_real, n_fake).
    n_real, n_fake: rows of the two feature sets.
    """

    value: float
    std_error: float
    subsets: int
    subset_size: int
    n_real: int
    n_fake: int


def _features(x: Any, name: str) -> np.ndarray:
    """numpy or torch features -> validated (N, d) float64 array."""
    if isinstance(x, torch.Tensor):
        arr = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be an (N, d) array of numbers, got {type(x).__name__} ({exc}); "
                             "pass a numpy array or torch tensor such as perceptual_features returns") from None
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be (N, d) with d >= 1, got shape {arr.shape}; "
                         "flatten or pool each sample to one feature vector (see perceptual_features)")
    if arr.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {arr.shape[0]}: the unbiased MMD² leaves "
                         "out k(x_i, x_i), so a set of one has no pairs; compute features for more images")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(str(int(r)) for r in rows[:5]) + (", ..." if rows.size > 5 else "")
        raise ValueError(f"{name} has non-finite values (NaN or infinity) in {rows.size} rows ({shown}); "
                         "drop those samples or recompute their features")
    return arr


def _positive_int(value: Any, name: str, minimum: int) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if isinstance(value, bool) or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return n


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, d), (m, d) -> (n, m) polynomial kernel (a·b / d + 1)³."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD² from the (m, m) kernel blocks of two size-m samples."""
    m = kxx.shape[0]
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.sum() / (m * m))


def kid(real_features: Any, fake_features: Any, *, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> KidResult:
    """Kernel Inception Distance between two feature sets.

    Args:
        real_features: (N_real, d) numpy array or torch tensor, e.g. perceptual_features of
            real aligned photos. Computed in float64.
        fake_features: (N_fake, d), the same features of generated samples.
        subsets: how many random subset pairs to average (>= 1).
        subset_size: requested subset size (>= 2); min(subset_size, N_real, N_fake) is used.
            Each subset is drawn without replacement within itself, independently per subset.
        seed: seeds the subset draws; the same inputs and seed give the same result.

    Returns:
        KidResult; `value` is in the features' squared-kernel units, not comparable across
        feature networks.

    Raises:
        ValueError: fewer than 2 samples in a set, different d, non-finite values, or
            subsets < 1 / subset_size < 2; the message says what to change.
    """
    x = _features(real_features, "real_features")
    y = _features(fake_features, "fake_features")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real_features have d={x.shape[1]} but fake_features have d={y.shape[1]}; "
                         "compute both sets with the same perceptual network and layer")
    subsets = _positive_int(subsets, "subsets", 1)
    subset_size = _positive_int(subset_size, "subset_size", 2)
    n_real, n_fake = x.shape[0], y.shape[0]
    m = min(subset_size, n_real, n_fake)
    rng = np.random.default_rng(seed)

    gram: np.ndarray | None = None
    pooled = (n_real + n_fake) ** 2
    if pooled <= _GRAM_LIMIT and pooled <= subsets * 3 * m * m:
        both = np.concatenate([x, y])
        gram = _kernel(both, both)

    values = np.empty(subsets)
    for s in range(subsets):
        ix = rng.choice(n_real, size=m, replace=False)
        iy = rng.choice(n_fake, size=m, replace=False)
        if gram is not None:
            iy_pooled = iy + n_real
            kxx = gram[np.ix_(ix, ix)]
            kyy = gram[np.ix_(iy_pooled, iy_pooled)]
            kxy = gram[np.ix_(ix, iy_pooled)]
        else:
            xs, ys = x[ix], y[iy]
            kxx, kyy, kxy = _kernel(xs, xs), _kernel(ys, ys), _kernel(xs, ys)
        values[s] = _mmd2_unbiased(kxx, kyy, kxy)

    std_error = float(values.std(ddof=1) / math.sqrt(subsets)) if subsets > 1 else math.nan
    return KidResult(value=float(values.mean()), std_error=std_error, subsets=subsets, subset_size=m,
                     n_real=n_real, n_fake=n_fake)


def perceptual_features(net: PerceptualDistance, images: torch.Tensor | np.ndarray, *,
                        batch_size: int = 64) -> np.ndarray:
    """Pooled deep features of the perceptual network, the inputs KID compares.

    Each image goes through the same preprocessing as the network's distance (area-resized to
    `net.resize` when larger, upsampled to the minimum size when smaller, the network's input
    normalisation), then its VGG-16 trunk; the deepest map the trunk exposes, relu5_3
    (FEATURE_DIM = 512 channels), is averaged over space. The features are raw ReLU activations:
    not channel-normalised or weighted by the LPIPS heads, which serve distances between aligned
    pixels, not distribution statistics.

    Args:
        net: a PerceptualDistance from load_perceptual (its weights are not changed; runs on
            the device its parameters are on, without gradients).
        images: (N, 3, H, W) float in [-1, 1], H == W; generator outputs that overshoot are
            clamped to [-1, 1], as they would be when saved as pictures.
        batch_size: images per forward pass.

    Returns:
        (N, 512) float32 numpy array, one row per image, in input order.

    Raises:
        ValueError: wrong shape, no images, non-finite pixels, or batch_size < 1.
    """
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] < 1:
        raise ValueError(f"images must be (N, 3, H, W) with N >= 1, got shape {tuple(x.shape)}; "
                         "stack RGB images in [-1, 1] channels-first")
    if not x.is_floating_point():
        raise ValueError(f"images must be float in [-1, 1], got dtype {x.dtype}; "
                         "convert uint8 pictures with x / 127.5 - 1")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("images have non-finite pixels (NaN or infinity); drop or re-render those images")
    batch_size = _positive_int(batch_size, "batch_size", 1)
    device = next(net.parameters()).device
    rows = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            batch = x[start:start + batch_size].to(device=device, dtype=torch.float32).clamp(-1.0, 1.0)
            # _prepare is the distance's own preprocessing: the features see what the distance sees
            deepest = net.trunk(net._prepare(batch))[-1]
            rows.append(deepest.float().mean(dim=(2, 3)).cpu())
    return torch.cat(rows).numpy()


def feature_source(info: PerceptualInfo) -> str:
    """One line naming the features KID was computed on, for reports and lineage."""
    if info.is_stand_in:
        network = (f"{info.network}: STAND-IN shift-tolerant LPIPS VGG-16 (stlpips-pytorch), "
                   "not ImageNet VGG-16")
    else:
        network = f"{info.network}: ImageNet VGG-16"
    return (f"{network}; {FEATURE_LAYER} spatial mean, {FEATURE_DIM}-d, not Inception-v3; "
            f"weights sha256 {info.sha256}")
