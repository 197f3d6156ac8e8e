"""The StyleGAN2 training objectives (Karras et al. 2019, 2020) as pure functions: no loop, no optimizer.

Logits are D's outputs, (N,) or (N, 1). The paper's config F uses: the non-saturating logistic loss,
R1 on the reals with gamma = 10 (at 1024x1024 FFHQ; smaller images want smaller gamma), lazily every 16
D steps; the path-length regulariser with weight 2 and decay 0.01, lazily every 4 G steps; style
mixing with probability 0.9; G's moving average with a half-life of 10 kimg; Adam with lr 0.002 and
betas (0, 0.99). A lazily applied regulariser is weighted by its interval (`lazy_weight`) and the
optimizer's hyperparameters adjusted for the extra steps (`lazy_adam`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from embedding.stylegan2.generator import Generator


def _logits(t: torch.Tensor, name: str) -> torch.Tensor:
    """(N,) or (N, 1) -> (N,)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1 or t.shape[0] < 1:
        raise ValueError(f"{name} must be one logit per image, (N,) or (N, 1) with N >= 1, got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {t.dtype}; pass D's output unchanged")
    return t


def _images(t: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.ndim != 4:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a batch of images (N, C, H, W), got {shape}")
    return t


def _number(value: float, name: str, *, low: float, high: float = math.inf) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not math.isfinite(v) or not low <= v <= high:
        upper = "" if high == math.inf else f" to {high:g}"
        raise ValueError(f"{name} must be a finite number from {low:g}{upper}, got {value!r}")
    return v


def _interval(value: int, name: str = "interval") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a whole number of steps >= 1 (1 = every step), got {value!r}")
    return value


# --- adversarial losses -------------------------------------------------------------------------------

def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator's non-saturating logistic loss: mean softplus(-D(G(z))). fake_logits (N,) or (N, 1) -> ()."""
    return F.softplus(-_logits(fake_logits, "fake_logits")).mean()


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator's logistic loss: mean softplus(D(fake)) + mean softplus(-D(real)).

    real_logits (N,) or (N, 1), fake_logits (M,) or (M, 1) -> (). Each term is averaged over its own
    batch, so N and M may differ. Pass the fakes' logits computed from detached images (D's step must
    not update G).
    """
    real = _logits(real_logits, "real_logits")
    fake = _logits(fake_logits, "fake_logits")
    return F.softplus(fake).mean() + F.softplus(-real).mean()


# --- regularisers -------------------------------------------------------------------------------------

def r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): squared norm of D's gradient at each real image.

    real_images (N, C, H, W), with requires_grad, and real_logits = D(real_images), (N,) or (N, 1)
    -> (N,) values ||d D(x_i) / d x_i||^2. The graph is kept (create_graph), so the penalty can be
    back-propagated into D. The R1 loss term is `lazy_weight(gamma / 2, interval) * penalty.mean()`,
    added every `interval` D steps. The gradient is that of the summed logits: with minibatch-std on,
    each image's gradient also carries the small terms from the other logits of its group.
    """
    images = _images(real_images, "real_images")
    logits = _logits(real_logits, "real_logits")
    if not images.requires_grad:
        raise ValueError("real_images must require grad before D sees them: x = real_images.detach()"
                         ".requires_grad_(True); logits = D(x); r1_penalty(x, logits)")
    if logits.shape[0] != images.shape[0]:
        raise ValueError(f"real_logits hold {logits.shape[0]} values for {images.shape[0]} images; "
                         f"pass D(real_images) for this very batch")
    if not logits.requires_grad:
        raise ValueError("real_logits carry no graph: compute them as D(real_images) with grad enabled "
                         "(not under torch.no_grad())")
    (grad,) = torch.autograd.grad(logits.sum(), images, create_graph=True, allow_unused=True)
    if grad is None:
        raise ValueError("real_logits do not depend on real_images: compute them as D(real_images) from "
                         "the very tensor passed here")
    return grad.square().sum(dim=(1, 2, 3))


