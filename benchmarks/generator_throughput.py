"""Generator speed at the demo's configuration (res 32, channel_max 32): forward and forward+backward
w.r.t. w (one projection step without the loss network), batched fused / unfused modulated convolution
against a baseline measured in the same run: the same photos synthesised one at a time.

    .venv/bin/python benchmarks/generator_throughput.py [--batch 32] [--repeats 20] [--resolution 32]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from embedding.stylegan2 import Generator, GeneratorConfig


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--channel-max", type=int, default=32)
    ap.add_argument("--channel-base", type=int, default=32768)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    cfg = GeneratorConfig(resolution=a.resolution, channel_max=a.channel_max, channel_base=a.channel_base)
    G = Generator(cfg, seed=0).eval().requires_grad_(False).to(a.device)
    ws0 = G.mapping(torch.randn(a.batch, G.z_dim, device=a.device)).detach()
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"device {a.device}, res {a.resolution}, channel_max {a.channel_max}, batch {a.batch}")
    results = {}
    for label, fused, per_sample in (("batched fused", True, False), ("batched unfused", False, False),
                                     ("baseline: one photo at a time", True, True)):
        def synth(ws, fused=fused, per_sample=per_sample):
            if per_sample:
                return torch.cat([G.synthesis(ws[i:i + 1], fused=fused) for i in range(ws.shape[0])])
            return G.synthesis(ws, fused=fused)

        def fwd(synth=synth):
            with torch.no_grad():
                synth(ws0)
            sync()

        def step(synth=synth):
            ws = ws0.clone().requires_grad_(True)
            synth(ws).square().mean().backward()
            sync()

        tf = _time(fwd, a.repeats)
        ts = _time(step, a.repeats)
        results[label] = ts
        print(f"{label:30} forward {tf * 1e3:8.1f} ms/batch ({a.batch / tf:7.0f} img/s)   "
              f"fwd+bwd {ts * 1e3:8.1f} ms/batch ({ts / a.batch * 1e3:6.2f} ms/img/step)")
    base = results["baseline: one photo at a time"]
    print(f"speed-up of batched fused over the per-photo baseline (fwd+bwd): {base / results['batched fused']:.1f}x")

if __name__ == "__main__":
    main()
