"""One process of the 2-process gloo training test (run by test_generator_distributed.py, not by pytest).

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python ddp_worker.py OUT.npz ITERATIONS
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from embedding.stylegan2.generator import GeneratorConfig  # noqa: E402
from embedding.stylegan2.training import Trainer, TrainingConfig  # noqa: E402

GEN = GeneratorConfig(resolution=8, z_dim=16, w_dim=16, mapping_layers=2, channel_base=64, channel_max=8)
CONFIG = TrainingConfig(batch_size=8, slices=2, r1_gamma=1.0, r1_interval=2, pl_weight=2.0, pl_interval=2,
                        ada_mode="ada", ada_interval=1, ada_speed_kimg=0.01, ada_target=0.05, ema_kimg=0.01, seed=3)


def data() -> torch.Tensor:
    return torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(11)) * 2 - 1


def train(iterations: int) -> dict[str, np.ndarray]:
    torch.set_num_threads(1)
    trainer = Trainer(CONFIG, GEN)
    images = data()
    for _ in range(iterations):
        trainer.train_step(images)
    state = {f"G_ema.{k}": v.numpy() for k, v in trainer.G_ema.state_dict().items()}
    state.update({f"D.{k}": v.numpy() for k, v in trainer.D.state_dict().items()})
    state["p"] = np.array(trainer.controller.p)
    state["pl_mean"] = trainer.pl_mean.numpy()
    return state


if __name__ == "__main__":
    import torch.distributed as dist

    dist.init_process_group("gloo")
    out = train(int(sys.argv[2]))
    if dist.get_rank() == 0:
        np.savez(sys.argv[1], **out)
    dist.barrier()
    dist.destroy_process_group()
