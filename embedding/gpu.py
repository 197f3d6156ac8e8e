"""Sizing and costing batched projection on a GPU: batch size from free memory, FLOPs per photo.

- `batch_size_for_memory`: pure arithmetic, the largest multiple of `multiple` photos whose
  projection fits in a share of the free memory.
- `probe_bytes_per_photo`: measures, on CUDA, what a projection step costs in memory at two
  batch sizes and fits peak = fixed + batch * per_photo.
- `choose_batch_size`: the two together with `torch.cuda.mem_get_info()`; on the CPU the
  configured size is returned unchanged (host memory is not what limits a CPU batch).
- `flops_per_photo_step` / `encoder_flops`: FLOPs that `torch.utils.flop_counter` counts
  (matrix products and convolutions, forward and backward; a multiply-add is 2 FLOPs; the
  weight gradient of a grouped convolution corrected, see `count_flops`) for one projection
  step and for the once-per-call work, so a method's FLOPs per photo are
  fixed + steps * step (+ an encoder's forward).

Everything runs the real `project`, so the numbers follow whatever it does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from embedding.projection import latent_statistics, project

# Few samples: the statistics only set where the probe's latents start, not what a step costs.
_PROBE_STAT_SAMPLES = 16


def batch_size_for_memory(*, free_bytes: int, bytes_per_photo: float, fixed_bytes: float,
                          headroom: float = 0.85, multiple: int = 8, maximum: int = 256) -> int:
    """Largest batch, a multiple of `multiple` and at most `maximum`, with
    fixed_bytes + batch * bytes_per_photo <= headroom * free_bytes.

    `multiple` should equal project's batch_multiple: a smaller batch is padded up to it and
    costs as much. Raises ValueError when not even `multiple` photos fit, or on a bad argument.
    """
    if isinstance(free_bytes, bool) or not isinstance(free_bytes, int) or free_bytes < 0:
        raise ValueError(f"free_bytes must be an integer >= 0, got {free_bytes!r}")
    if not bytes_per_photo > 0:
        raise ValueError(f"bytes_per_photo must be > 0, got {bytes_per_photo!r}; measure it with probe_bytes_per_photo")
    if not fixed_bytes >= 0:
        raise ValueError(f"fixed_bytes must be >= 0, got {fixed_bytes!r}")
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom!r}")
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"multiple must be an integer >= 1, got {multiple!r}")
    if isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < multiple:
        raise ValueError(f"maximum must be an integer >= multiple ({multiple}), got {maximum!r}")
    usable = headroom * free_bytes - fixed_bytes
    fits = int(usable // bytes_per_photo) if usable > 0 else 0
    batch = min(fits, maximum) // multiple * multiple
    if batch < multiple:
        need = fixed_bytes + multiple * bytes_per_photo
        raise ValueError(f"{multiple} photos need {need / 2**30:.2f} GiB but {headroom:g} of the free "
                         f"{free_bytes / 2**30:.2f} GiB is {headroom * free_bytes / 2**30:.2f} GiB; free GPU memory, "
                         "lower multiple (project's batch_multiple), or use mixed precision")
    return batch


def _probe_images(G, n: int) -> torch.Tensor:
    """(n, C, R, R) uniform in [-1, 1] on the CPU: content does not change a step's cost."""
    gen = torch.Generator().manual_seed(0)
    r = G.img_resolution
    return torch.rand(n, G.img_channels, r, r, generator=gen) * 2 - 1


def probe_bytes_per_photo(G, perceptual, *, device: str | torch.device, space: str = "w",
                          loss: str = "perceptual", mixed_precision: bool = True,
                          probe_batches: Sequence[int] = (8, 16)) -> tuple[float, float]:
    """(fixed_bytes, bytes_per_photo) of a projection, fitted to the peak CUDA memory of a
    one-step `project` at two batch sizes: peak - allocated_before = fixed + batch * per_photo.

    G and perceptual (None for loss "mse") must already be on `device`, a CUDA device.
    Memory already held (weights) is excluded: it is not free memory either.
    """
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"probe_bytes_per_photo measures CUDA memory, device is {device}; "
                         "on the CPU use choose_batch_size, which keeps the configured size")
    if not torch.cuda.is_available():
        raise ValueError("device is cuda but CUDA is not available; use device='cpu'")
    b1, b2 = tuple(probe_batches) if len(probe_batches) == 2 else (0, 0)
    if not (isinstance(b1, int) and isinstance(b2, int) and 1 <= b1 < b2):
        raise ValueError(f"probe_batches must be two increasing batch sizes >= 1, got {tuple(probe_batches)!r}")
    stats = latent_statistics(G, samples=_PROBE_STAT_SAMPLES, device=device)
    peaks = []
    for b in (b1, b2):
        images = _probe_images(G, b)
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            project(G, images, space=space, loss=loss, perceptual=perceptual, steps=1, device=device,
                    mixed_precision=mixed_precision, batch_multiple=1, w_avg_samples=_PROBE_STAT_SAMPLES,
                    stats=stats)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise ValueError(f"probing a batch of {b} ran out of GPU memory; pass smaller probe_batches") from None
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - before)
    per_photo = (peaks[1] - peaks[0]) / (b2 - b1)
    if per_photo <= 0:
        # The allocator rounds blocks, so two close batches can show no growth; charge the whole
        # peak per photo instead, which can only under-fill the GPU.
        return 0.0, peaks[1] / b2
    return max(0.0, peaks[0] - b1 * per_photo), per_photo


