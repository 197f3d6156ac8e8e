"""A small image encoder that gives `project` a per-photo start latent (issue 16, item 3).

Optimisation from w_avg spends most of its steps walking from the average face towards the
photo. An encoder trained on the generator's own samples (the e4e / pSp idea: regress the
latent that made an image) lands a single forward pass near the answer, so a few optimisation
steps from there can match many from w_avg. The encoder is a plain residual CNN whose forward
costs a few percent of one generator forward, trained self-supervised: draw z, map it to w,
render, augment, regress the latent.

- space "w": the encoder predicts the offset from w_avg in units of the per-dimension spread
  (w_std / sqrt(w_dim)); both are buffers, so a saved encoder needs nothing but its file.
  A w encoder also starts "w+" projections (broadcast over the layers).
- space "z": the encoder predicts z itself. The mapping network normalises z's length away, so
  only z's direction is visible in an image; the regression learns the mean length.

Persistence is the project's safetensors format (embedding.stylegan2.store): one file
`encoder.safetensors` whose metadata holds the architecture, the sha256 of the generator it
was trained for (a projection refuses it for any other generator) and the training record.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from embedding.fileio import write_bytes_atomic
from embedding.projection import LatentStats, check_images, stable_seed
from embedding.stylegan2.store import (
    StoreError,
    build_from_file,
    dumps_safetensors,
    load_state_strict,
    loads_safetensors,
    sha256_bytes,
)

ENCODER_FILE = "encoder.safetensors"
FORMAT_NAME = "facesurv-encoder"
FORMAT_VERSION = "1"
ENCODER_SPACES = ("w", "z")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LRELU = 0.2


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Architecture of an Encoder.

    resolution: input size R (2^k from 8 to 1024, the generator's). space: "w" or "z".
    latent_dim: the generator's w_dim (space w) or z_dim (space z).
    width: channels at 64x64; like the generator's channel_base, channels at resolution r are
        width * 64 / r (at least 1), capped at channel_max. A stage then costs about
        27 * (64 * width)^2 multiply-adds whatever its resolution, so a 512 px encoder is
        thin where the pixels are many: with the defaults it costs about 3 GFLOPs at 512 px,
        2.5% of one generator forward (120 GFLOPs), and 0.9 at 32 px.
    hidden: width of the fully connected layer between the 4x4 features and the latent.
    """

    resolution: int
    space: str
    latent_dim: int
    width: int = 64
    channel_max: int = 256
    hidden: int = 512

    def __post_init__(self) -> None:
        r = self.resolution
        if not (isinstance(r, int) and not isinstance(r, bool) and 8 <= r <= 1024 and r & (r - 1) == 0):
            raise ValueError(f"resolution must be a power of two from 8 to 1024 (the generator's), got {r!r}")
        if self.space not in ENCODER_SPACES:
            raise ValueError(f"space must be 'w' or 'z' (a w encoder also starts w+ projections), got {self.space!r}")
        # bounds far above any useful encoder: a crafted file must not allocate terabytes
        for name, most in (("latent_dim", 8192), ("width", 4096), ("channel_max", 8192), ("hidden", 8192)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= most:
                raise ValueError(f"{name} must be an integer from 1 to {most}, got {v!r}")

    def channels(self) -> list[int]:
        """Channels at R, R/2, ..., 4."""
        res = [self.resolution >> k for k in range(self.resolution.bit_length() - 2)]
        return [max(1, min(self.width * 64 // r, self.channel_max)) for r in res]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        """Unknown keys are an error: a typo must not silently change the model."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown encoder config keys: {', '.join(unknown)}")
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class EncoderInfo:
    """Where an encoder came from, for lineage: the sha256 of its weights file, the sha256 of the
    generator it was trained for, its space, the file it was read from and its training steps."""

    sha256: str
    generator_sha256: str
    space: str
    source: str
    steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _DownBlock(nn.Module):
    """Pre-activation residual block, r -> r/2. The skip is average-pooled before its 1x1 conv
    (cheaper than a strided 1x1 and it sees every pixel); the branch's last conv starts at zero,
    so a new encoder is a clean linear path and trains without normalisation layers, whose
    batch statistics would make a photo's latent depend on its batch mates."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(c_in, c_in, 3, padding=1)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv0(F.leaky_relu(x, _LRELU))
        y = self.conv1(F.leaky_relu(y, _LRELU))
        return self.skip(F.avg_pool2d(x, 2)) + y


class Encoder(nn.Module):
    """images (N, 3, R, R) in [-1, 1] -> latents (N, latent_dim) = latent_mean + latent_scale * net(x).

    latent_mean: (latent_dim,) w_avg for space w, zeros for z. latent_scale: (1,) w_std / sqrt(w_dim)
    for w, 1 for z. Both are buffers: saved and loaded with the weights.
    """

    latent_mean: torch.Tensor
    latent_scale: torch.Tensor

    def __init__(self, config: EncoderConfig, *, seed: int | None = 0) -> None:
        """seed: initialise from a local RNG (the global one is untouched); None leaves the tensors
        for loading."""
        super().__init__()
        self.config = config
        ch = config.channels()
        self.stem = nn.Conv2d(3, ch[0], 3, padding=1)
        self.blocks = nn.Sequential(*[_DownBlock(a, b) for a, b in zip(ch[:-1], ch[1:], strict=True)])
        self.fc = nn.Linear(ch[-1] * 16, config.hidden)
        self.out = nn.Linear(config.hidden, config.latent_dim)
        self.register_buffer("latent_mean", torch.zeros(config.latent_dim))
        self.register_buffer("latent_scale", torch.ones(1))
        if seed is not None:
            self.reset_parameters(seed)

    def reset_parameters(self, seed: int) -> None:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        gain = math.sqrt(2.0 / (1.0 + _LRELU ** 2))
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d | nn.Linear):
                    fan_in = m.weight[0].numel()
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (gain / math.sqrt(fan_in)))
                    if m.bias is not None:
                        m.bias.zero_()
            # zero residual branches and a zero head: an untrained encoder answers latent_mean (w_avg),
            # the start projection uses without one
            for block in self.blocks:
                assert isinstance(block, _DownBlock)
                block.conv1.weight.zero_()
            self.out.weight.zero_()

    def set_latent_frame(self, mean: torch.Tensor, scale: float) -> None:
        with torch.no_grad():
            self.latent_mean.copy_(mean.to(self.latent_mean))
            self.latent_scale.fill_(float(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        h = F.leaky_relu(self.fc(F.leaky_relu(h, _LRELU).flatten(1)), _LRELU)
        return self.latent_mean + self.latent_scale * self.out(h)


def encode(E: Encoder, images: Any) -> torch.Tensor:
    """Start latents for `project(init=...)`: images (N, 3, R, R) in [-1, 1] -> (N, latent_dim) float32
    on E's device. No gradients; E is used in eval mode and left in the mode it was in.

    Photos go through one at a time: a convolution's rounding can depend on how many rows share
    the call, and the batch driver reuses a photo's latent whatever batch it was in. The encoder
    is a few percent of one generator pass, so the loop costs nothing that matters.
    """
    x = check_images(images, resolution=E.config.resolution, owner="the encoder")
    device = next(E.parameters()).device
    was_training = E.training
    E.eval()
    try:
        with torch.no_grad():
            return torch.cat([E(x[i:i + 1].to(device)) for i in range(x.shape[0])]).float()
    finally:
        E.train(was_training)


# --- training ------------------------------------------------------------------------------


def _draw_noise(G, n: int, gen: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    return [torch.randn((n, *shape), generator=gen).to(device) for shape in G.synthesis.noise_shapes()]


def _render(G, latent: torch.Tensor, *, space: str, noise: list[torch.Tensor]) -> torch.Tensor:
    """latent (N, D) -> image (N, 3, R, R) clipped to [-1, 1], as a saved photo is."""
    if space == "z":
        ws = G.mapping(latent, truncation_psi=1.0, update_w_avg=False)
    else:
        ws = latent.unsqueeze(1).expand(-1, G.num_ws, -1)
    return G.synthesis(ws, noise_mode="const", noise=noise).clamp(-1.0, 1.0)


def _sample(G, n: int, gen: torch.Generator, device: torch.device, *, space: str):
    """(target latent (N, D), clean image, noise) for n fresh z from `gen`; no gradients."""
    z = torch.randn(n, G.z_dim, generator=gen).to(device)
    noise = _draw_noise(G, n, gen, device)
    with torch.no_grad():
        w = G.mapping(z, truncation_psi=1.0, update_w_avg=False)[:, 0]
        img = _render(G, w, space="w", noise=noise)
    return (z if space == "z" else w), img, noise


def augment_images(x: torch.Tensor, gen: torch.Generator, *, max_shift: int, brightness: float = 0.1,
                   contrast: float = 0.15, pixel_noise: float = 0.02) -> torch.Tensor:
    """Photo-like perturbations of rendered images, drawn from `gen` (CPU): a shift of up to
    max_shift pixels in each direction with the edge repeated, brightness +-brightness,
    contrast x(1 +- contrast) about each image's mean, Gaussian pixel noise, then clipped to
    [-1, 1]. x (N, 3, R, R) -> (N, 3, R, R). Real photos are aligned by landmarks, never exactly
    where the generator puts a face, and exposed differently."""
    n, _, r, _ = x.shape
    if max_shift > 0:
        shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=gen).tolist()
        padded = F.pad(x, (max_shift,) * 4, mode="replicate")
        x = torch.stack([padded[i, :, max_shift + dy:max_shift + dy + r, max_shift + dx:max_shift + dx + r]
                         for i, (dy, dx) in enumerate(shifts)])
    b = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * brightness
    c = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * contrast
    eps = torch.randn(x.shape, generator=gen) * pixel_noise
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * c.to(x.device) + mean + b.to(x.device) + eps.to(x.device)
    return x.clamp(-1.0, 1.0)


def _latent_error(pred: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-sample squared error summed over dimensions, over scale^2 (w_std^2 or z_std^2):
    predicting w_avg scores about 1 on average, a perfect encoder 0."""
    return (pred - target).square().sum(dim=1) / scale ** 2


def train_encoder(
    G,
    *,
    stats: LatentStats,
    space: str = "w",
    steps: int = 2000,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    seed: int = 0,
    augment: bool = True,
    max_shift: int | None = None,
    pixel_weight: float = 0.0,
    holdout_samples: int = 64,
    width: int = 64,
    channel_max: int | None = None,
    hidden: int = 512,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Encoder, dict[str, Any]]:
    """Train an Encoder on G's own samples; G is not modified (no gradients, w_avg not tracked).

    Each step draws batch_size z (seeded CPU generator) and per-sample noise buffers, renders
    w = mapping(z) broadcast to every layer, clips to [-1, 1], augments (see augment_images), and
    minimises the latent error (summed squared error over w_std^2 for space w, over z_std^2 for z;
    about 1 at w_avg, 0 when exact) plus pixel_weight * the pixel MSE between G(E(x)) (same noise)
    and the clean image. Adam with a cosine decay of learning_rate to 0. On the CPU a seed gives
    the same encoder every time.

    Args:
        G: generator (embedding.stylegan2.Generator API) on `device`.
        stats: latent_statistics(G) (w_avg, w_std, z_std frame the latent).
        space: "w" (also starts w+ projections) or "z".
        steps, batch_size, learning_rate: the optimisation.
        seed: training draws use stable_seed(seed, "encoder-train"), the held-out batch
            stable_seed(seed, "encoder-holdout"), the initial weights `seed`.
        augment, max_shift: augmentation on or off; the largest shift in pixels (default R // 32, >= 1).
        pixel_weight: >= 0; > 0 adds the pixel loss (a generator forward and backward per step).
        holdout_samples: the fixed batch of fresh samples the metrics are measured on.
        width, channel_max, hidden: EncoderConfig's; channel_max None: half the generator's
            channel_max, from 8 to 256, so a thin generator (the 32-channel demo) gets an
            encoder thinner than itself.
        progress: called as progress(step, steps) after every step.

    Returns:
        (Encoder in eval mode, metrics): the settings above plus final_loss (last step's mean),
        holdout_latent_error and initial_holdout_latent_error (mean latent error on the held-out
        clean images, after and before training), holdout_pixel_mse and initial_holdout_pixel_mse
        (G(E(x)) vs x there; before training E(x) is w_avg for space w).

    Raises:
        ValueError: a bad argument, with how to fix it.
    """
    if space not in ENCODER_SPACES:
        raise ValueError(f"space must be 'w' or 'z' (train a w encoder for w+ projections), got {space!r}")
    for name, v, least in (("steps", steps, 1), ("batch_size", batch_size, 1), ("holdout_samples", holdout_samples, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {v!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    if not pixel_weight >= 0:
        raise ValueError(f"pixel_weight must be >= 0, got {pixel_weight!r}")
    if stats.w_avg.shape != (G.w_dim,):
        raise ValueError(f"stats are for w_dim {tuple(stats.w_avg.shape)} but G.w_dim is {G.w_dim}; "
                         "recompute them with latent_statistics(G)")
    device = torch.device(device)
    param = next(iter(G.parameters()), None)
    if param is not None and param.device.type != device.type:
        raise ValueError(f"G is on {param.device} but device is {device}; move it with G.to(device) first")
    r = G.img_resolution
    shift = max(1, r // 32) if max_shift is None else int(max_shift)
    if shift < 0 or shift >= r // 2:
        raise ValueError(f"max_shift must be from 0 to {r // 2 - 1} pixels at {r}x{r}, got {max_shift!r}")

    latent_dim = G.w_dim if space == "w" else G.z_dim
    if channel_max is None:
        g_max = getattr(getattr(G, "config", None), "channel_max", 512)
        channel_max = min(256, max(8, int(g_max) // 2))
    config = EncoderConfig(resolution=r, space=space, latent_dim=latent_dim, width=width,
                           channel_max=channel_max, hidden=hidden)
    E = Encoder(config, seed=seed).to(device)
    if space == "w":
        E.set_latent_frame(stats.w_avg, stats.w_std / math.sqrt(G.w_dim))
        scale = stats.w_std
    else:
        scale = stats.z_std
    E.train()

    hold_gen = torch.Generator(device="cpu").manual_seed(stable_seed(seed, "encoder-holdout"))
    hold_latent, hold_img, hold_noise = _sample(G, holdout_samples, hold_gen, device, space=space)

    def holdout() -> tuple[float, float]:
        pred = encode(E, hold_img)
        with torch.no_grad():
            pix = (_render(G, pred, space=space, noise=hold_noise) - hold_img).square().mean()
        return float(_latent_error(pred, hold_latent, scale).mean()), float(pix)

    initial_error, initial_pixel_mse = holdout()
    params = [p for p in E.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=learning_rate, betas=(0.9, 0.99))
    gen = torch.Generator(device="cpu").manual_seed(stable_seed(seed, "encoder-train"))
    loss_value = float("nan")
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * 0.5 * (1 + math.cos(math.pi * step / steps))
        target, clean, noise = _sample(G, batch_size, gen, device, space=space)
        x = augment_images(clean, gen, max_shift=shift) if augment else clean
        pred = E(x)
        loss = _latent_error(pred, target, scale).mean()
        if pixel_weight > 0:
            loss = loss + pixel_weight * (_render(G, pred, space=space, noise=noise) - clean).square().mean()
        # autograd.grad, not backward(): gradients reach only the encoder, never G's parameters
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimizer.step()
        loss_value = float(loss.detach())
        if progress is not None:
            progress(step + 1, steps)
    E.eval()
    final_error, pixel_mse = holdout()
    metrics: dict[str, Any] = {
        "space": space, "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
        "augment": augment, "max_shift": shift, "pixel_weight": pixel_weight, "holdout_samples": holdout_samples,
        "stats_samples": stats.samples, "final_loss": loss_value, "holdout_latent_error": final_error,
        "initial_holdout_latent_error": initial_error, "holdout_pixel_mse": pixel_mse,
        "initial_holdout_pixel_mse": initial_pixel_mse,
    }
    return E, metrics


# --- persistence ---------------------------------------------------------------------------


def encoder_to_bytes(E: Encoder, *, generator_sha256: str, training: dict[str, Any]) -> bytes:
    """safetensors bytes of an Encoder: its state (float32) and, as metadata, its config, the sha256 of
    the generator it was trained for and the training record (JSON). Deterministic."""
    if not isinstance(generator_sha256, str) or not _SHA256.fullmatch(generator_sha256):
        raise ValueError(f"generator_sha256 must be 64 lowercase hex digits (GeneratorInfo.sha256), "
                         f"got {generator_sha256!r}")
    try:
        record = json.dumps(training, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"training must be a JSON-serialisable dict (numbers, strings, lists): {exc}") from None
    state = {k: v.detach().to("cpu", torch.float32) for k, v in E.state_dict().items()}
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "config": json.dumps(E.config.to_dict(), sort_keys=True),
            "generator_sha256": generator_sha256, "training": record}
    return dumps_safetensors(state, meta)


def encoder_from_bytes(blob: bytes, *, where: str) -> tuple[Encoder, dict[str, Any]]:
    """Inverse of `encoder_to_bytes` -> (Encoder on the CPU in eval mode without grads,
    meta {"config": dict, "generator_sha256": str, "training": dict, "format_version": str}).

    Raises StoreError (a ValueError) naming `where` and what is wrong.
    """
    tensors, meta = loads_safetensors(blob, where=where)
    if meta.get("format") != FORMAT_NAME:
        raise StoreError(f"{where}: not a facesurv encoder file (format {meta.get('format')!r}); "
                         "train one with embedding.encoder.train_encoder and save_encoder")
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{where}: encoder format version {meta.get('format_version')!r} is not supported "
                         f"(this build reads version {FORMAT_VERSION})")
    gsha = meta.get("generator_sha256", "")
    if not _SHA256.fullmatch(gsha):
        raise StoreError(f"{where}: the generator sha256 in the file is missing or malformed ({gsha[:80]!r})")
    try:
        config = EncoderConfig.from_dict(json.loads(meta["config"]))
        training = json.loads(meta.get("training", "{}"))
    except (KeyError, ValueError, TypeError) as exc:
        raise StoreError(f"{where}: invalid encoder config or training record in the file: {exc}") from None
    if not isinstance(training, dict):
        raise StoreError(f"{where}: the training record must be a JSON object")
    E = build_from_file(lambda: Encoder(config, seed=None), what="encoder", where=where)
    load_state_strict(E, tensors, where=where)
    if not all(torch.isfinite(t).all() for t in E.state_dict().values()):
        raise StoreError(f"{where}: the encoder weights contain NaN or infinite values")
    meta_out = {"config": config.to_dict(), "generator_sha256": gsha, "training": training,
                "format_version": meta["format_version"]}
    return E.eval().requires_grad_(False), meta_out


def save_encoder(E: Encoder, out_dir: str | os.PathLike, *, generator_sha256: str, training: dict[str, Any]) -> str:
    """Write OUT_DIR/encoder.safetensors (replaced atomically); returns the sha256 of the file."""
    blob = encoder_to_bytes(E, generator_sha256=generator_sha256, training=training)
    write_bytes_atomic(Path(out_dir) / ENCODER_FILE, blob)
    return sha256_bytes(blob)


def read_encoder_file(path: str | os.PathLike) -> tuple[Encoder, str, dict[str, Any]]:
    """A directory holding encoder.safetensors, or the file -> (Encoder, sha256 of the file, meta)."""
    p = Path(path)
    f = p / ENCODER_FILE if p.is_dir() else p
    if not f.is_file():
        raise StoreError(f"{p}: no {ENCODER_FILE} here; write one with embedding.encoder.save_encoder")
    blob = f.read_bytes()
    E, meta = encoder_from_bytes(blob, where=str(f))
    return E, sha256_bytes(blob), meta


def load_encoder(path: str | os.PathLike) -> tuple[Encoder, EncoderInfo]:
    """read_encoder_file -> (Encoder, EncoderInfo): the pair Projection.configured(encoder=...) takes."""
    E, sha, meta = read_encoder_file(path)
    steps = meta["training"].get("steps")
    info = EncoderInfo(sha256=sha, generator_sha256=meta["generator_sha256"], space=E.config.space,
                       source=str(path), steps=int(steps) if isinstance(steps, int) else None)
    return E, info