def path_length_penalty(fake_images: torch.Tensor, ws: torch.Tensor, pl_mean: float | torch.Tensor,
                        decay: float = 0.01, *, generator: torch.Generator | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Path-length regulariser (Karras et al. 2020, sec. 3.2): G's Jacobian should keep lengths.

    fake_images (N, C, H, W) = G.synthesis(ws), ws (N, L, w_dim) in the graph; pl_mean: the running
    mean length `a`, a float or 0-d tensor (start at 0). Returns (penalty (N,), new_pl_mean 0-d,
    detached) with

        y ~ N(0, I) / sqrt(H * W)             (image-space noise, drawn with `generator`, shaped like fake_images)
        length_i = sqrt(mean_l ||(J_i^T y)_l||^2)      (root mean square over the L ws of image i)
        a' = a + decay * (mean_i length_i - a),  penalty_i = (length_i - a')^2.

    The 1/sqrt(H*W) keeps lengths independent of the image size; the mean over the ws layers keeps
    them independent of num_ws. The loss term is `lazy_weight(pl_weight, interval) * penalty.mean()`
    every `interval` G steps; keep new_pl_mean for the next call.
    """
    images = _images(fake_images, "fake_images")
    if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or ws.shape[0] != images.shape[0]:
        shape = tuple(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
        raise ValueError(f"ws must be (N={images.shape[0]}, num_ws, w_dim), the ws the images were synthesised "
                         f"from, got {shape}")
    if not ws.requires_grad or not images.requires_grad:
        raise ValueError("fake_images must be computed from ws inside the graph: ws = G.mapping(z) with grad "
                         "enabled (or ws.requires_grad_(True)), then fake_images = G.synthesis(ws)")
    decay = _number(decay, "decay", low=0.0, high=1.0)
    a = torch.as_tensor(pl_mean, dtype=torch.float32)
    if a.ndim != 0 or not torch.isfinite(a):
        raise ValueError(f"pl_mean must be a finite number or 0-d tensor (start with 0.0), got {pl_mean!r}")
    a = a.detach().to(device=images.device, dtype=images.dtype)
    lengths = path_lengths(images, ws, generator=generator)
    new_mean = a + decay * (lengths.detach().mean() - a)
    return (lengths - new_mean).square(), new_mean


def path_lengths(fake_images: torch.Tensor, ws: torch.Tensor, *, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """The lengths (N,) of `path_length_penalty`, in the graph (create_graph): length_i =
    sqrt(mean_l ||(J_i^T y)_l||^2) with y ~ N(0, I) / sqrt(H * W) drawn with `generator`. For a
    batch processed in parts, the running mean must be updated from all parts' lengths at once."""
    h, w = fake_images.shape[-2:]
    noise_device = generator.device if generator is not None else fake_images.device
    y = torch.randn(fake_images.shape, generator=generator, device=noise_device).to(fake_images) / math.sqrt(h * w)
    (grad,) = torch.autograd.grad((fake_images * y).sum(), ws, create_graph=True, allow_unused=True)
    if grad is None:
        raise ValueError("fake_images do not depend on ws: pass fake_images = G.synthesis(ws) for these ws")
    return grad.square().sum(dim=2).mean(dim=1).sqrt()


def lazy_weight(weight: float, interval: int) -> float:
    """A regulariser's weight when it is evaluated only every `interval` steps: weight * interval.

    Lazy regularisation (Karras et al. 2020, sec. 3.1) adds the term once per `interval` minibatches;
    scaling it by the interval keeps its average strength. For R1 pass gamma / 2.
    """
    return _number(weight, "weight", low=0.0) * _interval(interval)


def lazy_adam(lr: float, betas: tuple[float, float], interval: int) -> tuple[float, tuple[float, float]]:
    """Adam's (lr, betas) for a network regularised lazily every `interval` steps.

    A regularisation step is an extra optimizer step every `interval` minibatches, so k minibatches take
    k + 1 steps; with c = interval / (interval + 1), lr * c and betas ** c keep the step size and the
    momentum horizon per minibatch as without regularisation. interval 1 (regularised every step, no
    extra steps) returns the inputs unchanged.
    """
    lr = _number(lr, "lr", low=0.0)
    if len(betas) != 2:
        raise ValueError(f"betas must be Adam's pair (beta1, beta2), got {betas!r}")
    b1, b2 = (_number(b, "each beta", low=0.0, high=1.0) for b in betas)
    if _interval(interval) == 1:
        return lr, (b1, b2)
    c = interval / (interval + 1)
    return lr * c, (b1 ** c, b2 ** c)


