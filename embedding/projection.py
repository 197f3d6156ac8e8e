"""Project photos into a StyleGAN2 generator's latent space by gradient descent.

One pure function, `project`, in the manner of NVIDIA's stylegan2-ada-pytorch projector:

- space "w" (NVIDIA's): one w per photo shared by every layer, started at w_avg (the mean of
  `w_avg_samples` mapped z drawn from a fixed seed, as the reference does, not the
  generator's tracked buffer, which is zero in a random-init generator), Gaussian noise
  added to w with a quadratic ramp-down, a cosine learning-rate ramp-down and a linear
  ramp-up, Adam (0.9, 0.999), and optimised per-layer noise buffers held near white noise
  by the multi-scale autocorrelation penalty and renormalised after every step.
- space "z" (the paper's): optimise the 512-d z itself; the mapping network is part of the
  graph. z starts either from the sampled z whose w lies nearest w_avg (z_init
  "nearest_w_avg", the same start for every photo, the z analogue of NVIDIA's start) or
  from a per-photo Gaussian draw (z_init "seeded"). Noise on z and every schedule as in w.
- space "w+": one w per layer, started at w_avg.
- any space can start instead from per-photo latents (`init`), e.g. an encoder's guess
  (embedding.encoder): a few steps from there replace many from w_avg.

Batches are independent projections: every photo has its own latent, noise buffers, noise
penalty and RNG stream (a torch.Generator seeded per photo), Adam is element-wise and the
loss is a sum of per-photo terms, so a photo's result does not depend on its batch mates
(tests check this to 1e-6). All random draws happen on the CPU so a seed gives the same
start on any device.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SPACES = ("z", "w", "w+")
LOSSES = ("mse", "perceptual", "mse+perceptual")
Z_INITS = ("nearest_w_avg", "seeded")
NOISE_MODES = ("optimize", "const", "none")
W_AVG_SEED = 123      # fixed, so w_avg (and the start) is the same for every call and batch


@dataclass(frozen=True)
class ProjectionResult:
    """Per-photo outputs of `project` (numpy, CPU).

    latents: (N, 512) float32 z or w; (N, num_ws, w_dim) for "w+".
    w: (N, w_dim) float32 the w the latent maps to (mean over layers for "w+").
    perceptual_loss, mse: (N,) float64 at the final latent (perceptual NaN when no network was given).
    initial_loss, final_loss: (N,) float64 the optimised distance (without the noise penalty)
        at the start and at the end.
    initial_mse, initial_perceptual_loss: (N,) float64 at the start.
    """

    space: str
    steps: int
    loss: str
    latents: np.ndarray
    w: np.ndarray
    perceptual_loss: np.ndarray
    mse: np.ndarray
    initial_loss: np.ndarray
    final_loss: np.ndarray
    initial_mse: np.ndarray
    initial_perceptual_loss: np.ndarray
    seeds: tuple[int, ...]


def resolve_device(setting: str) -> str:
    """"auto" | "cpu" | "cuda" -> the device to run on here ("auto": CUDA when present).

    Raises ValueError when "cuda" is asked for on a machine without it.
    """
    if setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {setting!r}")
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("projection.device is cuda but this machine has no CUDA device; use auto or cpu")
    return setting


def stable_seed(seed: int, key: str) -> int:
    """A 63-bit seed from (seed, key); the batch driver keys it by the photo's content hash."""
    digest = hashlib.sha256(f"{int(seed)}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def learning_rate_at(step: int, steps: int, *, learning_rate: float, rampdown: float, rampup: float) -> float:
    """NVIDIA's schedule: linear ramp-up over the first `rampup` fraction, cosine ramp-down over the last `rampdown`."""
    t = step / steps
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if rampup > 0:
        ramp *= min(1.0, t / rampup)
    return learning_rate * ramp


def latent_noise_scale(step: int, steps: int, *, latent_std: float, factor: float, ramp: float) -> float:
    """Scale of the Gaussian noise added to the latent: quadratic ramp to 0 over the first `ramp` fraction."""
    t = step / steps
    if ramp <= 0:
        return 0.0
    return latent_std * factor * max(0.0, 1.0 - t / ramp) ** 2


def noise_penalty(noise: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-photo multi-scale autocorrelation penalty of noise buffers.

    noise: tensors (N, 1, r, r). At every scale down to 8x8 (2x average pooling), the squared
    mean of the buffer times itself shifted one pixel right and one pixel down. Returns (N,).
    """
    total = None
    for buf in noise:
        x = buf
        while True:
            term = (x * torch.roll(x, shifts=1, dims=3)).mean(dim=(1, 2, 3)).square() + \
                (x * torch.roll(x, shifts=1, dims=2)).mean(dim=(1, 2, 3)).square()
            total = term if total is None else total + term
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    if total is None:
        raise ValueError("noise_penalty needs at least one noise buffer")
    return total


def _normalise_noise_(noise: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for buf in noise:
            buf -= buf.mean(dim=(1, 2, 3), keepdim=True)
            buf *= buf.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()


def _mapping(G, z: torch.Tensor) -> torch.Tensor:
    # update_w_avg=False: projection must never move the generator's tracked w_avg.
    return G.mapping(z, truncation_psi=1.0, update_w_avg=False)


@dataclass(frozen=True)
class LatentStats:
    """Where projections start and how wide their latent noise is, from fixed-seed samples.

    w_avg: (w_dim,) mean mapped w; w_std: NVIDIA's spread (root of the mean summed squared
    deviation per sample); z_std likewise for z; z_start: (z_dim,) the sampled z whose w lies
    nearest w_avg. `samples` records how many z were drawn.
    """

    samples: int
    w_avg: torch.Tensor
    w_std: float
    z_std: float
    z_start: torch.Tensor


def latent_statistics(G, *, samples: int = 10000, device: str | torch.device = "cpu") -> LatentStats:
    """LatentStats of G from `samples` z drawn with a fixed seed (CPU tensors).

    They depend only on G's mapping network and `samples`, so a batch driver computes them
    once and passes them to every `project` call (10k mapping passes cost seconds per batch).
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples!r}")
    device = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(W_AVG_SEED)
    z = torch.randn(samples, G.z_dim, generator=gen)
    ws = []
    with torch.no_grad():
        for chunk in z.split(1024):
            ws.append(_mapping(G, chunk.to(device))[:, 0, :].float().cpu())
    w = torch.cat(ws).double()
    w_avg = w.mean(dim=0)
    w_std = float(((w - w_avg).square().sum() / samples).sqrt())
    zd = z.double()
    z_std = float(((zd - zd.mean(dim=0)).square().sum() / samples).sqrt())
    nearest = int((w - w_avg).square().sum(dim=1).argmin())
    return LatentStats(samples=samples, w_avg=w_avg.float(), w_std=w_std, z_std=z_std, z_start=z[nearest].clone())


