"""Materialisation throughput (rows/s into the online store), first load and a nightly increment.

    .venv/bin/python benchmarks/feast_materialize.py [--patients 13503] [--increment 300] [--scale]

Baselines in the same run: reading the same rows back from the offline store (the floor
any materialisation pays before writing the online store), and, for the nightly
increment, Feast's own event-time window (materialize from the earliest event time of the
new rows), which is what a late-arriving old photo otherwise costs.
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


def main() -> None:
    import features.store as fs
    from features.store.offline import read_rows

    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=13503)
    ap.add_argument("--increment", type=int, default=300)
    ap.add_argument("--scale", action="store_true", help="Redis online store (and PostgreSQL offline)")
    a = ap.parse_args()
    profile = "scale" if a.scale else "local"
    p = params(profile)
    repo = Path(tempfile.mkdtemp(prefix="feast-mat-"))
    clin = cohort(a.patients + a.increment)
    first, nightly = clin.iloc[:a.patients], clin.iloc[a.patients:]
    try:
        store = fs.apply_repo(repo, p)
        fill(repo, p, first)
        t0 = time.perf_counter()
        done = fs.materialize(repo, p, store=store)
        full_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_read = sum(len(read_rows(repo, p, v)) for v in ("face_latent", "clinical"))
        read_s = time.perf_counter() - t0
        fill(repo, p, nightly)
        t0 = time.perf_counter()
        inc = fs.materialize(repo, p, store=store)
        inc_s = time.perf_counter() - t0
        first_event = pd.to_datetime(nightly["photo_taken_at"], utc=True).min().to_pydatetime()
        t0 = time.perf_counter()
        store.materialize(start_date=first_event, end_date=dt.datetime.now(dt.UTC))
        window_s = time.perf_counter() - t0
        rows = sum(done.values())
        print(json.dumps({
            "benchmark": "feast_materialize", "machine": machine(), "profile": profile,
            "online_store": "sqlite" if profile == "local" else "redis",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "first_load": {"rows": rows, "s": round(full_s, 2), "rows_per_s": round(rows / full_s, 1)},
            "increment": {"rows": sum(inc.values()), "s": round(inc_s, 2),
                          "how": "latest row per patient with new rows, write_to_online_store"},
            "baseline_event_time_window": {"s": round(window_s, 2),
                                           "how": "Feast materialize from the new rows' earliest event time"},
            "baseline_offline_read": {"rows": n_read, "s": round(read_s, 2),
                                      "rows_per_s": round(n_read / read_s, 1)},
        }, indent=1))
    finally:
        if profile == "scale":
            fs.teardown_repo(repo, p)


if __name__ == "__main__":
    main()
