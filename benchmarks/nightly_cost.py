"""What a night costs: the nightly-embedding flow with 0, 8 and 32 new photos, on CPU.

Builds a throwaway workspace in a temporary folder (the repository's params.yaml, so the
workspace's projection settings are the defaults), delivers real UTKFace photos
(`../shared/utkface`, copied into the workspace's inbox, never into the repository) with
their clinical rows (gbsg2, as the flows tests deliver them), and runs the flow once per
night, each in a fresh process as a scheduled run is:

    first night (--first photos: creates the data repository, the feature store, ...)
    -> 0 new photos -> 8 new -> 32 new -> 0 new -> 16 new       (--counts 0,8,32,0,16)

Reported per night: the process's wall seconds, split into Python imports and the flow call
(Prefect's ephemeral API start included), and the flow's own phases (phases_s). A linear fit
over the nights after the first, wall seconds = fixed + per_photo x new photos, says what
grows with the new photos and what does not; since a night with photos pays fixed costs that a
night without any does not (loading the models, drawing the latent statistics, opening Feast),
the nights with photos are also fitted on their own: the cost is a step at 0, then a line. Prefect's ephemeral API start-up, a fixed
cost of every `facesurv flows run` without a server, is measured on its own (a flow that does
nothing, first call minus second call), as is the projection rate per core: photos/s per
torch thread at the workspace's projection settings (steps, batch, space, loss), on the
photos the runs aligned, with 1 thread and with every core (latent statistics excluded:
drawn once per process, reported as a fixed cost).

Usage: .venv/bin/python benchmarks/nightly_cost.py [--out FILE.json] [--counts 0,8,32,0,16]
           [--first 8] [--rate-photos 16] [--rate-repeats 2] [--before EARLIER.json] [--keep]
Prints a markdown table and writes the JSON (--out); docs/results/nightly-cost-*.json keeps
the measured figures with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
UTKFACE = REPO.parent / "shared" / "utkface"
MARK = "NIGHTLY_COST_JSON "
GIT_ENV = {"GIT_AUTHOR_NAME": "facesurv benchmark", "GIT_AUTHOR_EMAIL": "benchmark@facesurv.invalid",
           "GIT_COMMITTER_NAME": "facesurv benchmark", "GIT_COMMITTER_EMAIL": "benchmark@facesurv.invalid"}


# --- child processes: one night, Prefect's start-up, the projection rate --------------------------

def _emit(payload: dict[str, Any]) -> None:
    print(MARK + json.dumps(payload, default=str), flush=True)


def _configured(ws_root: str) -> tuple[Any, Any]:
    from flows import runtime
    from ground.workspace import Workspace

    ws = Workspace.resolve(ws_root)
    params = ws.load_params()
    runtime.configure(ws.prefect_home, params)
    return ws, params


def child_night(ws_root: str) -> None:
    t0 = time.perf_counter()
    _configured(ws_root)
    from flows.nightly_embedding import nightly_embedding

    t1 = time.perf_counter()
    summary = nightly_embedding(ws_root)
    t2 = time.perf_counter()
    _emit({"imports_s": t1 - t0, "flow_s": t2 - t1, "summary": summary})


def child_prefect(ws_root: str) -> None:
    """A flow that does nothing: its first call starts the ephemeral API, the second does not."""
    t0 = time.perf_counter()
    _configured(ws_root)
    from prefect import flow

    @flow(name="nightly-cost-empty")
    def empty() -> int:
        return 0

    t1 = time.perf_counter()
    empty()
    t2 = time.perf_counter()
    empty()
    t3 = time.perf_counter()
    _emit({"imports_s": t1 - t0, "first_call_s": t2 - t1, "second_call_s": t3 - t2})


def child_rate(ws_root: str, threads: int, photos: int, repeats: int) -> None:
    """photos/s of the workspace's projection on its aligned photos, with `threads` torch threads."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from embedding.project_batch import load_photo
    from facesurv.components import components
    from flows.embedding_steps import projection_inputs

    ws, params = _configured(ws_root)
    parts = components(ws, params)
    t0 = time.perf_counter()
    parts.generator(device=parts.device)
    t1 = time.perf_counter()
    proj = parts.projection()  # draws the latent statistics
    t2 = time.perf_counter()
    inputs = [p for p in projection_inputs(ws) if p.sha256][:photos]
    if not inputs:
        raise SystemExit("no aligned photo in the workspace to project")
    images = np.stack([load_photo(p.path, resolution=proj.G.img_resolution, root=p.root) for p in inputs])
    times = []
    for _ in range(repeats):  # the best of a few: other jobs on a shared machine only ever slow it down
        t3 = time.perf_counter()
        proj.run(images, [str(p.sha256) for p in inputs])
        times.append(time.perf_counter() - t3)
    _emit({"threads": torch.get_num_threads(), "photos": len(inputs), "generator_load_s": t1 - t0,
           "latent_stats_s": t2 - t1, "project_s": min(times), "project_s_all": times,
           "photos_per_s": len(inputs) / min(times), "device": parts.device})


