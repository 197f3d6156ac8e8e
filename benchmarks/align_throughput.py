"""Alignment throughput (photos/s) on 1-2 megapixel photos: N worker processes vs 1, same run.

    .venv/bin/python benchmarks/align_throughput.py [--photos 16] [--workers 2] [--output-size 512]

Inputs are made from the real single-face photos in ../shared/faces: each is scaled to a random
size between 1 and 2 megapixels, turned by a few degrees and saved as a JPEG, so every input is
a different file (nothing is served from the cache). The baseline (1 worker, in-process) and
the parallel run align the same files into fresh directories. Prints a Markdown table for
docs/alignment.md. Other helpers share this machine's CPUs: rerun when the load was high.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import machine  # noqa: E402

from embedding.align import AlignConfig, ModelSet, align_directory  # noqa: E402

SOURCES = ("astronaut.png", "Tom_Cruise_avp_2014_4.jpg")


def make_inputs(faces: Path, out: Path, n: int, seed: int) -> list[float]:
    """n JPEGs of 1-2 MP from the single-face photos; returns their megapixels."""
    rng = np.random.default_rng(seed)
    sizes = []
    for i in range(n):
        src = Image.open(faces / SOURCES[i % len(SOURCES)]).convert("RGB")
        mp = rng.uniform(1.0, 2.0)
        scale = (mp * 1e6 / (src.width * src.height)) ** 0.5
        im = src.resize((round(src.width * scale), round(src.height * scale)), Image.Resampling.LANCZOS)
        im = im.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BILINEAR, fillcolor=(128, 128, 128))
        im.save(out / f"photo_{i:03d}.jpg", quality=92)
        sizes.append(im.width * im.height / 1e6)
    return sizes



def run(in_dir: Path, out_dir: Path, config: AlignConfig, models: ModelSet, workers: int) -> dict:
    cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    t0 = time.perf_counter()
    result = align_directory(in_dir, out_dir, config=config, workers=workers, models=models)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    n = len(result.rows)
    return {"workers": workers, "photos": n, "aligned": result.aligned, "wall_s": wall,
            "photos_per_s": n / wall, "cpu_s": cpu1 - cpu0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--output-size", type=int, default=512)
    ap.add_argument("--transform-size", type=int, default=None, help="default: 4x the output size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    args = ap.parse_args()

    config = AlignConfig(output_size=args.output_size,
                         transform_size=args.transform_size or 4 * args.output_size, workers=args.workers)
    models = ModelSet.resolve(config)   # hashed once here, not inside the timed runs
    with tempfile.TemporaryDirectory(prefix="align-bench-") as tmp:
        tmp_path = Path(tmp)
        inputs = tmp_path / "in"
        inputs.mkdir()
        mps = make_inputs(args.faces, inputs, args.photos, args.seed)
        print(f"machine: {machine()}")
        print(f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; python {platform.python_version()}")
        print(f"inputs: {args.photos} JPEGs, {min(mps):.2f}-{max(mps):.2f} MP (mean {np.mean(mps):.2f}); "
              f"output {config.output_size}px via {config.transform_size}px; detector {config.detector} "
              f"upsample {config.upsample}, {config.landmarks}-point landmarks")
        results = [run(inputs, tmp_path / "out1", config, models, 1),
                   run(inputs, tmp_path / f"out{args.workers}", config, models, args.workers)]
    base = results[0]["photos_per_s"]
    print()
    print("| workers | photos | aligned | wall s | photos/s | speed-up vs 1 worker | CPU s (all processes) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['workers']} | {r['photos']} | {r['aligned']} | {r['wall_s']:.1f} | {r['photos_per_s']:.2f} "
              f"| {r['photos_per_s'] / base:.2f}x | {r['cpu_s']:.1f} |")


if __name__ == "__main__":
    main()