def choose_batch_size(G, perceptual, *, device: str | torch.device, configured: int, space: str = "w",
                      loss: str = "perceptual", mixed_precision: bool = True, headroom: float = 0.85,
                      multiple: int = 8, maximum: int = 256, probe_batches: Sequence[int] = (8, 16)) -> int:
    """The batch size to project with: on CUDA the largest that fits the free memory
    (probe_bytes_per_photo + batch_size_for_memory); elsewhere `configured`, unchanged.
    """
    if isinstance(configured, bool) or not isinstance(configured, int) or configured < 1:
        raise ValueError(f"configured must be an integer >= 1, got {configured!r}")
    device = torch.device(device)
    if device.type != "cuda":
        return configured
    fixed, per_photo = probe_bytes_per_photo(G, perceptual, device=device, space=space, loss=loss,
                                             mixed_precision=mixed_precision, probe_batches=probe_batches)
    torch.cuda.empty_cache()  # cached blocks count as used in mem_get_info
    free, _ = torch.cuda.mem_get_info(device)
    return batch_size_for_memory(free_bytes=int(free), bytes_per_photo=per_photo, fixed_bytes=fixed,
                                 headroom=headroom, multiple=multiple, maximum=maximum)


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker: only the total is wanted, and the
    tracker (torch 2.13) asserts on a module input that requires grad without a grad_fn, which
    a view taken under no_grad of a leaf latent is (project's start and final evaluations)."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **_kw) -> int:
    # Each gradient (input, weight) takes exactly the forward's multiply-adds. torch's own formula
    # (2.13) charges a grouped convolution's weight gradient as if it were ungrouped, `groups`
    # times too much: the fused modulated convolution is grouped by photo.
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs FlopCounterMode counts while running fn() (it runs it for real), with the
    weight gradient of grouped convolutions counted once per group rather than `groups` times."""
    counter = FlopCounterMode(display=False,
                              custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop})
    counter.mod_tracker = _GlobalOnly()  # type: ignore[assignment]
    with counter:
        fn()
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class ProjectionFlops:
    """Counted FLOPs per photo of `project` (matrix products and convolutions only).

    step: one optimisation step (forward and backward: synthesis, mapping in space z,
    perceptual embedding and loss). fixed: once per call (embedding the target, evaluating
    the start and the result).
    """

    step: float
    fixed: float

    def per_photo(self, steps: int, *, extra: float = 0.0) -> float:
        """FLOPs per photo of a `steps`-step projection plus `extra` (e.g. an encoder's forward)."""
        return self.fixed + steps * self.step + extra


def flops_per_photo_step(G, perceptual, *, space: str = "w", loss: str = "perceptual", batch: int = 1,
                         noise_mode: str = "optimize") -> ProjectionFlops:
    """FLOPs per photo of `project` on G's device at G's resolution, from counted one- and
    two-step runs on `batch` random photos (the difference is one step).

    Cost: three steps and four evaluations of the real network on that device.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    param = next(iter(G.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    stats = latent_statistics(G, samples=_PROBE_STAT_SAMPLES, device=device)
    images = _probe_images(G, batch)

    def run(steps: int) -> int:
        return count_flops(lambda: project(G, images, space=space, loss=loss, perceptual=perceptual, steps=steps,
                                           noise_mode=noise_mode, device=device, batch_multiple=1,
                                           w_avg_samples=_PROBE_STAT_SAMPLES, stats=stats))

    one, two = run(1), run(2)
    step = (two - one) / batch
    return ProjectionFlops(step=step, fixed=one / batch - step)


def encoder_flops(E: torch.nn.Module, resolution: int, *, batch: int = 1, channels: int = 3) -> float:
    """Counted forward FLOPs per photo of E on (batch, channels, resolution, resolution) on E's device."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be an integer >= 1, got {resolution!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    param = next(iter(E.parameters()), None)
    x = torch.zeros(batch, channels, resolution, resolution,
                    device=param.device if param is not None else "cpu")
    with torch.no_grad():
        return count_flops(lambda: E(x)) / batch
