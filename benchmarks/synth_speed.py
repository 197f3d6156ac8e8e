"""Speed of the synth cohort's two generator-bound steps, each against its baseline in the same run.

- direction estimate (64 w, power iteration to 1e-4): unfused modulated conv + 1 thread (what
  `cohort synth` does) against the grouped (fused) conv and against 2 threads;
- rendering N portraits (one w for all layers, const noise).

Usage: .venv/bin/python benchmarks/synth_speed.py [--patients 300] [--samples 64]
Prints a markdown table (wall and CPU seconds) with the machine and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import cpu_name  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--channel-max", type=int, default=32)
    args = ap.parse_args()

    import numpy as np
    import torch

    import embedding.direction as direction
    from embedding.stylegan2 import GeneratorConfig, load_generator
    from features.synth_cohort import map_z, render_ws

    G, _ = load_generator(None, config=GeneratorConfig(resolution=args.resolution, channel_max=args.channel_max),
                          seed=0)
    rows = []

    def timed(label, threads, fn):
        torch.set_num_threads(threads)
        fn()  # warm-up: first forward-mode call sets up dispatch
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        rows.append((label, threads, time.perf_counter() - t, time.process_time() - c, out))

    def est():
        return direction.generator_direction(G, space="w", samples=args.samples, seed=0, iterations=30).iterations

    fused_opts = direction.synthesis_options
    timed("direction, unfused conv (default)", 1, est)
    timed("direction, unfused conv (default)", 2, est)
    direction.synthesis_options = lambda G: {}  # baseline: the generator's default (grouped) conv
    timed("direction, fused grouped conv", 1, est)
    direction.synthesis_options = fused_opts

    z = np.random.default_rng(0).standard_normal((args.patients, G.z_dim)).astype(np.float32)
    for threads in (1, 2):
        timed(f"render {args.patients} portraits (mapping + synthesis)", threads,
              lambda: render_ws(G, map_z(G, z, truncation_psi=1.0)).shape[0])

    name = cpu_name()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else "?"
    print(f"{name}, {torch.get_num_threads()} threads max, load {load}, {dt.date.today()}, "
          f"res {args.resolution}, channel_max {args.channel_max}, {args.samples} direction samples\n")
    print("| step | threads | wall s | CPU s | iterations / images |")
    print("|---|---|---|---|---|")
    for label, threads, wall, cpu_s, out in rows:
        print(f"| {label} | {threads} | {wall:.1f} | {cpu_s:.1f} | {out} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
