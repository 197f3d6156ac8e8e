"""Round trip: render photos from known latents, project them back, measure what survives.

Photos are rendered by a seeded random-init generator from w_i = w(z_i) + a_i * s * sigma_d * d,
where d is a unit direction (the generator's most visible direction in w, `--direction
visible`, as the semi-synthetic cohort uses; or a random one), a_i ~ N(0, 1), sigma_d the
spread of mapped w along d and s the strength. They are then projected back (space w from
w_avg, as the demo does) and we report:

- the Pearson correlation between the recovered and the true coordinate along d
  (<w_hat - w_avg, d> vs <w - w_avg, d>) and between the recovered coordinate and a_i;
- the drop of the reconstruction loss from initialisation (median initial -> final).

Usage: .venv/bin/python benchmarks/projection_roundtrip.py [--resolution 32] [--photos 32] [--steps 100]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch


def roundtrip(*, resolution: int, channel_max: int, mapping_layers: int, photos: int, steps: int, strength: float,
              direction: str, loss: str, noise_mode: str, seed: int = 0, w_avg_samples: int = 10000,
              perceptual=None) -> dict:
    from embedding.direction import generator_direction
    from embedding.projection import project
    from embedding.stylegan2 import GeneratorConfig, load_generator

    G, info = load_generator(None, config=GeneratorConfig(resolution=resolution, channel_max=channel_max,
                                                          mapping_layers=mapping_layers), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        ref = G.mapping(torch.randn(2048, G.z_dim, generator=gen), update_w_avg=False)[:, 0]
        w_avg = ref.mean(0)
    if direction == "visible":
        d = generator_direction(G, space="w", samples=16, seed=seed, iterations=30).vector.float()
    else:
        d = torch.randn(G.w_dim, generator=gen)
        d = d / d.norm()
    sigma_d = float(((ref - w_avg) @ d).std())
    a = torch.randn(photos, generator=gen)
    with torch.no_grad():
        w_true = G.mapping(torch.randn(photos, G.z_dim, generator=gen), update_w_avg=False)[:, 0]
        w_true = w_true + (a * strength * sigma_d)[:, None] * d
        img = G.synthesis(w_true[:, None].expand(-1, G.num_ws, -1), noise_mode="const")
    clipped = float((img.abs() > 1).float().mean())
    img = img.clamp(-1, 1)   # as saving a PNG does: a random-init generator overshoots [-1, 1]
    t0 = time.perf_counter()
    res = project(G, img, space="w", steps=steps, loss=loss, perceptual=perceptual, noise_mode=noise_mode,
                  seed=seed, w_avg_samples=w_avg_samples)
    elapsed = time.perf_counter() - t0
    w_hat = torch.as_tensor(res.w)
    true_c = ((w_true - w_avg) @ d).numpy()
    rec_c = ((w_hat - w_avg) @ d).numpy()
    return {
        "resolution": resolution, "channel_max": channel_max, "photos": photos, "steps": steps,
        "strength": strength, "direction": direction, "loss": loss, "noise_mode": noise_mode,
        "corr_recovered_vs_true_along_d": float(np.corrcoef(rec_c, true_c)[0, 1]),
        "corr_recovered_vs_shift": float(np.corrcoef(rec_c, a.numpy())[0, 1]),
        "corr_true_vs_shift": float(np.corrcoef(true_c, a.numpy())[0, 1]),
        "initial_loss_median": float(np.median(res.initial_loss)),
        "final_loss_median": float(np.median(res.final_loss)),
        "loss_drop_fraction": float(1 - np.median(res.final_loss / res.initial_loss)),
        "final_mse_median": float(np.median(res.mse)),
        "clipped_pixel_fraction": round(clipped, 4),
        "seconds": round(elapsed, 1),
        "generator": info.description,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--channel-max", type=int, default=32)
    ap.add_argument("--mapping-layers", type=int, default=8)
    ap.add_argument("--photos", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--strength", type=float, default=2.0)
    ap.add_argument("--direction", choices=("visible", "random"), default="visible")
    ap.add_argument("--loss", choices=("mse", "perceptual", "mse+perceptual"), default="mse")
    ap.add_argument("--noise-mode", choices=("optimize", "const", "none"), default="optimize")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    perceptual = None
    if "perceptual" in args.loss:
        from embedding.perceptual import load_perceptual

        perceptual = load_perceptual("stlpips")[0]
    out = roundtrip(resolution=args.resolution, channel_max=args.channel_max, mapping_layers=args.mapping_layers,
                    photos=args.photos, steps=args.steps, strength=args.strength, direction=args.direction,
                    loss=args.loss, noise_mode=args.noise_mode, perceptual=perceptual)
    out.update(machine=platform.processor() or platform.machine(), torch=torch.__version__,
               threads=torch.get_num_threads(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
