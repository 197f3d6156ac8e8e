"""The adaptive augmentation probability of ADA (Karras et al. 2020), written from the paper's description.

The discriminator's overfitting shows in its outputs on the real images: r_t = E[sign(D(real))] tends
to 1 as D memorises the training set, and sits near 0 while it cannot tell real from generated. Every
``interval`` training steps the controller averages sign(D(real)) over the images of those steps and
moves p by a fixed amount towards the heuristic's target: up while r_t > target, down while
r_t < target, at a speed that lets p go from 0 to 1 in ``speed_kimg`` thousand real images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from embedding.augment.params import DEFAULT_OPS
from embedding.augment.pipeline import augment

MODES = ("ada", "fixed", "off")
# p stays below 1: at p = 1 every image would be augmented and the augmentations would leak into
# the generator (the discriminator could no longer see one clean image).
P_MAX = math.nextafter(1.0, 0.0)
_STATE_VERSION = 1


def _check_config(*, target: float, speed_kimg: float, batch_size: int, interval: int, p: float,
                  mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    if not (math.isfinite(speed_kimg) and speed_kimg > 0):
        raise ValueError(f"speed_kimg must be a finite number > 0, got {speed_kimg}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(f"interval must be an integer >= 1, got {interval!r}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    if mode == "off" and p != 0.0:
        raise ValueError(f"p must be 0 when mode is 'off', got {p}")


class AdaController:
    """Tracks r_t = E[sign(D(real))] and adapts the augmentation probability p.

    mode "ada": p moves by sign(r_t - target) * batch_size * interval / (speed_kimg * 1000) every
    ``interval`` steps, clamped to [0, 1) (P_MAX is the largest float below 1). "fixed": p keeps
    its initial value. "off": p is 0 and :meth:`augment` passes the images through without drawing.
    r_t is measured in every mode, for tracking.

    Attributes: ``p`` (the current probability), ``r_t`` (the last interval's heuristic, None before the
    first full interval), ``step_size`` (the amount p moves per adjustment).
    """

    def __init__(self, *, batch_size: int, target: float = 0.6, speed_kimg: float = 500.0, interval: int = 4,
                 p: float = 0.0, mode: str = "ada") -> None:
        _check_config(target=target, speed_kimg=speed_kimg, batch_size=batch_size, interval=interval, p=p,
                      mode=mode)
        self.target = float(target)
        self.speed_kimg = float(speed_kimg)
        self.batch_size = batch_size
        self.interval = interval
        self.mode = mode
        self.p = float(p)
        self.r_t: float | None = None
        # Kept as a tensor on D's device between adjustments, so update() does not wait for the GPU
        # at every step; it is read back once per interval.
        self._sign_sum: torch.Tensor | None = None
        self._count = 0
        self._steps = 0

    @property
    def step_size(self) -> float:
        return self.batch_size * self.interval / (self.speed_kimg * 1000.0)

    @property
    def enabled(self) -> bool:
        """Whether :meth:`augment` augments at all (False in mode "off")."""
        return self.mode != "off"

    def update(self, real_logits: torch.Tensor | Iterable[float]) -> float:
        """Record one training step's D(real) logits (any shape, at least one value); returns p.

        Every ``interval`` calls, r_t is computed over the logits of those calls and, in mode "ada",
        p is adjusted. The logits are detached; nothing flows back into D.
        """
        logits = real_logits.detach() if isinstance(real_logits, torch.Tensor) else torch.as_tensor(
            list(real_logits), dtype=torch.float64)
        if logits.numel() == 0:
            raise ValueError("real_logits must hold at least one value")
        signs = torch.sign(logits).sum(dtype=torch.float64)
        self._sign_sum = signs if self._sign_sum is None else self._sign_sum.to(signs.device) + signs
        self._count += logits.numel()
        self._steps += 1
        if self._steps >= self.interval:
            self.r_t = float(self._sign_sum) / self._count
            if self.mode == "ada":
                direction = (self.r_t > self.target) - (self.r_t < self.target)
                self.p = min(max(self.p + direction * self.step_size, 0.0), P_MAX)
            self._sign_sum, self._count, self._steps = None, 0, 0
        return self.p

    def augment(self, images: torch.Tensor, *, generator: torch.Generator | None = None,
                ops: str | Iterable[str] = DEFAULT_OPS) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W): :func:`augment` at the current p; the images themselves in mode
        "off"."""
        if not self.enabled:
            return images
        return augment(images, p=self.p, generator=generator, ops=ops)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as plain Python values (JSON-friendly)."""
        return {
            "version": _STATE_VERSION,
            "mode": self.mode,
            "target": self.target,
            "speed_kimg": self.speed_kimg,
            "batch_size": self.batch_size,
            "interval": self.interval,
            "p": self.p,
            "r_t": self.r_t,
            "sign_sum": 0.0 if self._sign_sum is None else float(self._sign_sum),
            "count": self._count,
            "steps": self._steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`, configuration included, mid-interval accumulation too."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"state version must be {_STATE_VERSION}, got {state.get('version')!r}")
        config = {k: state[k] for k in ("target", "speed_kimg", "batch_size", "interval", "p", "mode")}
        _check_config(**config)
        steps, count = int(state["steps"]), int(state["count"])
        if not 0 <= steps < config["interval"] or count < 0 or (steps == 0) != (count == 0):
            raise ValueError(f"steps and count are inconsistent: steps {steps}, count {count}")
        self.target, self.speed_kimg = float(config["target"]), float(config["speed_kimg"])
        self.batch_size, self.interval, self.mode = config["batch_size"], config["interval"], config["mode"]
        self.p = float(config["p"])
        self.r_t = None if state["r_t"] is None else float(state["r_t"])
        self._sign_sum = torch.tensor(float(state["sign_sum"]), dtype=torch.float64) if steps else None
        self._count, self._steps = count, steps

    def __repr__(self) -> str:
        return (f"AdaController(mode={self.mode!r}, p={self.p:.4f}, r_t={self.r_t}, target={self.target}, "
                f"speed_kimg={self.speed_kimg}, batch_size={self.batch_size}, interval={self.interval})")
