"""GPU projection throughput at FFHQ-512 (reference and fast method) against the one-H100-hour target.

Generator: random-init StyleGAN2 at 512x512, channel_base 32768, channel_max 512, 8 mapping
layers (30.3 M parameters, the configuration of ../shared/anchors; weights do not change the
FLOPs or the time). Perceptual network: load_perceptual("lpips-vgg16") at resize 256, or the
stlpips stand-in when that is not installed (same VGG-16 shapes and cost); the JSON says which.

Methods, all space w with the perceptual loss and the noise penalty, as NVIDIA's projector:
- reference: 1000 steps from w_avg, fp32 (torch default: TF32 convolutions), batch 1 and the
  best batch, and the same in bf16 autocast at the batch chosen from free memory;
- fast: encoder forward (a random-init embedding.encoder.Encoder: same FLOPs as a trained
  one) + `project(init=encoder output, steps=k)`, k in --fast-steps, bf16 autocast, batch from
  `embedding.gpu.choose_batch_size`'s arithmetic.

Timing: for each configuration `project` runs once to warm up, then with --short and --long
steps; step_s = (t_long - t_short) / (long - short), fixed_s = t_short - short * step_s
(target embedding, start and final evaluations, noise-buffer set-up; w_avg statistics are
computed once per generator, as the batch driver does). Per-photo figures for 1000 or k steps
are EXTRAPOLATED: (encoder_s + fixed_s + steps * step_s) / batch. One end-to-end run of the
fast method at k = --check-steps is measured to test the extrapolation.

FLOPs: counted once with torch.utils.flop_counter on this GPU at batch 1 (matrix products and
convolutions, forward and backward); achieved TFLOP/s = counted FLOPs per photo * photos/s;
fraction of peak against NVIDIA's dense datasheet figures for the device (null when unknown).

Rows run in order of value and are skipped (and say so) once --time-budget seconds are
spent; the JSON is rewritten after every row, so a run killed by a timeout keeps what it did.
Options: --compile tries torch.compile on the synthesis and VGG trunk (reports whether it
paid); --no-unfused skips the candidate "unfused modulated convolution" row.

Without CUDA it prints a skip line and exits 0; --cpu-flops instead counts the FLOPs on the
CPU (batch 1, about a minute per configuration at 512 px) and prints the FLOP table and the
arithmetic: at a given share of the H100's bf16 peak, how many photos/s each method reaches.

Usage: .venv/bin/python benchmarks/projection_gpu.py [--out FILE] [--compile] [--time-budget 450]
       .venv/bin/python benchmarks/projection_gpu.py --cpu-flops [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))  # the repository's packages
from machine import cpu_name  # noqa: E402

TARGET_PHOTOS = 13503                      # the paper's cohort, in one H100-hour
TARGET_PHOTOS_PER_S = TARGET_PHOTOS / 3600.0
REFERENCE_STEPS = 1000
OPT_STEPS = 100
ANCHOR = "../shared/anchors/README.md: NVIDIA's projector on one H100, torch default precision"
ANCHOR_MS_PER_STEP = {1: 78.5, 8: 122.6, 32: 341.1}
H100_BF16_DENSE_TFLOPS = 989.0
# Dense tensor-core peaks (TFLOP/s) from NVIDIA's datasheets; fp32 is the non-tensor-core rate.
PEAKS: tuple[tuple[Callable[[str], bool], dict[str, float]], ...] = (
    (lambda n: "H200" in n and "NVL" not in n, {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    (lambda n: "H100" in n and ("HBM3" in n or "SXM" in n), {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0}),
    (lambda n: "A100" in n, {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
)
SHARES_OF_PEAK = (1.0, 0.4, 0.2, 0.1, 0.05)


def peak_tflops(device_name: str) -> dict[str, float] | None:
    """{"bf16", "tf32", "fp32"} dense peaks for a CUDA device name, None when not in the table."""
    for match, peaks in PEAKS:
        if match(device_name):
            return dict(peaks)
    return None


def build_models(args: argparse.Namespace, device: str) -> tuple[Any, Any, str]:
    """(G, perceptual, description) on `device`: the full-size random-init generator and the real
    LPIPS-VGG16 when installed, else the stand-in."""
    from embedding.perceptual import load_perceptual
    from embedding.stylegan2 import GeneratorConfig, load_generator

    cfg = GeneratorConfig(resolution=args.resolution, channel_base=args.channel_base,
                          channel_max=args.channel_max, mapping_layers=args.mapping_layers)
    G, _ = load_generator(None, config=cfg, seed=0)
    try:
        net, info = load_perceptual("lpips-vgg16", resize=args.perceptual_resize)
    except (FileNotFoundError, ValueError) as exc:
        print(f"lpips-vgg16 unavailable ({str(exc).splitlines()[0]}); using the stlpips stand-in "
              "(same VGG-16 shapes and cost)", flush=True)
        net, info = load_perceptual("stlpips", resize=args.perceptual_resize)
    print(f"perceptual network: {info.network}", flush=True)
    return G.to(device), net.to(device), info.network


def build_encoder(G, device: str) -> Any | None:
    """A random-init Encoder for G's resolution and w (None when embedding.encoder is missing)."""
    try:
        from embedding.encoder import Encoder, EncoderConfig
    except ImportError as exc:
        print(f"embedding.encoder unavailable ({exc}): fast rows without the encoder's cost", flush=True)
        return None
    return Encoder(EncoderConfig(resolution=G.img_resolution, space="w", latent_dim=G.w_dim)).to(device).eval()


