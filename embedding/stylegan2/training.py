"""The StyleGAN2 + ADA training loop as a library (Karras et al. 2020, 2020b): `Trainer`, `train`,
`export_generator`. Configuration: `embedding.stylegan2.training_config`; snapshot files:
`embedding.stylegan2.snapshots`.

    trainer = Trainer(TrainingConfig(batch_size=32), GeneratorConfig(resolution=256))   # from scratch
    trainer = Trainer(config, imported_G)                                             # fine-tuning
    train(trainer, images, kimg=500, snapshot_dir="runs/a")    # images: (N, 3, R, R) in [-1, 1]
    trainer = Trainer.resume("runs/a"); train(trainer, images, kimg=500, snapshot_dir="runs/a")
    sha = export_generator(trainer, "models/g")                # G_ema in the project's format

One iteration: a D step (logistic loss on augment(reals) vs augment(G(z)) with style mixing), every
r1_interval iterations an extra R1 step on augmented reals, a G step (non-saturating loss on
D(augment(G(z)))), every pl_interval iterations an extra path-length step, the EMA update of G_ema and
the ADA controller's update from the D step's real logits. Every random draw (minibatch indices, z,
mixing, per-layer noise, augmentations, path-length noise) comes from the trainer's one CPU
torch.Generator, so a run is reproducible and, on CPU, a resumed run is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from embedding.augment import AdaController
from embedding.stylegan2.discriminator import Discriminator, DiscriminatorConfig
from embedding.stylegan2.generator import Generator, GeneratorConfig
from embedding.stylegan2.objectives import (
    d_logistic,
    ema_beta,
    ema_update,
    g_nonsaturating,
    lazy_adam,
    lazy_weight,
    mix_styles,
    path_length_penalty,
    path_lengths,
    r1_penalty,
)
from embedding.stylegan2.snapshots import (
    flatten_optimizer,
    flatten_state,
    latest_snapshot,
    load_optimizer,
    read_snapshot,
    snapshot_name,
    unflatten_state,
    write_snapshot,
)
from embedding.stylegan2.store import StoreError, load_state_strict, save_generator
from embedding.stylegan2.training_config import TrainingConfig

__all__ = ["Dataset", "Trainer", "TrainingConfig", "export_generator", "train"]

# A tensor (N, C, R, R) in [-1, 1], or a callable (batch_size, generator) -> (batch_size, C, R, R).
Dataset = torch.Tensor | Callable[[int, torch.Generator], torch.Tensor]

# Fields that may differ between a snapshot and the trainer loading it: they do not change the math
# of an iteration (mixed precision does slightly; switching it is the caller's informed choice).
_RESUMABLE_CHANGES = {"total_kimg", "snapshot_kimg", "device", "mixed_precision"}
_RANGE_SLACK = 1e-3  # for reals rounded to [-1, 1] in float16/bfloat16


def _world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed's default group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _slice_generator(seed: int, index: int) -> torch.Generator:
    # one stream per part of the batch, a different one every iteration (seed is drawn per iteration)
    return torch.Generator(device="cpu").manual_seed((seed + 0x9E3779B97F4A7C15 * (index + 1)) % (1 << 63))


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device is {name!r} but CUDA is not available here; use device='cpu'")
    return device


class Trainer:
    """G, G_ema, D, their Adam optimisers, the ADA controller, the path-length mean and the progress.

    Attributes: config, device, G (trained), G_ema (its moving average, eval mode), D, opt_g, opt_d,
    controller (AdaController), rng (CPU torch.Generator of every draw), pl_mean (0-d tensor),
    iteration (steps done), nimg (real images seen), kimg (nimg / 1000).
    """

    def __init__(self, config: TrainingConfig, generator: GeneratorConfig | Generator, *,
                 discriminator: Discriminator | None = None) -> None:
        """From scratch (`generator` a GeneratorConfig: G seeded with config.seed) or fine-tuning (`generator`
        a Generator, e.g. an imported checkpoint; it is copied, never modified). D is new (seed + 1)
        unless `discriminator` is given (copied too); its resolution must be G's.
        """
        if not isinstance(config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
        self.config = config
        self.device = _device(config.device)
        self.rank, self.world = _world()
        if config.slices % self.world:
            raise ValueError(f"torch.distributed runs {self.world} processes: slices ({config.slices}) must be a "
                             f"multiple of it (each process takes slices / {self.world} parts of the batch)")
        if isinstance(generator, GeneratorConfig):
            G = Generator(generator, seed=config.seed)
        elif isinstance(generator, Generator):
            G = copy.deepcopy(generator)
        else:
            raise TypeError(f"generator must be a GeneratorConfig (from scratch) or a Generator (fine-tuning), "
                            f"got {type(generator).__name__}")
        if discriminator is None:
            D = Discriminator(DiscriminatorConfig.for_generator(G.config), seed=config.seed + 1)
        elif isinstance(discriminator, Discriminator):
            if (discriminator.img_resolution, discriminator.img_channels) != (G.img_resolution, G.img_channels):
                raise ValueError(f"the discriminator takes {discriminator.img_channels}x{discriminator.img_resolution}"
                                 f"x{discriminator.img_resolution} images but the generator makes {G.img_channels}x"
                                 f"{G.img_resolution}x{G.img_resolution}; build it with "
                                 f"DiscriminatorConfig.for_generator(G.config) or leave it out")
            D = copy.deepcopy(discriminator)
        else:
            raise TypeError(f"discriminator must be a Discriminator or None, got {type(discriminator).__name__}")
        self.G = G.to(self.device).train().requires_grad_(False)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.D = D.to(self.device).train().requires_grad_(False)
        g_lr, g_betas = config.g_lr, config.betas
        if config.pl_weight > 0:
            g_lr, g_betas = lazy_adam(g_lr, g_betas, config.pl_interval)
        d_lr, d_betas = config.d_lr, config.betas
        if config.r1_gamma > 0:
            d_lr, d_betas = lazy_adam(d_lr, d_betas, config.r1_interval)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=g_lr, betas=g_betas, eps=1e-8)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=d_lr, betas=d_betas, eps=1e-8)
        self.controller = AdaController(batch_size=config.batch_size, target=config.ada_target,
                                        speed_kimg=config.ada_speed_kimg, interval=config.ada_interval,
                                        p=config.ada_p, mode=config.ada_mode)
        # CPU, whatever the device: mix_styles needs a CPU generator, and CPU draws are the same on any machine.
        self.rng = torch.Generator(device="cpu").manual_seed(config.seed + 2)
        self.pl_mean = torch.zeros((), device=self.device)
        self.iteration = 0
        self.nimg = 0
        self._ema_beta = 0.0 if config.ema_kimg == 0 else ema_beta(config.batch_size, config.ema_kimg)

    @property
    def kimg(self) -> float:
        return self.nimg / 1000.0

    # --- one iteration ------------------------------------------------------------------------------

    def sample_reals(self, dataset: Dataset, n: int | None = None, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
        """A minibatch (n, default batch_size, C, R, R) on the trainer's device: rows of a tensor drawn
        uniformly with replacement, or a callable's batch; either way drawn with `generator` (default rng)."""
        b, r, c = self.config.batch_size if n is None else n, self.G.img_resolution, self.G.img_channels
        rng = self.rng if generator is None else generator
        if isinstance(dataset, torch.Tensor):
            self._check_images(dataset, "dataset", None)
            if dataset.shape[0] < 1:
                raise ValueError("dataset holds no images; pass (N, C, R, R) with N >= 1")
            batch = dataset[torch.randint(dataset.shape[0], (b,), generator=rng)]
        elif callable(dataset):
            batch = dataset(b, rng)
            self._check_images(batch, "the dataset callable's batch", b)
        else:
            raise TypeError(f"dataset must be an (N, {c}, {r}, {r}) tensor or a callable (batch_size, generator) "
                            f"-> batch, got {type(dataset).__name__}")
        batch = batch.to(self.device, torch.float32)
        if not bool(torch.isfinite(batch).all()) or float(batch.abs().max()) > 1.0 + _RANGE_SLACK:
            raise ValueError("real images must be finite and in [-1, 1]; map uint8 pixels with x / 127.5 - 1")
        return batch

    def _check_images(self, images: Any, name: str, n: int | None) -> None:
        r, c = self.G.img_resolution, self.G.img_channels
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{name} must be a float (N, {c}, {r}, {r}) tensor in [-1, 1], got {got}")
        if images.shape[1] != c or images.shape[2:] != (r, r):
            raise ValueError(f"{name} holds {images.shape[1]}x{images.shape[2]}x{images.shape[3]} images but the "
                             f"generator makes {c}x{r}x{r} (resolution {r}); resize the images to {r}x{r} or "
                             f"train a generator of resolution {images.shape[-1]}")
        if n is not None and images.shape[0] != n:
            raise ValueError(f"{name} holds {images.shape[0]} images, batch_size is {n}")

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.mixed_precision and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _augment(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.controller.augment(images, generator=self.rng if generator is None else generator,
                                       ops=self.config.augment_ops)

    def _fakes(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n fake images (n, C, R, R) and their ws (n, num_ws, w_dim), random noise per image and layer."""
        rng = self.rng if generator is None else generator
        z = torch.randn(n, self.G.z_dim, generator=rng).to(self.device)
        z2 = torch.randn(n, self.G.z_dim, generator=rng).to(self.device)
        ws = mix_styles(self.G, z, z2, self.config.style_mixing_prob, generator=rng)
        noise = [torch.randn((n, *shape), generator=rng).to(self.device)
                 for shape in self.G.synthesis.noise_shapes()]
        # Per-sample weights as one grouped convolution are fast forward but slow to differentiate;
        # training scales the activations instead (NVIDIA does the same), the same maths.
        return self.G.synthesis(ws, noise=noise, fused=False), ws

    def _optimise(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def train_step(self, dataset: Dataset) -> dict[str, float]:
        """One iteration; returns {loss_g, loss_d, r1, pl, p, r_t, kimg, iteration} as floats. r1 and pl are
        the penalties' means (NaN on iterations without that regulariser), r_t NaN before ADA's first
        interval; p, kimg and iteration are the values after the step."""
        if self.config.slices > 1 or self.world > 1:
            return self._sliced_step(dataset)
        cfg, b, i = self.config, self.config.batch_size, self.iteration
        reals = self.sample_reals(dataset)

        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        with torch.no_grad(), self._autocast():
            fakes, _ = self._fakes(b)
        with self._autocast():
            real_logits = self.D(self._augment(reals)).float()
            fake_logits = self.D(self._augment(fakes)).float()
        loss_d = d_logistic(real_logits, fake_logits)
        self._optimise(self.opt_d, loss_d)
        r1 = math.nan
        if cfg.r1_gamma > 0 and i % cfg.r1_interval == 0:
            # The gradient is taken w.r.t. the reals before augmentation, through the (differentiable)
            # augmentation, so D is kept smooth on the very distribution it sees.
            x = reals.detach().requires_grad_(True)
            penalty = r1_penalty(x, self.D(self._augment(x))).mean()
            self._optimise(self.opt_d, lazy_weight(cfg.r1_gamma / 2, cfg.r1_interval) * penalty)
            r1 = penalty.item()
        self.D.requires_grad_(False)

        self.G.requires_grad_(True)
        with self._autocast():
            fakes, _ = self._fakes(b)
            loss_g = g_nonsaturating(self.D(self._augment(fakes)).float())
        self._optimise(self.opt_g, loss_g)
        pl = math.nan
        if cfg.pl_weight > 0 and i % cfg.pl_interval == 0:
            fakes, ws = self._fakes(max(1, b // cfg.pl_batch_shrink))
            penalty_pl, self.pl_mean = path_length_penalty(fakes, ws, self.pl_mean, cfg.pl_decay, generator=self.rng)
            mean_pl = penalty_pl.mean()
            self._optimise(self.opt_g, lazy_weight(cfg.pl_weight, cfg.pl_interval) * mean_pl)
            pl = mean_pl.item()
        self.G.requires_grad_(False)

        ema_update(self.G_ema, self.G, self._ema_beta)
        self.controller.update(real_logits.detach())
        self.iteration += 1
        self.nimg += b
        # The weights are no longer the seeded stand-in; exports must not claim they are.
        self.G.random_init_seed = self.G_ema.random_init_seed = None
        r_t = self.controller.r_t
        return {"loss_g": loss_g.item(), "loss_d": loss_d.item(), "r1": r1, "pl": pl, "p": self.controller.p,
                "r_t": math.nan if r_t is None else r_t, "kimg": self.kimg, "iteration": float(self.iteration)}

    # --- a batch in parts, on one process or several ---------------------------------------------------

    def _reduce(self, module: torch.nn.Module) -> None:
        """Sum the gradients of `module` over the processes (each holds its parts' share of the mean)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for p in module.parameters():
            # a parameter a loss does not reach (biases in the path-length term) has no gradient on any
            # process; Adam must skip it there too, as it does on one process
            if p.grad is not None:
                dist.all_reduce(p.grad)

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        """Every process's equal-sized `local` concatenated in rank order (= part order)."""
        if self.world == 1:
            return local
        import torch.distributed as dist

        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    def _track_w_avg(self, means: list[torch.Tensor], beta: float | None) -> None:
        """The mapping's running mean of w, moved once per part in part order (as one process moves it,
        part after part), from every process's parts' mean w."""
        if beta is None or not means:
            return
        every = self._gather(torch.stack(means))
        w_avg = self.G.mapping.w_avg
        with torch.no_grad():
            for m in every:
                w_avg.copy_(m.to(w_avg.dtype).lerp(w_avg, beta))

    def _sliced_step(self, dataset: Dataset) -> dict[str, float]:
        beta = self.G.mapping.w_avg_beta
        self.G.mapping.w_avg_beta = None   # updated by _track_w_avg instead, the same on every process
        try:
            return self._sliced_step_inner(dataset, beta)
        finally:
            self.G.mapping.w_avg_beta = beta

    def _sliced_step_inner(self, dataset: Dataset, beta: float | None) -> dict[str, float]:
        """train_step with the batch in config.slices parts (see TrainingConfig.slices): the same losses,
        each part's scaled by 1 / slices and their gradients summed (accumulated here, all-reduced across
        processes), so W processes taking slices / W parts each equal one process taking all of them."""
        cfg, i = self.config, self.iteration
        slices, n = cfg.slices, cfg.batch_size // cfg.slices
        seed = int(torch.randint(0, 1 << 62, (1,), generator=self.rng))   # the same draw on every process
        per = slices // self.world
        mine = range(self.rank * per, (self.rank + 1) * per)
        gens = {k: _slice_generator(seed, k) for k in mine}

        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        reals, real_logits, loss_d, means = {}, [], 0.0, []
        for k in mine:
            reals[k] = self.sample_reals(dataset, n, gens[k])
            with torch.no_grad(), self._autocast():
                fakes, ws = self._fakes(n, gens[k])
            means.append(ws[:, 0].detach().float().mean(dim=0))  # layer 0 is never mixed: the mapping's w
            with self._autocast():
                rl = self.D(self._augment(reals[k], gens[k])).float()
                fl = self.D(self._augment(fakes, gens[k])).float()
            loss = d_logistic(rl, fl) / slices
            loss.backward()
            real_logits.append(rl.detach())
            loss_d += loss.item()
        self._reduce(self.D)
        self.opt_d.step()
        self._track_w_avg(means, beta)
        r1 = math.nan
        if cfg.r1_gamma > 0 and i % cfg.r1_interval == 0:
            self.opt_d.zero_grad(set_to_none=True)
            r1 = 0.0
            for k in mine:
                x = reals[k].detach().requires_grad_(True)
                penalty = r1_penalty(x, self.D(self._augment(x, gens[k]))).mean()
                (lazy_weight(cfg.r1_gamma / 2, cfg.r1_interval) * penalty / slices).backward()
                r1 += penalty.item() / per
            self._reduce(self.D)
            self.opt_d.step()
        self.D.requires_grad_(False)

        self.G.requires_grad_(True)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g, means = 0.0, []
        for k in mine:
            with self._autocast():
                fakes, ws = self._fakes(n, gens[k])
                loss = g_nonsaturating(self.D(self._augment(fakes, gens[k])).float()) / slices
            loss.backward()
            loss_g += loss.item()
            means.append(ws[:, 0].detach().float().mean(dim=0))
        self._reduce(self.G)
        self.opt_g.step()
        self._track_w_avg(means, beta)
        pl = math.nan
        if cfg.pl_weight > 0 and i % cfg.pl_interval == 0:
            m = max(1, n // cfg.pl_batch_shrink)
            lengths, means = {}, []
            for k in mine:
                fakes, ws = self._fakes(m, gens[k])
                lengths[k] = path_lengths(fakes, ws, generator=gens[k])
                means.append(ws[:, 0].detach().float().mean(dim=0))
            every = self._gather(torch.cat([lengths[k].detach() for k in mine]))
            self.pl_mean = (self.pl_mean + cfg.pl_decay * (every.mean() - self.pl_mean)).detach()
            self.opt_g.zero_grad(set_to_none=True)
            pl = 0.0
            for k in mine:
                penalty_pl = (lengths[k] - self.pl_mean).square().mean()
                (lazy_weight(cfg.pl_weight, cfg.pl_interval) * penalty_pl / slices).backward()
                pl += penalty_pl.item() / per
            self._reduce(self.G)
            self.opt_g.step()
            self._track_w_avg(means, beta)
        self.G.requires_grad_(False)

        ema_update(self.G_ema, self.G, self._ema_beta)
        self.controller.update(self._gather(torch.cat(real_logits)))
        self.iteration += 1
        self.nimg += cfg.batch_size
        self.G.random_init_seed = self.G_ema.random_init_seed = None
        r_t = self.controller.r_t
        # losses are this process's parts' share; * world is their mean estimate on every process
        return {"loss_g": loss_g * self.world, "loss_d": loss_d * self.world, "r1": r1, "pl": pl,
                "p": self.controller.p, "r_t": math.nan if r_t is None else r_t, "kimg": self.kimg,
                "iteration": float(self.iteration)}

    # --- snapshots ----------------------------------------------------------------------------------

    def save_snapshot(self, snapshot_dir: str | os.PathLike) -> Path:
        """Write snapshot_dir/snapshot-<iteration>.safetensors atomically (see snapshots); returns its path.

        Everything is tensors in safetensors plus a JSON document; no torch.save, no pickle."""
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)):
            tensors.update(flatten_state(prefix, module.state_dict()))
        tensors.update(flatten_optimizer("opt_g", self.opt_g))
        tensors.update(flatten_optimizer("opt_d", self.opt_d))
        tensors["rng"] = self.rng.get_state()
        tensors["pl_mean"] = self.pl_mean.detach()
        state = {"iteration": self.iteration, "nimg": self.nimg, "controller": self.controller.state_dict(),
                 "training_config": self.config.to_dict(), "generator_config": self.G.config.to_dict(),
                 "discriminator_config": self.D.config.to_dict(), "random_init_seed": self.G_ema.random_init_seed}
        return write_snapshot(snapshot_dir, self.iteration, tensors, state)

    def load_snapshot(self, path: str | os.PathLike) -> None:
        """Restore a snapshot file into this trainer, whose architectures and training config must match
        it (total_kimg, snapshot_kimg, device and mixed_precision may differ). StoreError otherwise."""
        tensors, state = read_snapshot(path)
        where = str(path)
        try:
            self._restore(tensors, state, where)
        except KeyError as exc:
            raise StoreError(f"{where}: the snapshot lacks {exc}") from None

    def _restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any], where: str) -> None:
        for key, mine in (("generator_config", self.G.config.to_dict()),
                          ("discriminator_config", self.D.config.to_dict())):
            if state[key] != mine:
                raise StoreError(f"{where}: the snapshot's {key} {state[key]} differs from this trainer's {mine}; "
                                 f"use Trainer.resume(folder) to rebuild the trainer from the snapshot")
        theirs, mine = state["training_config"], self.config.to_dict()
        defaults = TrainingConfig().to_dict()  # a key a snapshot predates has its default value
        changed = sorted(k for k in mine if theirs.get(k, defaults[k]) != mine[k] and k not in _RESUMABLE_CHANGES)
        if changed:
            raise StoreError(f"{where}: the snapshot was trained with other {', '.join(changed)} (an exact "
                             f"continuation needs the same); use Trainer.resume(folder) to take its config")
        for prefix, module in (("G", self.G), ("G_ema", self.G_ema), ("D", self.D)):
            load_state_strict(module, unflatten_state(prefix, tensors), where=f"{where} ({prefix})")
        load_optimizer("opt_g", self.opt_g, tensors, where=where)
        load_optimizer("opt_d", self.opt_d, tensors, where=where)
        rng = tensors["rng"]
        if rng.dtype != torch.uint8 or rng.shape != self.rng.get_state().shape:
            raise StoreError(f"{where}: rng must be the uint8 state of a CPU torch.Generator, got {rng.dtype} "
                             f"{tuple(rng.shape)}")
        self.rng.set_state(rng)
        self.pl_mean = tensors["pl_mean"].to(self.device, torch.float32).reshape(())
        try:
            self.controller.load_state_dict(state["controller"])
        except ValueError as exc:
            raise StoreError(f"{where}: invalid ADA controller state: {exc}") from None
        self.iteration, self.nimg = int(state["iteration"]), int(state["nimg"])
        self.G.random_init_seed = self.G_ema.random_init_seed = state["random_init_seed"]

    @classmethod
    def resume(cls, snapshot_dir: str | os.PathLike, *, device: str | None = None) -> Trainer:
        """A trainer rebuilt from the latest complete snapshot in the folder (its config, architectures and
        state); `device` overrides the stored one. FileNotFoundError when the folder holds none."""
        path = latest_snapshot(snapshot_dir)
        if path is None:
            raise FileNotFoundError(f"no snapshot-*.safetensors snapshot in {snapshot_dir}; start a new run with "
                                    f"Trainer(config, GeneratorConfig(...)) or pass the folder train() wrote to")
        tensors, state = read_snapshot(path)
        try:
            config = TrainingConfig.from_dict(state["training_config"])
            if device is not None:
                config = TrainingConfig.from_dict({**config.to_dict(), "device": device})
            G = Generator(GeneratorConfig.from_dict(state["generator_config"]), seed=None)
            D = Discriminator(DiscriminatorConfig(**state["discriminator_config"]), seed=None)
        except KeyError as exc:
            raise StoreError(f"{path}: the snapshot lacks {exc}") from None
        except (ValueError, TypeError) as exc:
            raise StoreError(f"{path}: invalid configuration in the snapshot: {exc}") from None
        trainer = cls(config, G, discriminator=D)
        try:
            trainer._restore(tensors, state, str(path))
        except KeyError as exc:
            raise StoreError(f"{path}: the snapshot lacks {exc}") from None
        return trainer


