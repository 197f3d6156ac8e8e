"""The hyperparameters of a StyleGAN2 + ADA training run (`TrainingConfig`), validated on construction.

Defaults are the paper's config F (Karras et al. 2020) with ADA's controller (Karras et al. 2020b);
r1_gamma = 10 suits 1024x1024 faces, smaller images want a smaller gamma (ADA's heuristic is about
0.0002 * R^2 / batch_size).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from embedding.augment import DEFAULT_OPS, MODES, resolve_ops


def _whole(name: str, value: Any, low: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}{hint}")


def _number(name: str, value: Any, *, low: float, high: float = math.inf, low_open: bool = False,
            high_open: bool = False, hint: str = "") -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo = f"({low:g}" if low_open else f"[{low:g}"
        hi = "inf)" if high == math.inf else (f"{high:g})" if high_open else f"{high:g}]")
        raise ValueError(f"{name} must be a finite number in {lo}, {hi}, got {value!r}{hint}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """One training run. Intervals count training iterations; kimg counts thousands of real images.

    batch_size: images per iteration (D and G step each see this many reals / fakes).
    total_kimg: length of the run, the default `kimg` of `train`.
    g_lr, d_lr, betas: Adam's; a lazily regularised network gets `lazy_adam`'s adjusted values.
    r1_gamma, r1_interval: R1 weight (0 = off), applied every r1_interval D steps.
    pl_weight, pl_interval, pl_decay, pl_batch_shrink: path-length regulariser (weight 0 = off), every
      pl_interval G steps on batch_size // pl_batch_shrink images; pl_decay: its running mean's.
    style_mixing_prob: chance per fake image that its ws come from two latents.
    ema_kimg: half-life of G_ema in kimg; 0 makes G_ema a copy of G after every step.
    ada_mode: "ada" (p adapts), "fixed" (p stays ada_p), "off" (no augmentation; ada_p must be 0).
    ada_target, ada_speed_kimg, ada_interval: the controller's (see AdaController); ada_p: initial p.
    augment_ops: augmentation ops or groups (embedding.augment.params), e.g. "bgc".
    snapshot_kimg: `train` writes a snapshot each time this many kimg have passed, and at the end.
    slices: the batch is processed as this many equal parts, each with its own random draws (from a
      seed the trainer's RNG draws per iteration) and its own minibatch-std groups. Under
      torch.distributed each of W processes takes slices / W of them and gradients are summed across
      processes; one process runs them in turn, accumulating gradients. Either way the result is the
      same (tested: 2 gloo processes against 1). 1 (default): one part, every draw straight from the
      trainer's RNG.
    seed: G is initialised from seed, D from seed + 1, every training draw comes from seed + 2.
    device: torch device string. mixed_precision: bfloat16 autocast for the main losses, CUDA only
      (ignored on CPU; the regularisers always run in float32).
    """

    batch_size: int = 32
    total_kimg: float = 1000.0
    g_lr: float = 0.002
    d_lr: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 10.0
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    style_mixing_prob: float = 0.9
    ema_kimg: float = 10.0
    ada_mode: str = "ada"
    ada_target: float = 0.6
    ada_p: float = 0.0
    ada_speed_kimg: float = 500.0
    ada_interval: int = 4
    augment_ops: str = DEFAULT_OPS
    snapshot_kimg: float = 50.0
    slices: int = 1
    seed: int = 0
    device: str = "cpu"
    mixed_precision: bool = False

    def __post_init__(self) -> None:
        _whole("batch_size", self.batch_size, 1)
        _number("total_kimg", self.total_kimg, low=0.0, low_open=True)
        _number("g_lr", self.g_lr, low=0.0, low_open=True, hint=" (the paper uses 0.002)")
        _number("d_lr", self.d_lr, low=0.0, low_open=True, hint=" (the paper uses 0.002)")
        betas = self.betas
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas must be Adam's pair (beta1, beta2), e.g. (0.0, 0.99), got {betas!r}")
        for b in betas:
            _number("betas", b, low=0.0, high=1.0, high_open=True, hint=" (each beta; the paper: (0.0, 0.99))")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        _number("r1_gamma", self.r1_gamma, low=0.0, hint=" (0 turns R1 off)")
        _whole("r1_interval", self.r1_interval, 1, " (1 = every step; the paper: 16)")
        _number("pl_weight", self.pl_weight, low=0.0, hint=" (0 turns the path-length regulariser off)")
        _whole("pl_interval", self.pl_interval, 1, " (1 = every step; the paper: 4)")
        _number("pl_decay", self.pl_decay, low=0.0, high=1.0)
        _whole("pl_batch_shrink", self.pl_batch_shrink, 1)
        _number("style_mixing_prob", self.style_mixing_prob, low=0.0, high=1.0)
        _number("ema_kimg", self.ema_kimg, low=0.0, hint=" (0 = G_ema copies G)")
        if self.ada_mode not in MODES:
            raise ValueError(f"ada_mode must be one of {', '.join(map(repr, MODES))}, got {self.ada_mode!r}")
        _number("ada_target", self.ada_target, low=0.0, high=1.0, low_open=True, high_open=True)
        _number("ada_p", self.ada_p, low=0.0, high=1.0, high_open=True)
        if self.ada_mode == "off" and self.ada_p != 0:
            raise ValueError(f"ada_p must be 0 when ada_mode is 'off', got {self.ada_p!r}; use ada_mode='fixed' "
                             f"for a constant augmentation probability")
        _number("ada_speed_kimg", self.ada_speed_kimg, low=0.0, low_open=True)
        _whole("ada_interval", self.ada_interval, 1)
        if not isinstance(self.augment_ops, str):
            raise ValueError(f"augment_ops must be a string of ops or groups such as 'bgc', got {self.augment_ops!r}")
        try:
            resolve_ops(self.augment_ops)
        except ValueError as exc:
            raise ValueError(f"augment_ops: {exc}") from None
        _number("snapshot_kimg", self.snapshot_kimg, low=0.0, low_open=True)
        _whole("slices", self.slices, 1)
        if self.batch_size % self.slices:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of slices ({self.slices})")
        _whole("seed", self.seed, 0)
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {self.device!r}") from None
        if not isinstance(self.mixed_precision, bool):
            raise ValueError(f"mixed_precision must be True or False, got {self.mixed_precision!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingConfig:
        """Build from a mapping (e.g. `to_dict`'s JSON); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(unknown)}")
        values: dict[str, Any] = {k: tuple(v) if k == "betas" and isinstance(v, list) else v for k, v in d.items()}
        return cls(**values)