@contextlib.contextmanager
def unfused_modconv(G) -> Iterator[None]:
    """Run G.synthesis with fused=False (scale the input, convolve with the shared weight,
    rescale) instead of one grouped convolution with per-photo weights; `project` has no option
    for it yet. The backward then needs no per-photo weight gradient."""
    G.synthesis.forward = functools.partial(type(G.synthesis).forward, G.synthesis, fused=False)
    try:
        yield
    finally:
        del G.synthesis.forward


def method_table(flops, encoder: float, fast_steps: list[int]) -> list[dict[str, Any]]:
    """Counted FLOPs per photo of each method (ProjectionFlops, encoder forward FLOPs)."""
    rows = [{"method": f"reference: w_avg + {REFERENCE_STEPS} steps", "steps": REFERENCE_STEPS,
             "gflop_per_photo": flops.per_photo(REFERENCE_STEPS) / 1e9},
            {"method": f"opt: w_avg + {OPT_STEPS} steps", "steps": OPT_STEPS,
             "gflop_per_photo": flops.per_photo(OPT_STEPS) / 1e9}]
    rows += [{"method": f"fast: encoder + {k} steps", "steps": k,
              "gflop_per_photo": flops.per_photo(k, extra=encoder) / 1e9} for k in fast_steps]
    for r in rows:
        r["gflop_per_photo"] = round(r["gflop_per_photo"], 1)
        # photos/s at a share of the H100's bf16 peak, and the share the target needs
        r["photos_per_s_at_share_of_h100_bf16_peak"] = {
            f"{s:.0%}": round(s * H100_BF16_DENSE_TFLOPS * 1e3 / r["gflop_per_photo"], 2) for s in SHARES_OF_PEAK}
        r["share_of_h100_bf16_peak_for_target"] = round(
            TARGET_PHOTOS_PER_S * r["gflop_per_photo"] / (H100_BF16_DENSE_TFLOPS * 1e3), 4)
    return rows


