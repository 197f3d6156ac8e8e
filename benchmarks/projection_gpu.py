"""GPU projection speed at the FFHQ-512 configuration, to compare with ../shared/anchors (NVIDIA on one H100).

Generator: random-init StyleGAN2 at 512x512, channel_base 32768, channel_max 512, 8 mapping
layers (30.3 M parameters, the reference's configuration; weights do not change the speed).
Loss: the perceptual distance (VGG-16 features of the image area-downsampled to 256x256,
stlpips weights: same shape and cost as ImageNet VGG-16 plus blur-pools) + noise penalty,
space w, as NVIDIA's projector. For batch 1, 8, 32 and each precision mode it runs
`project` with two step counts and takes the difference, so ms/step excludes the one-off
w_avg sampling and target embedding. images/hour assumes the reference's 1000 steps.

Usage: .venv/bin/python benchmarks/projection_gpu.py [--batches 1 8 32] [--modes fp32 bf16] [--out FILE]
Without CUDA it prints a skip line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

ANCHOR_MS_PER_STEP = {1: 78.5, 8: 122.6, 32: 341.1}   # NVIDIA reference, torch default precision, H100
TARGET_PHOTOS_PER_HOUR = 13503


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--modes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--short", type=int, default=3, help="steps of the short run")
    ap.add_argument("--long", type=int, default=13, help="steps of the long run")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("skip: no CUDA device (this benchmark needs a GPU; the CPU one is benchmarks/projection_cpu.py)")
        return 0

    from embedding.perceptual import load_perceptual
    from embedding.projection import project
    from embedding.stylegan2 import GeneratorConfig, load_generator

    device = "cuda"
    cfg = GeneratorConfig(resolution=args.resolution, channel_base=32768, channel_max=512, mapping_layers=8)
    G, _ = load_generator(None, config=cfg, seed=0)
    G = G.to(device)
    net, pinfo = load_perceptual("stlpips", resize=256)
    net = net.to(device)
    gen = torch.Generator().manual_seed(1)
    rows = []
    for mode in args.modes:
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        torch.backends.cudnn.allow_tf32 = mode == "tf32"
        for batch in args.batches:
            with torch.no_grad():
                imgs = G(torch.randn(batch, G.z_dim, generator=gen).to(device)).clamp(-1, 1)
            opts = dict(space="w", loss="perceptual", perceptual=net, device=device,
                        mixed_precision=mode == "bf16", batch_multiple=1, w_avg_samples=10000)
            try:
                project(G, imgs, steps=2, **opts)                    # warm-up: cuDNN autotune, allocator
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                times = {}
                for steps in (args.short, args.long):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    project(G, imgs, steps=steps, **opts)
                    torch.cuda.synchronize()
                    times[steps] = time.perf_counter() - t0
            except torch.cuda.OutOfMemoryError:
                rows.append({"mode": mode, "batch": batch, "error": "out of memory"})
                print(json.dumps(rows[-1]), flush=True)
                torch.cuda.empty_cache()
                continue
            ms_step = 1000 * (times[args.long] - times[args.short]) / (args.long - args.short)
            s_image = ms_step / batch                                # 1000 steps -> ms_step * 1000 / 1000
            row = {"mode": mode, "batch": batch, "ms_per_step": round(ms_step, 1),
                   "s_per_image_1000_steps": round(s_image, 2),
                   "images_per_hour_1000_steps": round(3600 / s_image),
                   "steps_per_image_for_target": round(3600 / TARGET_PHOTOS_PER_HOUR / (ms_step / 1000 / batch)),
                   "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                   "anchor_ms_per_step": ANCHOR_MS_PER_STEP.get(batch)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "generator": f"random-init FFHQ-512 configuration ({args.resolution} px)",
              "perceptual": pinfo.network, "rows": rows}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
