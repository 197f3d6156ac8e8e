"""StyleGAN2 (Karras et al. 2020) in plain PyTorch, with safe checkpoint import and the project's format.

    G, info = load_generator(None, config=GeneratorConfig(resolution=32, channel_max=32), seed=0)
    img = G(torch.randn(4, G.z_dim))          # (4, 3, 32, 32); info.is_random_init is True
"""

from embedding.stylegan2.checkpoints import (
    CheckpointError,
    UnsafeCheckpointError,
    load_discriminator,
)
from embedding.stylegan2.discriminator import Discriminator, DiscriminatorConfig
from embedding.stylegan2.generator import Generator, GeneratorConfig
from embedding.stylegan2.loader import GeneratorInfo, load_generator, random_init_description
from embedding.stylegan2.store import StoreError, save_generator

__all__ = ["CheckpointError", "Discriminator", "DiscriminatorConfig", "Generator", "GeneratorConfig", "GeneratorInfo",
           "StoreError", "UnsafeCheckpointError", "load_discriminator", "load_generator", "random_init_description",
           "save_generator"]
