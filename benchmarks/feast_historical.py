"""Point-in-time training set for the paper's cohort size (13,503 patients, 512-d latents).

    .venv/bin/python benchmarks/feast_historical.py [--patients 13503] [--scale]

Feast's get_historical_features (through features.store.training_set) is compared with a
baseline measured in the same run: a hand-written pandas merge_asof point-in-time join of
the same parquet rows, which has none of Feast's TTL handling, registry or row accounting.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
from feast_data import cohort, fill, machine, params


def pandas_baseline(repo: Path, p, ent: pd.DataFrame) -> tuple[float, int]:
    from features.store.offline import read_rows

    t0 = time.perf_counter()
    out = ent.sort_values("event_timestamp")
    for view, ts in (("clinical", "record_known_at"), ("face_latent", "photo_taken_at")):
        rows = read_rows(repo, p, view).sort_values(ts).drop(columns=["written_at"])
        out = pd.merge_asof(out, rows, left_on="event_timestamp", right_on=ts, by="patient_id",
                            direction="backward")
    n = int(out["latent"].notna().sum())
    return time.perf_counter() - t0, n


def main() -> None:
    import features.store as fs

    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=13503)
    ap.add_argument("--scale", action="store_true", help="PostgreSQL offline store instead of parquet")
    a = ap.parse_args()
    profile = "scale" if a.scale else "local"
    p = params(profile)
    repo = Path(tempfile.mkdtemp(prefix="feast-hist-"))
    clin = cohort(a.patients)
    try:
        store = fs.apply_repo(repo, p)
        t0 = time.perf_counter()
        fill(repo, p, clin)
        write_s = time.perf_counter() - t0
        ent = clin[["patient_id", "record_known_at", "time_days", "event"]].rename(
            columns={"record_known_at": "event_timestamp"})
        t0 = time.perf_counter()
        df, report = fs.training_set(repo, ent, p, store=store)
        feast_s = time.perf_counter() - t0
        ent_b = ent.assign(event_timestamp=pd.to_datetime(ent["event_timestamp"], utc=True).astype("datetime64[us, UTC]"))
        base_s, base_rows = pandas_baseline(repo, p, ent_b) if profile == "local" else (float("nan"), 0)
        print(json.dumps({
            "benchmark": "feast_historical", "machine": machine(), "profile": profile,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "patients": a.patients,
            "write_s": round(write_s, 2), "training_set_s": round(feast_s, 2),
            "rows_in": report.rows_in, "rows_out": report.rows_out, "unmatched": report.n_unmatched,
            "baseline_pandas_merge_asof_s": round(base_s, 2), "baseline_rows": base_rows,
        }, indent=1))
    finally:
        if profile == "scale":
            fs.teardown_repo(repo, p)


if __name__ == "__main__":
    main()
