"""Encoder-initialised projection against optimisation only: quality and FLOPs per photo, same photos,
same run (issue 16 item 3), and the paper's method beside the demo's defaults (item 2).

Methods (all through embedding.projection.project with params.projection's settings, only the
start and the step count changing):
    opt100, opt1000   start at w_avg, 100 / 1000 steps (the demo's defaults: 100)
    encK              the generator's encoder's guess, then K steps (K in --ks)
    paper             projection.method: paper (z, real LPIPS-VGG16, 1000 steps; --paper-steps to cut)
Photos: --real N aligned UTKFace photos (a seeded draw, aligned once and cached) and --rendered N
images the generator makes from seeded w (their true w is known: latent recovery is measured).
Quality: reconstruction LPIPS (real LPIPS-VGG16, at the generator's resolution) and pixel MSE of the
final latent's image; rendered: also R2 of the recovered w against the true w. Each with a bootstrap
95% CI over photos, and the paired difference to opt100 and to opt1000.
FLOPs per photo: torch.utils.flop_counter on the same call at steps 0 and 1 (FLOPs are linear in
steps), plus the encoder's forward; the encoder's training is reported apart, amortised over the
paper's 13,503 photos.

Usage: .venv/bin/python benchmarks/encoder_projection.py --real 24 --rendered 24 --out r.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import cpu_name  # noqa: E402

PAPER_PHOTOS = 13503
RENDER_SEED = 9001


def boot_ci(x: np.ndarray, *, n: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n, len(x)))].mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def r2(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-photo R2 of a recovered w against the truth, over the w's coordinates."""
    ss_res = ((pred - true) ** 2).sum(axis=1)
    ss_tot = ((true - true.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    return 1.0 - ss_res / ss_tot


def count_flops(fn: Any) -> float:
    """FLOPs of fn() by torch's own FLOP formulas (torch.utils.flop_counter's registry: matmuls and
    convolutions, forward and backward). FlopCounterMode itself is not used: its module tracker
    fails on graphs built under no_grad from leaves that require grad, as projection's are."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Count.total += formula(*args, **kwargs, out_val=out)
            return out

    with Count():
        fn()
    return float(Count.total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared" / "utkface")
    ap.add_argument("--real", type=int, default=24)
    ap.add_argument("--rendered", type=int, default=24)
    ap.add_argument("--methods", nargs="+", default=["opt100", "opt1000", "enc"],
                    help="opt<N>, enc (every --ks) and/or paper")
    ap.add_argument("--ks", type=int, nargs="+", default=[0, 5, 10, 20, 50])
    ap.add_argument("--paper-steps", type=int, default=1000)
    ap.add_argument("--encoder-steps", type=int, default=None, help="default: params encoder.steps")
    ap.add_argument("--pixel-weight", type=float, default=None, help="default: params encoder.pixel_weight")
    ap.add_argument("--enc-lr", type=float, default=None,
                    help="learning rate of the steps after the encoder (default: projection.learning_rate)")
    ap.add_argument("--generator", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=1, help="which photos are drawn (tuning used seed 0)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--align-cache", type=Path, default=Path(tempfile.gettempdir()) / "facesurv-align-cache")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from retention import aligned_photos

    from embedding.encoder import encode, train_encoder
    from embedding.perceptual import load_perceptual
    from embedding.project_batch import load_photo
    from embedding.projection import project
    from facesurv.components import Components
    from ground.config import PAPER_PERCEPTUAL, PAPER_PROJECTION, load_params, with_overrides

    repo = Path(__file__).resolve().parent.parent
    params = load_params(repo / "params.yaml")
    if args.generator is not None:
        params = with_overrides(params, generator={"checkpoint": str(args.generator.resolve())})
    params = with_overrides(params, encoder={"steps": args.encoder_steps, "pixel_weight": args.pixel_weight})
    parts = Components(None, params)
    G, ginfo = parts.generator()
    stats = parts.latent_stats()
    lpips, linfo = load_perceptual("lpips-vgg16")
    R = G.img_resolution
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    sets: dict[str, dict[str, Any]] = {}
    if args.real:
        pool = sorted(p for p in args.faces.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        pick = [pool[i] for i in np.random.default_rng(args.seed).permutation(len(pool))[:args.real * 2]]
        aligned = aligned_photos(params, pick, args.align_cache)
        keys = sorted(aligned)[:args.real]
        sets["real"] = {"images": torch.from_numpy(np.stack([load_photo(aligned[k], resolution=R) for k in keys])),
                        "w_true": None}
    if args.rendered:
        gen = torch.Generator().manual_seed(RENDER_SEED + args.seed)
        with torch.no_grad():
            z = torch.randn(args.rendered, G.z_dim, generator=gen)
            w = G.mapping(z, truncation_psi=1.0, update_w_avg=False)
            img = G.synthesis(w, noise_mode="random").clamp(-1, 1)
        sets["rendered"] = {"images": img, "w_true": w[:, 0].numpy()}

    opts = params.projection.project_options()
    need_encoder = "enc" in args.methods
    encoder = None
    meta: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "machine": f"{cpu_name()}, {args.threads} torch thread(s)",
        "generator": ginfo.description, "generator_sha256": ginfo.sha256, "resolution": R,
        "quality_network": linfo.description, "projection": opts, "photo_seed": args.seed,
        "encoder_refine_lr": args.enc_lr or opts["learning_rate"]}
    if need_encoder:
        space = "z" if opts["space"] == "z" else "w"
        t0 = time.perf_counter()
        encoder, emetrics = train_encoder(G, stats=stats, space=space,
                                          progress=lambda s, n: log(f"encoder {s}/{n}") if s % 200 == 0 else None,
                                          **params.encoder.training_options())
        train_s = time.perf_counter() - t0
        probe = next(iter(sets.values()))["images"][:8].float()
        enc_fwd = count_flops(lambda: encode(encoder, probe)) / probe.shape[0]
        meta["encoder"] = {"settings": params.encoder.training_options(), "train_seconds": round(train_s, 1),
                           "metrics": emetrics, "forward_flops": enc_fwd}

    def run(method: str, images: torch.Tensor) -> tuple[Any, float, dict[str, Any]]:
        o = dict(opts)
        extra: dict[str, Any] = {}
        net = lpips if "perceptual" in o["loss"] else None
        if method.startswith("opt"):
            o["steps"] = int(method[3:])
        elif method.startswith("enc"):
            o["steps"] = int(method[3:])
            o["learning_rate"] = args.enc_lr or o["learning_rate"]
            extra["init"] = encode(encoder, images)
        elif method == "paper":
            o.update({k: v for k, v in PAPER_PROJECTION.items() if k in o})
            o["steps"] = args.paper_steps
            net = lpips if PAPER_PERCEPTUAL["network"] == "lpips-vgg16" else None
        t0 = time.perf_counter()
        res = None
        outs = []
        for start in range(0, images.shape[0], params.projection.batch_size):
            outs.append(project(G, images[start:start + params.projection.batch_size], perceptual=net, stats=stats,
                                seed=start, **o, **{k: v[start:start + params.projection.batch_size]
                                                     for k, v in extra.items()}))
        seconds = time.perf_counter() - t0
        res = {"latents": np.concatenate([r.latents for r in outs]), "w": np.concatenate([r.w for r in outs]),
               "mse": np.concatenate([r.mse for r in outs])}
        # FLOPs are linear in steps: count steps 1 and 2 on 8 photos, per photo
        sub = images[:8]
        sub_extra = {k: v[:8] for k, v in extra.items()}
        f1 = count_flops(lambda: project(G, sub, perceptual=net, stats=stats, **{**o, "steps": 1}, **sub_extra))
        f2 = count_flops(lambda: project(G, sub, perceptual=net, stats=stats, **{**o, "steps": 2}, **sub_extra))
        f0 = 2 * f1 - f2
        return res, seconds, {"f0": f0, "f1": f1, "n": sub.shape[0], "steps": o["steps"], "space": o["space"]}

    methods = [m for m in args.methods if m != "enc"] + ([f"enc{k}" for k in args.ks] if need_encoder else [])
    rows = []
    for set_name, data in sets.items():
        images = data["images"].float()
        per: dict[str, dict[str, np.ndarray]] = {}
        for method in methods:
            log(f"{set_name}: {method} on {images.shape[0]} photos")
            res, seconds, fl = run(method, images)
            with torch.no_grad():
                space = fl["space"]
                ws = (G.mapping(torch.from_numpy(res["latents"]), truncation_psi=1.0, update_w_avg=False)
                      if space == "z" else torch.from_numpy(res["w"]).unsqueeze(1).repeat(1, G.num_ws, 1))
                recon = G.synthesis(ws, noise_mode="const").clamp(-1, 1)
                lp = lpips.distance(recon, images).double().numpy()
            metrics = {"lpips": lp, "mse": res["mse"]}
            if data["w_true"] is not None:
                metrics["w_r2"] = r2(res["w"], data["w_true"])
            per[method] = metrics
            step_flops = (fl["f1"] - fl["f0"]) / fl["n"]
            fixed = fl["f0"] / fl["n"]
            enc_f = (meta.get("encoder") or {}).get("forward_flops") if method.startswith("enc") else 0.0
            row = {"set": set_name, "method": method, "photos": int(images.shape[0]), "seconds": round(seconds, 1),
                   "flops_per_photo": fixed + fl["steps"] * step_flops + (enc_f or 0.0),
                   "flops_per_step": step_flops,
                   **{k: {"mean": float(v.mean()), "ci": boot_ci(v)} for k, v in metrics.items()}}
            for ref in ("opt100", "opt1000"):
                if ref in per and ref != method:
                    row[f"vs_{ref}"] = {k: {"mean": float((v - per[ref][k]).mean()),
                                            "ci": boot_ci(v - per[ref][k])} for k, v in metrics.items()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"meta": meta, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
