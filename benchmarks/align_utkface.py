"""Alignment of tightly cropped real faces (UTKFace): kept rate overall, per sex, per race group; s/photo.

    .venv/bin/python benchmarks/align_utkface.py --faces ../shared/utkface [--limit N] [--workers 1] \\
        [--set KEY=VALUE ...] [--out utkface.json]

Aligns the first N photos of the folder (sorted by file name; default all) with the platform's
batch aligner (`embedding.align.align_directory`, as `facesurv align` runs it) and the `align`
options of params.yaml, into a temporary folder that is deleted afterwards: the photos are
linked there, never copied (UTKFace is for non-commercial research only; keep it out of the
repository). `labels.csv` beside the photos gives sex and race_group for the per-group rates.
--set overrides an align option for this run; the aligner as it was before tight crops were
handled is `--set detect_pad=0 --set fallback_detector=none --set supersample_enlarged=true`.

Seconds per photo are wall-clock and CPU seconds of the whole batch (decode, detection,
landmarks, FFHQ crop, PNG encode and write) divided by the number of photos, models loaded
and hashed beforehand. Prints Markdown for docs/alignment.md; --out also writes JSON.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import datetime as dt
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import machine  # noqa: E402

from embedding.align import IMAGE_EXTENSIONS, AlignConfig, Aligner, ModelSet, align_directory  # noqa: E402


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _option(text: str, config: AlignConfig) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    fields = {f.name: f for f in dataclasses.fields(AlignConfig)}
    if not sep or key not in fields:
        raise SystemExit(f"--set {text!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}")
    current = getattr(config, key)
    if raw.lower() in ("none", "null") and current is None:
        return key, None
    if isinstance(current, bool):
        if raw.lower() not in ("true", "false"):
            raise SystemExit(f"--set {text!r}: {key} is true or false")
        return key, raw.lower() == "true"
    try:
        if isinstance(current, int):
            return key, int(raw)
        if isinstance(current, float):
            return key, float(raw)
    except ValueError:
        raise SystemExit(f"--set {text!r}: {key} is a number") from None
    return key, raw


def load_config(overrides: list[str]) -> AlignConfig:
    from ground.config import load_params

    config = AlignConfig.from_object(load_params(REPO / "params.yaml").align)
    return dataclasses.replace(config, **dict(_option(o, config) for o in overrides))


def read_labels(faces: Path) -> dict[str, dict[str, str]]:
    path = faces / "labels.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["file"]: row for row in csv.DictReader(fh)}


def rates(rows: list[dict[str, str]], labels: dict[str, dict[str, str]]) -> dict[str, dict[str, dict[str, float]]]:
    """{'all': {'all': cell}, 'sex': {'F': cell, ...}, 'race_group': {...}}; cell = photos, kept, rate."""
    groups: dict[str, dict[str, list[bool]]] = {"all": {"all": []}, "sex": {}, "race_group": {}}
    for row in rows:
        kept = row["status"] == "aligned"
        label = labels.get(Path(row["source_path"]).name, {})
        groups["all"]["all"].append(kept)
        for key in ("sex", "race_group"):
            groups[key].setdefault(label.get(key) or "unlabelled", []).append(kept)
    return {key: {name: {"photos": len(v), "kept": sum(v), "rate": sum(v) / len(v) if v else 0.0}
                  for name, v in sorted(cells.items())} for key, cells in groups.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "utkface",
                    help="folder of UTKFace photos with labels.csv (default ../shared/utkface)")
    ap.add_argument("--limit", type=int, default=None, help="the first N photos by file name (default all)")
    ap.add_argument("--workers", type=int, default=1, help="processes (1: in this process; default 1)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override an align option of params.yaml (repeatable)")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()

    photos = sorted(p for p in args.faces.iterdir()
                    if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    photos = photos[: args.limit] if args.limit is not None else photos
    if not photos:
        raise SystemExit(f"{args.faces}: no photos")
    labels = read_labels(args.faces)
    config = load_config(args.overrides)
    models = ModelSet.resolve(config)                                # hashed here, not in the timed run
    aligner = Aligner(config, models) if args.workers <= 1 else None  # models loaded here too

    started = dt.datetime.now(dt.UTC)
    meta = {"machine": machine(), "date": f"{started:%Y-%m-%d %H:%M} UTC", "python": platform.python_version(),
            "faces": str(args.faces), "photos": len(photos), "workers": args.workers,
            "overrides": args.overrides, "config": dataclasses.asdict(config)}
    with tempfile.TemporaryDirectory(prefix="align-utkface-") as tmp:
        in_dir, out_dir = Path(tmp) / "in", Path(tmp) / "out"
        in_dir.mkdir()
        for p in photos:
            (in_dir / p.name).symlink_to(p.resolve())
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        result = align_directory(in_dir, out_dir, config=config, workers=args.workers, models=models,
                                 aligner=aligner)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    n = len(result.rows)
    table = rates(result.rows, labels)
    found_by = collections.Counter(r["detector"] for r in result.rows if r["status"] == "aligned")
    reasons = collections.Counter(r["reason"] for r in result.rows if r["status"] != "aligned")
    figures = {**meta, "rates": table, "wall_s": wall, "cpu_s": cpu, "wall_s_per_photo": wall / n,
               "cpu_s_per_photo": cpu / n, "found_by": dict(found_by), "quarantined": dict(reasons),
               "per_photo": [{"file": Path(r["source_path"]).name, "status": r["status"], "reason": r["reason"],
                              "detector": r["detector"]} for r in result.rows]}

    print(f"machine: {meta['machine']}")
    print(f"date: {meta['date']}; python {meta['python']}")
    print(f"photos: the first {n} of {args.faces} by file name; workers {args.workers}; output "
          f"{config.output_size}px via {config.transform_size}px (supersample_enlarged {config.supersample_enlarged}); "
          f"detector {config.detector} upsample {config.upsample}, detect_pad {config.detect_pad:g}, "
          f"fallback {config.fallback_detector}" + (f"; overrides {' '.join(args.overrides)}" if args.overrides else ""))
    print()
    print("| group | photos | kept | kept rate |")
    print("|---|---|---|---|")
    for key, cells in table.items():
        for name, c in cells.items():
            label = "all" if key == "all" else f"{key} {name}"
            print(f"| {label} | {c['photos']} | {c['kept']} | {100 * c['rate']:.1f}% |")
    print()
    print(f"seconds per photo: {wall / n:.3f} wall, {cpu / n:.3f} CPU ({n} photos in {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU, {args.workers} worker(s))")
    print("found by: " + ", ".join(f"{k} {v}" for k, v in sorted(found_by.items())))
    print("quarantined: " + (", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none"))
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
