"""Generator training speed (kimg/s) at 256x256 and 512x512 with ADA on: one short script for a GPU machine.

Full-size StyleGAN2 config F (channel_base 32768, channel_max 512, 8 mapping layers; random weights
and random "photos" cost the same FLOPs as real ones), the project's training loop
(`embedding.stylegan2.training.Trainer.train_step`: D step, lazy R1 every 16, G step, lazy path
length every 4, EMA, ADA) with the augmentation pipeline at a fixed p = 0.2 so every op runs, and
bfloat16 autocast (`mixed_precision`; --fp32 to compare). For each resolution it runs a few warm-up
iterations, then times --iterations more (a whole number of R1 and path-length intervals, so the
lazy regularisers are counted at their true share) and reports kimg/s, s/iteration and peak memory.

    .venv/bin/python benchmarks/generator_train_gpu.py [--resolutions 256 512] [--batch 32] [--out FILE]
    .venv/bin/python benchmarks/generator_train_gpu.py --device cpu --resolutions 16 --channel-max 16 \\
        --iterations 16 --warmup 1        # smoke test of the script on a CPU

Without CUDA (and without --device cpu) it prints a skip line and exits 0. Planned to finish in
under 8 minutes on one H100/H200; the reference is NVIDIA's published stylegan2-ada-pytorch figure
for config "paper256"/"stylegan2" (their README's table, V100s), compared in docs/generator.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(resolution: int, *, device: str, batch: int, iterations: int, warmup: int, mixed_precision: bool,
            channel_max: int = 512) -> dict[str, Any]:
    """One timed run at `resolution`; returns kimg/s, s/iteration, peak GPU memory (GiB, CUDA only)."""
    from embedding.stylegan2.generator import GeneratorConfig
    from embedding.stylegan2.training import Trainer, TrainingConfig

    gcfg = GeneratorConfig(resolution=resolution, channel_base=32768, channel_max=channel_max, mapping_layers=8)
    cfg = TrainingConfig(batch_size=batch, ada_mode="fixed", ada_p=0.2, r1_gamma=0.0002 * resolution ** 2 / batch,
                         pl_weight=2.0, device=device, mixed_precision=mixed_precision, seed=0)
    trainer = Trainer(cfg, gcfg)
    reals = (torch.rand(max(64, batch), 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
             * 2 - 1).to(device)
    for _ in range(warmup):
        trainer.train_step(reals)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(iterations):
        trainer.train_step(reals)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    params_g = sum(p.numel() for p in trainer.G.parameters())
    params_d = sum(p.numel() for p in trainer.D.parameters())
    return {"resolution": resolution, "batch": batch, "iterations": iterations, "seconds": round(seconds, 3),
            "s_per_iteration": round(seconds / iterations, 4), "kimg_per_s": round(batch * iterations / seconds / 1000, 4),
            "kimg_per_day": round(batch * iterations / seconds / 1000 * 86400, 1),
            "params_G_M": round(params_g / 1e6, 2), "params_D_M": round(params_d / 1e6, 2),
            "peak_memory_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
            "mixed_precision": mixed_precision and device.startswith("cuda"), "ada_p": 0.2}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=48, help="timed iterations (a multiple of 16 counts R1 fairly)")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--channel-max", type=int, default=512)
    ap.add_argument("--fp32", action="store_true", help="no autocast")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("skip: no CUDA device (pass --device cpu for a smoke run at a tiny resolution)")
        return 0
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    rows = []
    for r in args.resolutions:
        row = measure(r, device=args.device, batch=args.batch, iterations=args.iterations, warmup=args.warmup,
                      mixed_precision=not args.fp32, channel_max=args.channel_max)
        rows.append(row)
        print(json.dumps(row), flush=True)
    doc = {"date": dt.date.today().isoformat(), "device": name, "torch": torch.__version__, "rows": rows}
    print("| resolution | batch | s/iteration | kimg/s | kimg/day | peak GiB |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['resolution']} | {row['batch']} | {row['s_per_iteration']} | {row['kimg_per_s']} | "
              f"{row['kimg_per_day']} | {row['peak_memory_GiB']} |")
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
