"""CPU projection throughput at the demo's configuration, against a baseline in the same run.

Demo configuration: random-init generator at 32x32, channel_max 32, 8 mapping layers, space w,
100 steps. Measured (photos/s, ms per photo-step):

- batched:  `--photos` photos in one batch of `--batch` (default 32), loss mse;
- baseline: the same photos one at a time (batch 1, batch_multiple 1: what a loop over
  photos with the reference projector's structure would do);
- batched with loss mse+perceptual (stlpips VGG-16 at 32x32), and its batch-1 baseline on
  fewer photos (`--perceptual-photos`), since it is much slower.

Usage: .venv/bin/python benchmarks/projection_cpu.py [--photos 32] [--steps 100] [--threads 2]
Prints one JSON object; docs/projection.md records the figures with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from machine import cpu_name


def _photos(G, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        img = G(torch.randn(n, G.z_dim, generator=gen))
    return img.clamp(-1, 1)


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--perceptual-photos", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skip-perceptual", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from embedding.perceptual import load_perceptual
    from embedding.projection import project
    from embedding.stylegan2 import GeneratorConfig, load_generator

    G, info = load_generator(None, config=GeneratorConfig(resolution=32, channel_max=32, mapping_layers=8), seed=0)
    photos = _photos(G, args.photos)
    common = dict(space="w", steps=args.steps, w_avg_samples=10000, seed=0)
    rows = []

    def record(name: str, n: int, batch: int, seconds: float) -> None:
        rows.append({"name": name, "photos": n, "batch": batch, "seconds": round(seconds, 2),
                     "photos_per_s": round(n / seconds, 3),
                     "ms_per_photo_step": round(1000 * seconds / (n * args.steps), 2)})
        print(json.dumps(rows[-1]), flush=True)

    def batched(imgs, batch, **kw):
        for i in range(0, imgs.shape[0], batch):
            project(G, imgs[i:i + batch], **common, **kw)

    record("mse batched", args.photos, args.batch, _time(lambda: batched(photos, args.batch, loss="mse")))
    record("mse baseline batch 1", args.photos, 1,
           _time(lambda: batched(photos, 1, loss="mse", batch_multiple=1)))
    if not args.skip_perceptual:
        net, pinfo = load_perceptual("stlpips")
        kw = dict(loss="mse+perceptual", perceptual=net)
        record("mse+perceptual batched", args.photos, args.batch, _time(lambda: batched(photos, args.batch, **kw)))
        few = photos[:args.perceptual_photos]
        record("mse+perceptual baseline batch 1", few.shape[0], 1,
               _time(lambda: batched(few, 1, batch_multiple=1, **kw)))

    def speedup(a: str, b: str) -> float | None:
        ra = next((r for r in rows if r["name"] == a), None)
        rb = next((r for r in rows if r["name"] == b), None)
        return round(ra["photos_per_s"] / rb["photos_per_s"], 2) if ra and rb else None

    print(json.dumps({
        "machine": cpu_name(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "steps": args.steps,
        "generator": "random-init, res 32, channel_max 32, 8 mapping layers",
        "speedup_mse": speedup("mse batched", "mse baseline batch 1"),
        "speedup_perceptual": speedup("mse+perceptual batched", "mse+perceptual baseline batch 1"),
        "rows": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