def print_flop_table(flops, step_mse: float | None, step_unfused: float | None, encoder: float,
                     rows: list[dict[str, Any]]) -> None:
    print(f"\nFLOPs per photo (counted, batch 1): step {flops.step / 1e9:.1f} GFLOP"
          + (f" (generator only, loss mse: {step_mse / 1e9:.1f})" if step_mse is not None else "")
          + (f", unfused modconv step {step_unfused / 1e9:.1f}" if step_unfused is not None else "")
          + f"; once per call {flops.fixed / 1e9:.1f} GFLOP; encoder forward {encoder / 1e9:.1f} GFLOP")
    shares = [f"{s:.0%}" for s in SHARES_OF_PEAK]
    print("\n| method | GFLOP/photo | " + " | ".join(f"photos/s at {s} of H100 bf16" for s in shares)
          + " | share of peak for 3.75 photos/s |")
    print("|---|---|" + "---|" * len(shares) + "---|")
    for r in rows:
        at = r["photos_per_s_at_share_of_h100_bf16_peak"]
        print(f"| {r['method']} | {r['gflop_per_photo']:.0f} | " + " | ".join(f"{at[s]:.2f}" for s in shares)
              + f" | {r['share_of_h100_bf16_peak_for_target']:.1%} |")


def write(result: dict[str, Any], out: str | None) -> None:
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(result, indent=2))