# --- style mixing -------------------------------------------------------------------------------------

def mix_styles(G: Generator, z: torch.Tensor, z2: torch.Tensor, prob: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Style-mixing regularisation (Karras et al. 2019, sec. 3.1): ws mixed from two latents.

    z, z2 (N, z_dim) -> ws (N, num_ws, w_dim) for G.synthesis. With probability `prob`, independently per
    image, the ws from layer k on come from z2's mapping instead of z's, k drawn uniformly from
    1 .. num_ws - 1 (so both latents contribute); otherwise all ws are z's. `generator`, a CPU
    torch.Generator, draws these choices. Only z's mapping updates G's w_avg (in training mode), as for an unmixed batch.
    """
    prob = _number(prob, "prob", low=0.0, high=1.0)
    if not isinstance(z, torch.Tensor) or not isinstance(z2, torch.Tensor) or z.shape != z2.shape:
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in (z, z2)]
        raise ValueError(f"z and z2 must be tensors of the same shape (N, z_dim), got {shapes[0]} and {shapes[1]}")
    ws = G.mapping(z)
    n, num_ws = ws.shape[0], ws.shape[1]
    if prob == 0.0 or num_ws < 2:
        return ws
    ws2 = G.mapping(z2, update_w_avg=False)
    mixed = torch.rand(n, generator=generator) < prob
    crossover = torch.randint(1, num_ws, (n,), generator=generator)
    crossover = torch.where(mixed, crossover, torch.full_like(crossover, num_ws))
    from_z2 = torch.arange(num_ws)[None, :] >= crossover[:, None]  # (N, num_ws)
    return torch.where(from_z2[:, :, None].to(ws.device), ws2, ws)


# --- moving average of G ------------------------------------------------------------------------------

def ema_beta(batch_size: int, ema_kimg: float = 10.0) -> float:
    """Per-step decay of G's moving average for a half-life of `ema_kimg` thousand images:
    0.5 ** (batch_size / (ema_kimg * 1000)); after ema_kimg * 1000 images the old weights count half.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of images >= 1, got {batch_size!r}")
    kimg = _number(ema_kimg, "ema_kimg", low=0.0)
    if kimg == 0.0:
        raise ValueError("ema_kimg must be > 0 (the half-life in thousands of images); to copy G use beta 0")
    return 0.5 ** (batch_size / (kimg * 1000.0))


@torch.no_grad()
def ema_update(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """In place: every parameter of G_ema becomes beta * G_ema + (1 - beta) * G; buffers are copied from G.

    G_ema and G must have the same architecture (same parameter and buffer names and shapes). beta 0
    copies G, beta 1 keeps G_ema's parameters. Buffers (w_avg, noise_const) are statistics or constants,
    not trained weights, so G_ema takes G's current ones.
    """
    beta = _number(beta, "beta", low=0.0, high=1.0)
    for kind, ema_items, items in (("parameters", dict(G_ema.named_parameters()), dict(G.named_parameters())),
                                   ("buffers", dict(G_ema.named_buffers()), dict(G.named_buffers()))):
        if ema_items.keys() != items.keys():
            missing = sorted(items.keys() - ema_items.keys())[:5]
            extra = sorted(ema_items.keys() - items.keys())[:5]
            raise ValueError(f"G_ema and G differ in their {kind} (only in G: {missing}, only in G_ema: {extra}); "
                             f"build G_ema as copy.deepcopy(G)")
        for name, t_ema in ema_items.items():
            t = items[name]
            if t.shape != t_ema.shape:
                raise ValueError(f"{name} is {tuple(t.shape)} in G but {tuple(t_ema.shape)} in G_ema; "
                                 f"build G_ema as copy.deepcopy(G)")
            t = t.detach().to(device=t_ema.device, dtype=t_ema.dtype)
            if kind == "buffers":
                t_ema.copy_(t)
            else:
                t_ema.copy_(t.lerp(t_ema, beta))