# --- the parent: workspace, deliveries, runs, report -----------------------------------------------

def _run_child(args: list[str], env: dict[str, str], log: Path) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], env=env, cwd=REPO,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"=== {' '.join(args)} (exit {proc.returncode}, {wall:.1f} s)\n{proc.stdout}\n{proc.stderr}\n")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"child {' '.join(args)} failed (exit {proc.returncode}); see {log}")
    return json.loads(lines[-1][len(MARK):]), wall


class Deliveries:
    """Real UTKFace photos with gbsg2 clinical rows, dropped into the inbox night after night."""

    def __init__(self, ws_root: Path) -> None:
        from features.cohort import import_cohort

        self.inbox = ws_root / "inbox"
        self.photos = sorted(UTKFACE.glob("utk_*.jpg"))
        self.cohort = import_cohort("gbsg2", seed=0, admission_start="2012-01-01", admission_span_days=1460,
                                    record_lag_days=14)
        self.next = 0

    def deliver(self, n: int) -> list[str]:
        if self.next + n > min(len(self.photos), len(self.cohort)):
            raise SystemExit(f"not enough photos or patients for {n} more")
        rows = self.cohort.iloc[self.next:self.next + n]
        (self.inbox / "clinical").mkdir(parents=True, exist_ok=True)
        (self.inbox / "photos").mkdir(parents=True, exist_ok=True)
        if n:
            rows.to_csv(self.inbox / "clinical" / f"batch-{self.next:04d}.csv", index=False)
        ids = [str(x) for x in rows["photo_id"]]
        for i, pid in enumerate(ids):
            shutil.copyfile(self.photos[self.next + i], self.inbox / "photos" / f"{pid}.jpg")
        self.next += n
        return ids


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    import numpy as np

    if len(set(xs)) < 2:
        return {"fixed_s": float("nan"), "per_photo_s": float("nan"), "r2": float("nan")}
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (intercept + slope * x)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {"fixed_s": round(float(intercept), 2), "per_photo_s": round(float(slope), 3),
            "r2": round(1 - float((resid ** 2).sum()) / ss_tot, 3) if ss_tot else 1.0}