def cpu_flops(args: argparse.Namespace) -> int:
    from embedding.gpu import encoder_flops, flops_per_photo_step

    if args.threads:
        torch.set_num_threads(args.threads)
    G, net, pname = build_models(args, "cpu")
    E = build_encoder(G, "cpu")
    timings = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"counted {name} in {timings[name]} s", flush=True)
        return value

    flops = timed("step (w, perceptual)", lambda: flops_per_photo_step(G, net, space="w", loss="perceptual"))
    step_mse = None
    step_unfused = None
    if not args.quick:
        step_mse = timed("step (w, mse)", lambda: flops_per_photo_step(G, None, space="w", loss="mse").step)
        with unfused_modconv(G):
            step_unfused = timed("step (w, perceptual, unfused modconv)",
                                 lambda: flops_per_photo_step(G, net, space="w", loss="perceptual").step)
    enc = timed("encoder", lambda: encoder_flops(E, G.img_resolution)) if E is not None else 0.0
    rows = method_table(flops, enc, args.fast_steps)
    print_flop_table(flops, step_mse, step_unfused, enc, rows)
    result = {
        "mode": "cpu-flops", "machine": cpu_name(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "generator": f"random-init, {args.resolution} px, channel_base {args.channel_base}, "
                     f"channel_max {args.channel_max}, {args.mapping_layers} mapping layers",
        "perceptual": pname, "perceptual_resize": args.perceptual_resize,
        "counted_with": "torch.utils.flop_counter formulas (matmuls and convolutions; multiply-add = 2 FLOPs), "
                        "project() run for real on the CPU at batch 1; step = count(2 steps) - count(1 step)",
        "counting_seconds": timings,
        "gflop": {"step": round(flops.step / 1e9, 2), "fixed_per_call": round(flops.fixed / 1e9, 2),
                  "step_generator_only_mse": None if step_mse is None else round(step_mse / 1e9, 2),
                  "step_unfused_modconv": None if step_unfused is None else round(step_unfused / 1e9, 2),
                  "encoder_forward": round(enc / 1e9, 2)},
        "target": {"photos": TARGET_PHOTOS, "hours": 1, "photos_per_s": round(TARGET_PHOTOS_PER_S, 3),
                   "h100_bf16_dense_tflops": H100_BF16_DENSE_TFLOPS},
        "rows": rows,
    }
    write(result, args.out)
    return 0


# --- on a GPU -------------------------------------------------------------------------------


def _sync() -> None:
    torch.cuda.synchronize()


def _seconds(fn: Callable[[], Any]) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def time_steps(run: Callable[[int], Any], short: int, long: int) -> dict[str, float]:
    """run(steps) is one project call; -> step_s, fixed_s, warmup_s, peak_gib (of the timed calls)."""
    warmup = _seconds(lambda: run(1))        # cuDNN algorithm choice, allocator, compilation
    torch.cuda.reset_peak_memory_stats()
    t_short = _seconds(lambda: run(short))
    t_long = _seconds(lambda: run(long))
    if t_long <= t_short:
        raise RuntimeError(f"the {long}-step run ({t_long:.3f} s) was not slower than the {short}-step run "
                           f"({t_short:.3f} s): timing noise; raise --long")
    step = (t_long - t_short) / (long - short)
    return {"step_s": step, "fixed_s": max(0.0, t_short - short * step), "warmup_s": warmup,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def rates(*, batch: int, seconds_per_batch: float, gflop_per_photo: float, precision: str,
          peaks: dict[str, float] | None) -> dict[str, Any]:
    photos_per_s = batch / seconds_per_batch
    tflops = photos_per_s * gflop_per_photo / 1e3
    return {"photos_per_s": round(photos_per_s, 3), "photos_per_gpu_hour": round(3600 * photos_per_s),
            "meets_target": photos_per_s >= TARGET_PHOTOS_PER_S,
            "gflop_per_photo": round(gflop_per_photo, 1), "achieved_tflops": round(tflops, 1),
            "fraction_of_bf16_peak": None if peaks is None else round(tflops / peaks["bf16"], 4),
            "fraction_of_precision_peak": None if peaks is None else round(tflops / peaks[precision], 4)}


def gpu(args: argparse.Namespace) -> int:
    from embedding.gpu import (
        batch_size_for_memory,
        encoder_flops,
        flops_per_photo_step,
        probe_bytes_per_photo,
    )
    from embedding.projection import latent_statistics, project

    started = time.perf_counter()
    device = "cuda"
    name = torch.cuda.get_device_name(0)
    peaks = peak_tflops(name)
    torch.backends.cuda.matmul.allow_tf32 = False      # torch's defaults: the reference's precision
    torch.backends.cudnn.allow_tf32 = True
    G, net, pname = build_models(args, device)
    E = build_encoder(G, device)
    stats = latent_statistics(G, samples=10000, device=device)
    has_init = "init" in inspect.signature(project).parameters
    result: dict[str, Any] = {
        "mode": "gpu", "device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "generator": f"random-init, {args.resolution} px, channel_base {args.channel_base}, "
                     f"channel_max {args.channel_max}, {args.mapping_layers} mapping layers",
        "perceptual": pname, "perceptual_resize": args.perceptual_resize, "peak_tflops": peaks,
        "target": {"photos": TARGET_PHOTOS, "hours": 1, "photos_per_s": round(TARGET_PHOTOS_PER_S, 3)},
        "anchor": ANCHOR, "anchor_ms_per_step": ANCHOR_MS_PER_STEP,
        "timing": f"step_s from {args.short}- and {args.long}-step runs; per-photo figures for 1000 or k steps "
                  "are extrapolated as (encoder_s + fixed_s + steps * step_s) / batch",
        "fast_uses_init": has_init, "rows": [], "skipped": [],
    }
    budget_end = started + args.time_budget

    def remaining() -> float:
        return budget_end - time.perf_counter()

    def row(label: str, need_s: float, fn: Callable[[], list[dict[str, Any]]]) -> None:
        """Run one measurement unless the budget is spent; record its rows or its error."""
        if remaining() < need_s:
            result["skipped"].append({"row": label, "reason": f"time budget: {remaining():.0f} s left, "
                                                              f"needs about {need_s:.0f} s"})
            print(f"skip {label}: time budget", flush=True)
            write(result, args.out)
            return
        try:
            new = fn()
        except torch.cuda.OutOfMemoryError:
            new = [{"row": label, "error": "out of memory"}]
        except Exception as exc:  # noqa: BLE001 - one failed row must not lose the others
            traceback.print_exc()
            new = [{"row": label, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}]
        torch.cuda.empty_cache()
        for r in new:
            r.setdefault("row", label)
            print(json.dumps(r), flush=True)
        result["rows"] += new
        write(result, args.out)

    # FLOPs, once: batch 1 on this GPU (a count does not depend on precision or batch)
    t0 = time.perf_counter()
    flops = flops_per_photo_step(G, net, space="w", loss="perceptual")
    enc_gflop = encoder_flops(E, G.img_resolution) / 1e9 if E is not None else 0.0
    result["gflop"] = {"step": round(flops.step / 1e9, 2), "fixed_per_call": round(flops.fixed / 1e9, 2),
                       "encoder_forward": round(enc_gflop, 2), "counting_s": round(time.perf_counter() - t0, 1)}
    result["flop_table"] = method_table(flops, enc_gflop * 1e9, args.fast_steps)
    write(result, args.out)

    def batch_from_memory(mixed: bool, maximum: int) -> dict[str, Any]:
        fixed_b, per_photo = probe_bytes_per_photo(G, net, device=device, space="w", loss="perceptual",
                                                   mixed_precision=mixed)
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info()
        batch = batch_size_for_memory(free_bytes=int(free), bytes_per_photo=per_photo, fixed_bytes=fixed_b,
                                      maximum=maximum)
        return {"batch": batch, "probe_fixed_gib": round(fixed_b / 2**30, 2),
                "probe_gib_per_photo": round(per_photo / 2**30, 3), "free_gib": round(free / 2**30, 1),
                "total_gib": round(total / 2**30, 1)}

    def photos(n: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        return torch.rand(n, 3, G.img_resolution, G.img_resolution, generator=gen) * 2 - 1

    def opts(batch: int, mixed: bool) -> dict[str, Any]:
        return dict(space="w", loss="perceptual", perceptual=net, device=device, mixed_precision=mixed,
                    batch_multiple=1 if batch == 1 else 8, w_avg_samples=10000, stats=stats)

    def encoder_seconds(imgs: torch.Tensor) -> tuple[float, Any]:
        if E is None:
            return 0.0, None
        from embedding.encoder import encode

        encode(E, imgs[:1])                               # warm-up
        out: list[Any] = []
        s = _seconds(lambda: out.append(encode(E, imgs)))
        return s, out[0]

    def reference_row(label: str, batch: int, precision: str, t: dict[str, float], extra: dict[str, Any]):
        per_batch = t["fixed_s"] + REFERENCE_STEPS * t["step_s"]
        return {"row": label, "method": "reference", "precision": precision, "batch": batch,
                "ms_per_step": round(1e3 * t["step_s"], 1), "fixed_s": round(t["fixed_s"], 3),
                "steps": REFERENCE_STEPS, "extrapolated": True, "peak_gib": round(t["peak_gib"], 2),
                "anchor_ms_per_step": ANCHOR_MS_PER_STEP.get(batch) if precision == "tf32" else None,
                **rates(batch=batch, seconds_per_batch=per_batch, gflop_per_photo=flops.per_photo(REFERENCE_STEPS) / 1e9,
                        precision=precision, peaks=peaks), **extra}

    chosen: dict[str, Any] = {}
    step_times: dict[str, float] = {}

    def fast_rows() -> list[dict[str, Any]]:
        mem = batch_from_memory(True, args.max_batch)
        b = mem["batch"]
        while True:
            imgs = photos(b)
            try:
                enc_s, init = encoder_seconds(imgs)
                kw = opts(b, True) | ({"init": init} if has_init and init is not None else {})
                def run(s: int, imgs: torch.Tensor = imgs, kw: dict[str, Any] = kw) -> Any:
                    return project(G, imgs, steps=s, **kw)

                t = time_steps(run, args.short, args.long)
                break
            except torch.cuda.OutOfMemoryError:
                # the linear memory fit was optimistic: record it and halve the batch
                del imgs
                torch.cuda.empty_cache()
                mem.setdefault("out_of_memory_at", []).append(b)
                if b <= 8:
                    raise
                b = max(8, b // 16 * 8)
        mem["batch"] = b
        step_times["bf16"] = t["step_s"]
        chosen.update(mem)
        out = [reference_row("reference bf16, batch from memory", b, "bf16", t, {"memory": mem})]
        for k in args.fast_steps:
            per_batch = enc_s + t["fixed_s"] + k * t["step_s"]
            out.append({"row": f"fast k={k}", "method": "fast", "precision": "bf16", "batch": b, "steps": k,
                        "encoder_s_per_batch": round(enc_s, 3), "fixed_s": round(t["fixed_s"], 3),
                        "ms_per_step": round(1e3 * t["step_s"], 1), "extrapolated": True,
                        "peak_gib": round(t["peak_gib"], 2),
                        **rates(batch=b, seconds_per_batch=per_batch, precision="bf16", peaks=peaks,
                                gflop_per_photo=flops.per_photo(k, extra=enc_gflop * 1e9) / 1e9)})
        return out

    def reference_batch1() -> list[dict[str, Any]]:
        imgs = photos(1)
        t = time_steps(lambda s: project(G, imgs, steps=s, **opts(1, False)), args.short, args.long)
        return [reference_row("reference fp32 (TF32 conv), batch 1", 1, "tf32", t, {})]

    def fast_check() -> list[dict[str, Any]]:
        b, k = chosen["batch"], args.check_steps
        imgs = photos(b)

        def run() -> None:
            kw = opts(b, True)
            if E is not None:
                from embedding.encoder import encode

                init = encode(E, imgs)
                if has_init:
                    kw["init"] = init
            project(G, imgs, steps=k, **kw)

        s = _seconds(run)
        predicted = next(r for r in result["rows"] if r.get("row") == f"fast k={k}")
        return [{"row": f"fast k={k}, measured end to end", "method": "fast", "precision": "bf16", "batch": b,
                 "steps": k, "extrapolated": False, "seconds_per_batch": round(s, 2),
                 "extrapolated_photos_per_s": predicted.get("photos_per_s"),
                 **rates(batch=b, seconds_per_batch=s, precision="bf16", peaks=peaks,
                         gflop_per_photo=flops.per_photo(k, extra=enc_gflop * 1e9) / 1e9)}]

    def variant(label: str, context: Callable[[], Any], count_flops_again: bool) -> list[dict[str, Any]]:
        b = chosen["batch"]
        imgs = photos(b)
        with context():
            f = flops_per_photo_step(G, net, space="w", loss="perceptual") if count_flops_again else flops
            t = time_steps(lambda s: project(G, imgs, steps=s, **opts(b, True)), args.short, args.long)
        base = step_times["bf16"]
        per_batch = t["fixed_s"] + REFERENCE_STEPS * t["step_s"]
        return [{"row": label, "precision": "bf16", "batch": b, "ms_per_step": round(1e3 * t["step_s"], 1),
                 "baseline_ms_per_step": round(1e3 * base, 1), "speedup_per_step": round(base / t["step_s"], 3),
                 "paid": t["step_s"] < 0.97 * base, "warmup_s": round(t["warmup_s"], 1),
                 "gflop_per_step": round(f.step / 1e9, 1), "peak_gib": round(t["peak_gib"], 2),
                 "reference_1000_steps": rates(batch=b, seconds_per_batch=per_batch, precision="bf16", peaks=peaks,
                                               gflop_per_photo=f.per_photo(REFERENCE_STEPS) / 1e9)}]

    @contextlib.contextmanager
    def compiled() -> Iterator[None]:
        # dynamic=False: symbolic batch sizes hit an inductor error (torch 2.13, seen on the CPU).
        # blur2d's data-dependent separability test breaks the graph once per resolution, so the
        # default limit of 8 recompilations would leave the larger layers eager.
        import torch._dynamo

        torch._dynamo.config.recompile_limit = 64
        # instance attributes shadow the methods, so deleting them restores the eager modules
        G.synthesis.forward = torch.compile(G.synthesis.forward, dynamic=False)
        net.trunk.forward = torch.compile(net.trunk.forward, dynamic=False)
        try:
            yield
        finally:
            del G.synthesis.forward, net.trunk.forward

    def reference_best() -> list[dict[str, Any]]:
        mem = batch_from_memory(False, args.reference_max_batch)
        b = mem["batch"]
        imgs = photos(b)
        t = time_steps(lambda s: project(G, imgs, steps=s, **opts(b, False)), args.short, args.long)
        return [reference_row("reference fp32 (TF32 conv), batch from memory", b, "tf32", t, {"memory": mem})]

    row("fast (bf16, batch from memory)", 30, fast_rows)
    row("reference fp32, batch 1", 15, reference_batch1)
    if chosen and args.unfused:
        row("bf16, unfused modulated convolution (candidate)", 40,
            lambda: variant("bf16, unfused modulated convolution (candidate)", lambda: unfused_modconv(G), True))
    row("reference fp32, best batch", 40, reference_best)
    if chosen:
        row(f"fast k={args.check_steps} end to end", 30, fast_check)
    if chosen and args.compile:
        row("bf16, torch.compile of synthesis and VGG trunk", 150,
            lambda: variant("bf16, torch.compile of synthesis and VGG trunk", compiled, False))
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    write(result, args.out)
    print(json.dumps({k: v for k, v in result.items() if k not in ("rows", "flop_table")}, indent=2))
    best = max((r for r in result["rows"] if "photos_per_s" in r), key=lambda r: r["photos_per_s"], default=None)
    if best is not None:
        print(f"best: {best['row']}: {best['photos_per_s']} photos/s "
              f"({'meets' if best['meets_target'] else 'misses'} the {TARGET_PHOTOS_PER_S:.2f} photos/s target)")
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--cpu-flops", action="store_true", help="count FLOPs on the CPU and print the arithmetic")
    ap.add_argument("--quick", action="store_true", help="with --cpu-flops: only the main step count")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for --cpu-flops (0: torch's default)")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--channel-base", type=int, default=32768)
    ap.add_argument("--channel-max", type=int, default=512)
    ap.add_argument("--mapping-layers", type=int, default=8)
    ap.add_argument("--perceptual-resize", type=int, default=256)
    ap.add_argument("--fast-steps", type=int, nargs="+", default=[0, 10, 20, 50])
    ap.add_argument("--check-steps", type=int, default=20, help="fast-method k measured end to end")
    ap.add_argument("--short", type=int, default=3, help="steps of the short timed run")
    ap.add_argument("--long", type=int, default=13, help="steps of the long timed run")
    ap.add_argument("--max-batch", type=int, default=256, help="cap on the bf16 batch from memory")
    ap.add_argument("--reference-max-batch", type=int, default=64, help="cap on the fp32 batch from memory")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of synthesis and VGG trunk")
    ap.add_argument("--no-unfused", dest="unfused", action="store_false",
                    help="skip the unfused-modulated-convolution row")
    ap.add_argument("--time-budget", type=float, default=450.0, help="seconds after which rows are skipped")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if not 1 <= args.short < args.long:
        ap.error("--short must be >= 1 and less than --long")
    if args.check_steps not in args.fast_steps:
        ap.error("--check-steps must be one of --fast-steps (its extrapolation is what it checks)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.cpu_flops:
        return cpu_flops(args)
    if not torch.cuda.is_available():
        print("skip: no CUDA device (this benchmark needs a GPU; --cpu-flops prints the FLOP arithmetic, "
              "benchmarks/projection_cpu.py measures the CPU)")
        return 0
    return gpu(args)


if __name__ == "__main__":
    sys.exit(main())
