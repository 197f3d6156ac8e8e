"""One entry point for every generator source: a checkpoint file, a project directory, or a seeded stand-in."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from embedding.stylegan2.checkpoints import CheckpointError, load_nvidia_file, load_rosinality_file
from embedding.stylegan2.generator import Generator, GeneratorConfig
from embedding.stylegan2.store import (
    WEIGHTS_FILE,
    StoreError,
    generator_to_bytes,
    read_generator_file,
    sha256_bytes,
)


@dataclasses.dataclass(frozen=True)
class GeneratorInfo:
    """Where a generator came from, for lineage. sha256 is that of its project-format weights file."""

    source: str
    sha256: str
    is_random_init: bool
    config: dict[str, Any]
    description: str
    # the registry's name for these weights ("facesurv-generator v3") when they came from the
    # generator registry; None for a file or the stand-in
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def random_init_description(seed: int) -> str:
    return (f"random-init stand-in generator (seed {seed}): no pretrained StyleGAN2 weights were provided; "
            f"images and latents are not those of the paper's FFHQ generator")


def load_generator(checkpoint: str | os.PathLike | None, *, config: GeneratorConfig | None = None, seed: int = 0,
                   device: str | torch.device = "cpu") -> tuple[Generator, GeneratorInfo]:
    """-> (Generator in eval mode without grads, GeneratorInfo).

    checkpoint None: a seeded random-init generator of `config` (same seed, same weights, whatever the global
    torch RNG). Otherwise a project directory or .safetensors file, an NVIDIA stylegan2-ada-pytorch .pkl, or a
    rosinality .pt/.pth; the architecture then comes from the file and `config` is ignored.
    Raises CheckpointError (a ValueError) with a one-line message for a missing, unreadable or unsafe file.
    """
    if checkpoint is None:
        if config is None:
            raise ValueError("load_generator(None) needs config= for the random-init stand-in")
        G = Generator(config, seed=seed).eval().requires_grad_(False)
        sha = sha256_bytes(generator_to_bytes(G))
        info = GeneratorInfo(source=f"random-init:seed={seed}", sha256=sha, is_random_init=True,
                             config=config.to_dict(), description=random_init_description(seed))
        return G.to(device), info
    path = Path(checkpoint)
    if not path.exists():
        raise CheckpointError(f"{path}: generator checkpoint not found (set generator.checkpoint in params.yaml "
                              f"to a .pkl, .pt or a directory made by `facesurv generator import`)")
    suffix = path.suffix.lower()
    try:
        if path.is_dir() or suffix == ".safetensors":
            G, sha = read_generator_file(path)
            kind = "facesurv generator"
        else:
            if suffix == ".pkl":
                G = load_nvidia_file(path)
                kind = "NVIDIA stylegan2-ada-pytorch pickle"
            elif suffix in (".pt", ".pth"):
                G = load_rosinality_file(path)
                kind = "rosinality stylegan2-pytorch checkpoint"
            else:
                raise CheckpointError(f"{path}: unknown checkpoint type {suffix or '(no suffix)'!r}; expected .pkl "
                                      f"(NVIDIA), .pt/.pth (rosinality) or a directory holding {WEIGHTS_FILE}")
            sha = sha256_bytes(generator_to_bytes(G))
    except StoreError as exc:
        raise CheckpointError(str(exc)) from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    c = G.config
    if G.random_init_seed is not None:  # a saved stand-in stays labelled as one
        info = GeneratorInfo(source=str(path), sha256=sha, is_random_init=True, config=c.to_dict(),
                             description=f"{random_init_description(G.random_init_seed)} (saved at {path})")
        return G.to(device), info
    info = GeneratorInfo(source=str(path), sha256=sha, is_random_init=False, config=c.to_dict(),
                         description=(f"pretrained StyleGAN2 from {path.name} ({kind}): {c.resolution}x{c.resolution}, "
                                      f"channel_base {c.channel_base}, channel_max {c.channel_max}, "
                                      f"{c.mapping_layers} mapping layers"))
    return G.to(device), info