def markdown(result: dict[str, Any]) -> str:
    phases = sorted({k for r in result["runs"] for k in r["phases_s"]},
                    key=lambda k: [*result["phase_order"], k].index(k))
    head = ["night", "new photos", "aligned", "projected", "wall s", "imports s", "flow s", *phases]
    lines = [f"Machine: {result['machine']}; {result['date']}",
             f"Projection: {result['projection_settings']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["runs"]:
        cells = [r["night"], r["new_photos"], r["aligned"], r["projected"], f"{r['wall_s']:.1f}",
                 f"{r['imports_s']:.1f}", f"{r['flow_s']:.1f}", *(f"{r['phases_s'].get(p, 0):.1f}" for p in phases)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    f, p, fp = result["fit_wall"], result["prefect"], result["fit_wall_nights_with_photos"]
    lines += ["", f"Fit over the nights after the first: wall = {f['fixed_s']} s + {f['per_photo_s']} s x new photos "
                  f"(R^2 {f['r2']}); flow call alone: {result['fit_flow']['fixed_s']} s + "
                  f"{result['fit_flow']['per_photo_s']} s x new photos.",
              f"Nights with new photos only: wall = {fp['fixed_s']} s + {fp['per_photo_s']} s x new photos "
              f"(R^2 {fp['r2']}); nights with nothing new: {', '.join(f'{w:.1f}' for w in result['nothing_new_wall_s'])} s.",
              f"Prefect's ephemeral API start-up (first call of an empty flow minus the second): "
              f"{p['startup_s']:.1f} s; an empty flow run after it: {p['second_call_s']:.2f} s.", "",
              "| torch threads | photos | photos/s | photos/s per thread | latent statistics s | generator load s |",
              "|---|---|---|---|---|---|"]
    for r in result["projection_rate"]:
        lines.append(f"| {r['threads']} | {r['photos']} | {r['photos_per_s']:.3f} | {r['photos_per_s_per_thread']:.3f} "
                     f"| {r['latent_stats_s']:.1f} | {r['generator_load_s']:.1f} |")
    if "before" in result:
        b = result["before"]
        lines += ["", f"Before ({b.get('code') or 'earlier code'}; {b['date']}; {b['machine']}):",
                  "", "| night | new photos | wall s before | wall s now | flow s before | flow s now |",
                  "|---|---|---|---|---|---|"]
        for old, new in zip(b["runs"], result["runs"], strict=False):
            lines.append(f"| {new['night']} | {new['new_photos']} | {old['wall_s']:.1f} | {new['wall_s']:.1f} "
                         f"| {old['flow_s']:.1f} | {new['flow_s']:.1f} |")
        lines.append(f"| fit | fixed s + s/photo | {b['fit_wall']['fixed_s']} + {b['fit_wall']['per_photo_s']} "
                     f"| {result['fit_wall']['fixed_s']} + {result['fit_wall']['per_photo_s']} "
                     f"| {b['fit_flow']['fixed_s']} + {b['fit_flow']['per_photo_s']} "
                     f"| {result['fit_flow']['fixed_s']} + {result['fit_flow']['per_photo_s']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the JSON result here")
    ap.add_argument("--counts", default="0,8,32,0,16", help="new photos per night after the first")
    ap.add_argument("--first", type=int, default=8, help="photos of the first night")
    ap.add_argument("--rate-photos", type=int, default=16, help="photos projected for the per-core rate")
    ap.add_argument("--rate-repeats", type=int, default=2, help="projections timed per thread count (best kept)")
    ap.add_argument("--before", type=Path, help="an earlier result (other code) to show beside this one")
    ap.add_argument("--keep", action="store_true", help="keep the workspace (its path is printed)")
    ap.add_argument("--child-night", metavar="WS", help=argparse.SUPPRESS)
    ap.add_argument("--child-prefect", metavar="WS", help=argparse.SUPPRESS)
    ap.add_argument("--child-rate", metavar="WS", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if args.child_night:
        return child_night(args.child_night)
    if args.child_prefect:
        return child_prefect(args.child_prefect)
    if args.child_rate:
        return child_rate(args.child_rate, args.threads, args.rate_photos, args.rate_repeats)

    from machine import machine

    from ground.workspace import Workspace, code_version

    if not UTKFACE.is_dir():
        raise SystemExit(f"{UTKFACE} is missing: the benchmark delivers real photos from it")
    started = machine()
    tmp = Path(tempfile.mkdtemp(prefix="facesurv-nightly-cost-"))
    ws = Workspace.create(tmp / "ws")
    log = tmp / "children.log"
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in GIT_ENV.items()}}
    env.pop("FACESURV_KILL_AT", None)
    env.pop("PREFECT_API_URL", None)  # the ephemeral API, as `facesurv flows run` without a server
    params = ws.load_params()
    deliveries = Deliveries(ws.root)
    print(f"workspace {ws.root} (log: {log})", flush=True)

    prefect, _ = _run_child(["--child-prefect", str(ws.root)], env, log)
    prefect["startup_s"] = prefect["first_call_s"] - prefect["second_call_s"]
    print(f"Prefect ephemeral start-up: {prefect['startup_s']:.1f} s", flush=True)

    runs: list[dict[str, Any]] = []
    phase_order: list[str] = []
    counts = [args.first] + [int(c) for c in args.counts.split(",") if c.strip()]
    for night, n in enumerate(counts):
        deliveries.deliver(n)
        out, wall = _run_child(["--child-night", str(ws.root)], env, log)
        s = out["summary"]
        phase_order += [k for k in s["phases_s"] if k not in phase_order]
        todo = s.get("projection_todo") or {}
        runs.append({"night": "first" if night == 0 else str(night), "new_photos": n, "wall_s": round(wall, 2),
                     "imports_s": round(out["imports_s"], 2), "flow_s": round(out["flow_s"], 2),
                     "phases_s": s["phases_s"], "aligned": s["aligned"], "alignment_reused": s["alignment_reused"],
                     "projected": todo.get("pending", 0) if s["projection_batches"] else 0,
                     "projection_batches": s["projection_batches"], "latent_rows_written": s["latent_rows_written"],
                     "feature_store_unchanged": s.get("feature_store_unchanged"),
                     "data_repository_unchanged": s.get("data_repository_unchanged")})
        print(json.dumps(runs[-1]), flush=True)

    rate = []
    for threads in sorted({1, os.cpu_count() or 1}):
        r, _ = _run_child(["--child-rate", str(ws.root), "--threads", str(threads),
                           "--rate-photos", str(args.rate_photos), "--rate-repeats", str(args.rate_repeats)], env, log)
        r["photos_per_s_per_thread"] = r["photos_per_s"] / r["threads"]
        rate.append({k: round(v, 3) if isinstance(v, float) else [round(x, 3) for x in v] if isinstance(v, list)
                     else v for k, v in r.items()})
        print(json.dumps(rate[-1]), flush=True)

    later = runs[1:]
    with_photos = [r for r in later if r["new_photos"]]
    pp = params.projection
    result = {
        "benchmark": "benchmarks/nightly_cost.py",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": started,
        "load_average_at_end": round(os.getloadavg()[0], 1),
        "code": code_version(),
        "cores": os.cpu_count(),
        "photos": "UTKFace (shared/utkface), raw 200x200 JPEGs aligned by the flow; gbsg2 clinical rows",
        "projection_settings": {"steps": pp.steps, "batch_size": pp.batch_size, "space": pp.space, "loss": pp.loss,
                                "w_avg_samples": pp.w_avg_samples, "batch_multiple": pp.batch_multiple,
                                "generator": "random-init stand-in" if params.generator.checkpoint is None
                                else str(params.generator.checkpoint),
                                "resolution": params.generator.resolution, "device": pp.device},
        "align_workers": params.align.workers,
        "prefect": {k: round(v, 2) for k, v in prefect.items()},
        "phase_order": phase_order,
        "runs": runs,
        "fit_wall": linear_fit([r["new_photos"] for r in later], [r["wall_s"] for r in later]),
        "fit_flow": linear_fit([r["new_photos"] for r in later], [r["flow_s"] for r in later]),
        # a night with photos pays fixed costs a night without them does not (models, statistics,
        # Feast): cost is a step at 0, then a line
        "fit_wall_nights_with_photos": linear_fit([r["new_photos"] for r in with_photos],
                                                  [r["wall_s"] for r in with_photos]),
        "nothing_new_wall_s": [r["wall_s"] for r in later if not r["new_photos"]],
        "projection_rate": rate,
    }
    if args.before:
        before = json.loads(args.before.read_text(encoding="utf-8"))
        result["before"] = {k: before.get(k) for k in ("date", "machine", "code", "prefect", "runs", "fit_wall",
                                                        "fit_flow")}
    text = markdown(result)
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {args.out}")
    if args.keep:
        print(f"workspace kept: {ws.root}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