def check_images(images, *, resolution: int, owner: str = "the generator") -> torch.Tensor:
    """(N, 3, R, R) photos in [-1, 1] (tensor or array) -> float32 tensor; a one-line ValueError
    saying how to fix anything else. `owner` names what fixes R in the message."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    r = resolution
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != r or x.shape[3] != r:
        raise ValueError(f"images must be (N, 3, {r}, {r}) to match {owner}, got {tuple(x.shape)}; "
                         f"resize the photos to {r}x{r}")
    if x.shape[0] < 1:
        raise ValueError("images is empty; pass at least one photo")
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")
    if float(x.min()) < -1.0001 or float(x.max()) > 1.0001:
        raise ValueError(f"images must be scaled to [-1, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x


def _check_init(G, init, *, space: str, n_photos: int) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(init) if not isinstance(init, torch.Tensor) else init).detach()
    shapes: list[tuple[int, ...]]
    if space == "z":
        shapes = [(n_photos, G.z_dim)]
    elif space == "w":
        shapes = [(n_photos, G.w_dim)]
    else:
        shapes = [(n_photos, G.w_dim), (n_photos, G.num_ws, G.w_dim)]
    if tuple(x.shape) not in shapes:
        raise ValueError(f"init must be {' or '.join(str(s) for s in shapes)} for space {space!r} "
                         f"(one start latent per photo), got {tuple(x.shape)}")
    x = x.float().cpu()
    if not torch.isfinite(x).all():
        raise ValueError("init contains NaN or infinite values; pass finite start latents")
    return x


def project(
    G,
    images,
    *,
    space: str = "w",
    steps: int = 100,
    learning_rate: float = 0.1,
    loss: str = "mse",
    perceptual=None,
    seed: int | Sequence[int] = 0,
    noise_regularize: float = 1e5,
    initial_noise_factor: float = 0.05,
    noise_ramp_length: float = 0.75,
    lr_rampdown_length: float = 0.25,
    lr_rampup_length: float = 0.05,
    noise_mode: str = "optimize",
    z_init: str = "nearest_w_avg",
    w_avg_samples: int = 10000,
    mse_weight: float = 1.0,
    batch_multiple: int = 8,
    clamp_output: bool = True,
    device: str | torch.device = "cpu",
    mixed_precision: bool = False,
    progress: Callable[[int, int], None] | None = None,
    stats: LatentStats | None = None,
    init=None,
) -> ProjectionResult:
    """Find, for every photo, the latent whose generated image best matches it.

    Args:
        G: generator (embedding.stylegan2.Generator API) already on `device`; not modified.
        images: (N, 3, R, R) float in [-1, 1], R = G.img_resolution (tensor or array).
        space: "z" (paper), "w" (NVIDIA) or "w+".
        steps: optimisation steps (>= 1; 0 with `init` returns the start itself, "encoder only").
        learning_rate: Adam's peak learning rate.
        loss: "mse" (pixel mean squared error in [-1, 1] units), "perceptual" (LPIPS-style
            VGG-16 distance; needs `perceptual`) or "mse+perceptual" (perceptual + mse_weight * mse).
        perceptual: an embedding.perceptual.PerceptualDistance on `device`, or None. With
            loss "mse" it is only used to report the final perceptual loss.
        seed: one int (photo i gets stable_seed(seed, str(i))) or N per-photo seeds; a
            photo's result depends only on its own seed, image and the settings.
        noise_regularize: weight of the noise autocorrelation penalty.
        initial_noise_factor, noise_ramp_length: latent noise = latent_std * factor *
            max(0, 1 - t / ramp)^2, t = step / steps.
        lr_rampdown_length, lr_rampup_length: fractions of the run for the lr ramps.
        noise_mode: "optimize" (per-photo noise buffers, optimised and regularised),
            "const" (the generator's fixed buffers) or "none" (no noise).
        z_init: for space "z": "nearest_w_avg" or "seeded" (per-photo N(0, I) draw).
        w_avg_samples: z samples (fixed seed) for w_avg, w_std and the z start.
        batch_multiple: the batch is padded (with throw-away rows) to a multiple of this.
            MKL's sgemm and oneDNN's convolutions round a row differently depending on how
            many rows share the call when that count is small or odd, which would make a
            photo's result depend on its batch size; multiples of 8 measured invariant.
            1 disables the padding (faster for a single photo, not batch-invariant).
        clamp_output: compare the generated image clipped to [-1, 1], as a saved 8-bit photo
            is: pixels the generator overshoots carry no error where the photo is saturated.
            (NVIDIA's projector does not clip; a trained generator rarely overshoots, while a
            random-init one saturates about half the pixels of the demo's photos, and there
            clipping raised the round-trip correlation along d from 0.60 to 0.90.)
        device: "cpu", "cuda", or a torch.device.
        mixed_precision: bfloat16 autocast for the generator and VGG forward (CUDA only).
        progress: called as progress(step, steps) after every step.
        stats: latent_statistics(G, samples=w_avg_samples) computed beforehand, to reuse
            across batches; None computes them here. Must match w_avg_samples.
        init: per-photo start latents instead of w_avg (or z_init's start), e.g. from
            embedding.encoder.encode: (N, z_dim) for space z, (N, w_dim) for w, (N, w_dim)
            (every layer) or (N, num_ws, w_dim) for w+; tensor or array, finite. Everything
            else (latent noise, schedules, noise buffers, seeds) is as without it.

    Returns:
        ProjectionResult (see its docstring for shapes).

    Raises:
        ValueError: a bad argument, with how to fix it.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
    if z_init not in Z_INITS:
        raise ValueError(f"z_init must be one of {', '.join(Z_INITS)}, got {z_init!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < (0 if init is not None else 1):
        raise ValueError(f"steps must be an integer >= 1 (or 0 with init=, to keep the start), got {steps!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    if w_avg_samples < 1:
        raise ValueError(f"w_avg_samples must be >= 1, got {w_avg_samples!r}")
    if noise_regularize < 0:
        raise ValueError(f"noise_regularize must be >= 0, got {noise_regularize!r}")
    if "perceptual" in loss and perceptual is None:
        raise ValueError(f"loss {loss!r} needs a perceptual network; pass perceptual=load_perceptual(...)[0] or use loss='mse'")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is cuda but CUDA is not available; use device='cpu'")
    param = next(iter(G.parameters()), None)
    if param is not None and param.device.type != device.type:
        raise ValueError(f"G is on {param.device} but device is {device}; move it with G.to(device) first")

    if not isinstance(batch_multiple, int) or batch_multiple < 1:
        raise ValueError(f"batch_multiple must be an integer >= 1, got {batch_multiple!r}")

    target = check_images(images, resolution=G.img_resolution).to(device)
    n_photos = target.shape[0]
    if isinstance(seed, int | np.integer):
        seeds = [stable_seed(int(seed), str(i)) for i in range(n_photos)]
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != n_photos:
            raise ValueError(f"seed must be one int or one per photo ({n_photos}), got {len(seeds)}")
    start_init = None if init is None else _check_init(G, init, space=space, n_photos=n_photos)
    n_pad = -n_photos % batch_multiple
    if n_pad:
        target = torch.cat([target, target[:1].expand(n_pad, -1, -1, -1)])
        if start_init is not None:
            start_init = torch.cat([start_init, start_init[:1].expand(n_pad, *start_init.shape[1:])])
    n = n_photos + n_pad
    gens = [torch.Generator(device="cpu").manual_seed(s)
            for s in seeds + [stable_seed(-1, f"pad{i}") for i in range(n_pad)]]
    autocast = mixed_precision and device.type == "cuda"

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        """One standard-normal tensor (N, *shape), row i from photo i's own stream."""
        return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)

    if stats is None:
        stats = latent_statistics(G, samples=int(w_avg_samples), device=device)
    elif stats.samples != w_avg_samples or stats.w_avg.shape != (G.w_dim,):
        raise ValueError(f"stats were computed from {stats.samples} samples for w_dim {tuple(stats.w_avg.shape)}, "
                         f"but w_avg_samples is {w_avg_samples} and G.w_dim {G.w_dim}; "
                         "recompute them with latent_statistics(G, samples=w_avg_samples)")
    w_avg, w_std, z_std, z_start = stats.w_avg, stats.w_std, stats.z_std, stats.z_start
    num_ws, w_dim = G.num_ws, G.w_dim
    if start_init is not None:
        start = start_init.to(device)
        if space == "w+" and start.ndim == 2:
            start = start.unsqueeze(1).repeat(1, num_ws, 1)
        latent_std = z_std if space == "z" else w_std
    elif space == "z":
        if z_init == "seeded":
            start = draw((G.z_dim,))
        else:
            start = z_start.to(device).unsqueeze(0).repeat(n, 1)
        latent_std = z_std
    elif space == "w":
        start = w_avg.to(device).unsqueeze(0).repeat(n, 1)
        latent_std = w_std
    else:
        start = w_avg.to(device).view(1, 1, -1).repeat(n, num_ws, 1)
        latent_std = w_std
    latent = start.clone().requires_grad_(True)

    noise_bufs: list[torch.Tensor] = []
    if noise_mode == "optimize":
        for shape in G.synthesis.noise_shapes():
            noise_bufs.append(draw((1, *shape[1:])).requires_grad_(True))
    synth_noise = noise_bufs if noise_mode == "optimize" else None
    synth_mode = "const" if noise_mode != "none" else "none"

    with torch.no_grad():
        target_features = perceptual.embed(target) if perceptual is not None else None

    def to_ws(lat: torch.Tensor) -> torch.Tensor:
        if space == "z":
            return _mapping(G, lat)
        if space == "w":
            return lat.unsqueeze(1).expand(n, num_ws, w_dim)
        return lat

    def distances(lat: torch.Tensor, *, need_perceptual: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(objective, mse, perceptual) per photo, each (N,); perceptual NaN when not computed."""
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            img = G.synthesis(to_ws(lat), noise_mode=synth_mode, noise=synth_noise)
            if clamp_output:
                img = img.clamp(-1.0, 1.0)
            feats = perceptual.embed(img) if need_perceptual and perceptual is not None else None
        img = img.float()
        mse = (img - target).square().mean(dim=(1, 2, 3))
        if feats is not None:
            perc = (feats.float() - target_features).square().sum(dim=1)
        else:
            perc = torch.full_like(mse, float("nan"))
        if loss == "mse":
            objective = mse
        elif loss == "perceptual":
            objective = perc
        else:
            objective = perc + mse_weight * mse
        return objective, mse, perc

    with torch.no_grad():
        init_obj, init_mse, init_perc = distances(latent, need_perceptual=perceptual is not None)

    params = [latent, *noise_bufs]
    optimizer = torch.optim.Adam(params, betas=(0.9, 0.999), lr=learning_rate)
    use_perceptual = "perceptual" in loss
    for step in range(steps):
        lr = learning_rate_at(step, steps, learning_rate=learning_rate, rampdown=lr_rampdown_length,
                              rampup=lr_rampup_length)
        for group in optimizer.param_groups:
            group["lr"] = lr
        scale = latent_noise_scale(step, steps, latent_std=latent_std, factor=initial_noise_factor,
                                   ramp=noise_ramp_length)
        jitter = draw(tuple(latent.shape[1:])) * scale
        objective, _, _ = distances(latent + jitter, need_perceptual=use_perceptual)
        total = objective
        if noise_bufs and noise_regularize > 0:
            total = total + noise_regularize * noise_penalty(noise_bufs)
        # autograd.grad, not backward(): gradients reach only our leaves, never G's parameters
        grads = torch.autograd.grad(total.sum(), params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimizer.step()
        if noise_bufs:
            _normalise_noise_(noise_bufs)
        if progress is not None:
            progress(step + 1, steps)

    with torch.no_grad():
        final_obj, final_mse, final_perc = distances(latent, need_perceptual=perceptual is not None)
        final_ws = to_ws(latent.detach()).float()

    def np64(t: torch.Tensor) -> np.ndarray:
        return t[:n_photos].detach().double().cpu().numpy()

    final_w = final_ws.mean(dim=1) if space == "w+" else final_ws[:, 0]
    return ProjectionResult(
        space=space, steps=steps, loss=loss,
        latents=latent[:n_photos].detach().float().cpu().numpy(),
        w=final_w[:n_photos].cpu().numpy(),
        perceptual_loss=np64(final_perc), mse=np64(final_mse),
        initial_loss=np64(init_obj), final_loss=np64(final_obj),
        initial_mse=np64(init_mse), initial_perceptual_loss=np64(init_perc),
        seeds=tuple(seeds),
    )