def train(trainer: Trainer, dataset: Dataset, *, kimg: float | None = None, snapshot_dir: str | os.PathLike,
          progress: Callable[[dict[str, float]], Any] | None = None) -> dict[str, float]:
    """Run iterations until the trainer has seen `kimg` thousand real images in all (default
    config.total_kimg; a resumed trainer continues towards the same total). A snapshot is written each
    time another snapshot_kimg have passed and at the end; `progress(stats)` gets each iteration's
    stats. Returns the last iteration's stats ({} when nothing was left to do)."""
    total = trainer.config.total_kimg if kimg is None else kimg
    if isinstance(total, bool) or not isinstance(total, int | float) or not math.isfinite(total) or total <= 0:
        raise ValueError(f"kimg must be a finite number > 0 (thousands of real images in all), got {kimg!r}")
    end = round(total * 1000)
    every = max(1, round(trainer.config.snapshot_kimg * 1000))
    stats: dict[str, float] = {}
    saved_at = None
    while trainer.nimg < end:
        before = trainer.nimg
        stats = trainer.train_step(dataset)
        if progress is not None:
            progress(stats)
        if trainer.nimg // every > before // every:
            if trainer.rank == 0:  # every process holds the same state; one writes it
                trainer.save_snapshot(snapshot_dir)
            saved_at = trainer.iteration
    if (trainer.rank == 0 and saved_at != trainer.iteration
            and not (Path(snapshot_dir) / snapshot_name(trainer.iteration)).is_file()):
        trainer.save_snapshot(snapshot_dir)
    return stats


def export_generator(trainer: Trainer, out_dir: str | os.PathLike) -> str:
    """Save G_ema in the project's generator format (store.save_generator); returns the weights' sha256."""
    return save_generator(trainer.G_ema, out_dir,
                          description=f"G_ema after {trainer.kimg:g} kimg ({trainer.iteration} iterations) of training")
