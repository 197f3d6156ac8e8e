"""Point-in-time training set for the paper's cohort size (13,503 patients, 512-d latents).

    .venv/bin/python benchmarks/feast_historical.py [--patients 13503] [--scale [--pg-database DB]]

Feast's get_historical_features (through features.store.training_set, in the offline store of
the profile: DuckDB over the parquet parts for local, PostgreSQL for --scale) is compared with a
baseline measured in the same run on the same rows: read the two views from the same offline
storage (parquet, or PostgreSQL for --scale) and join them with pandas merge_asof (backward, the
TTL as tolerance), which has none of Feast's registry or row accounting. `rows_agree` says whether
both gave every entity row the same record and photo.

--patients 135030 (10x the paper) is synthetic like the rest and written 20,000 patients a write,
so the run stays within a few GB of memory; `peak_rss_gb` reports it.

--pg-database runs the scale store in another database of the same server, e.g. one where
`ALTER DATABASE ... SET enable_nestloop = off` applies to every session (docs/features.md says
why Feast's PostgreSQL point-in-time query needs it); `pg_enable_nestloop` reports the setting.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
from feast_data import cohort, fill, machine, params

VIEWS = (("clinical", "record_known_at"), ("face_latent", "photo_taken_at"))


def merge_asof_baseline(repo: Path, p, ent: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """(seconds, joined frame): the views read from the profile's storage and joined by merge_asof."""
    from features.store.offline import read_rows

    t0 = time.perf_counter()
    out = ent.assign(event_timestamp=pd.to_datetime(ent["event_timestamp"], utc=True, format="ISO8601")
                     .astype("datetime64[ns, UTC]")).sort_values("event_timestamp")
    ttl = pd.Timedelta(days=p.features.ttl_days)
    for view, ts in VIEWS:
        rows = read_rows(repo, p, view)
        rows[ts] = pd.to_datetime(rows[ts], utc=True).astype("datetime64[ns, UTC]")
        # ties on the event time: the later write wins, as in Feast
        rows = rows.sort_values([ts, "written_at"], kind="stable").drop(columns=["written_at"])
        out = pd.merge_asof(out, rows, left_on="event_timestamp", right_on=ts, by="patient_id",
                            direction="backward", tolerance=ttl)
    return time.perf_counter() - t0, out


def agree(feast: pd.DataFrame, baseline: pd.DataFrame) -> bool:
    """Whether both joins gave each patient the same clinical record and photo (one row per patient)."""
    cols = ["patient_id", "age", "photo_id"]
    a = feast[cols].sort_values("patient_id").reset_index(drop=True)
    b = baseline.dropna(subset=["photo_id", "age"])[cols].sort_values("patient_id").reset_index(drop=True)
    return a.equals(b)


def pg_setting(p, name: str) -> str | None:
    if p.profile != "scale":
        return None
    from features.store.offline import _pg_connect

    with _pg_connect(p) as conn:  # a new session: shows what role and database settings give Feast's
        return str(conn.execute(f"SHOW {name}").fetchone()[0])


def main() -> None:
    import features.store as fs

    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=13503)
    ap.add_argument("--scale", action="store_true", help="PostgreSQL offline store instead of parquet + DuckDB")
    ap.add_argument("--pg-database", default=None, help="with --scale: this database instead of params.yaml's")
    a = ap.parse_args()
    if a.patients < 1:
        ap.error("--patients must be >= 1")
    if a.pg_database and not a.scale:
        ap.error("--pg-database needs --scale")
    profile = "scale" if a.scale else "local"
    p = params(profile, pg_database=a.pg_database)
    repo = Path(tempfile.mkdtemp(prefix="feast-hist-"))
    clin = cohort(a.patients)
    try:
        store = fs.apply_repo(repo, p)
        t0 = time.perf_counter()
        fill(repo, p, clin)
        write_s = time.perf_counter() - t0
        ent = clin[["patient_id", "record_known_at", "time_days", "event"]].rename(
            columns={"record_known_at": "event_timestamp"})
        del clin
        t0 = time.perf_counter()
        df, report = fs.training_set(repo, ent, p, store=store)
        feast_s = time.perf_counter() - t0
        t0 = time.perf_counter()  # again: without the first call's one-off imports and connections
        fs.training_set(repo, ent, p, store=store)
        again_s = time.perf_counter() - t0
        base_s, base = merge_asof_baseline(repo, p, ent)
        print(json.dumps({
            "benchmark": "feast_historical", "machine": machine(), "profile": profile,
            "offline_store": store.config.offline_store.type,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "patients": a.patients,
            "write_s": round(write_s, 2), "training_set_s": round(feast_s, 2),
            "training_set_again_s": round(again_s, 2),
            "rows_in": report.rows_in, "rows_out": report.rows_out, "unmatched": report.n_unmatched,
            "baseline_merge_asof_s": round(base_s, 2),
            "baseline_reads_from": "PostgreSQL" if a.scale else "parquet",
            "baseline_rows": int(base["latent"].notna().sum()), "rows_agree": agree(df, base),
            "pg_database": p.features.scale.postgres_db if a.scale else None,
            "pg_enable_nestloop": pg_setting(p, "enable_nestloop"),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        }, indent=1))
    finally:
        if profile == "scale":
            fs.teardown_repo(repo, p)
        shutil.rmtree(repo, ignore_errors=True)  # 135k latents are about 300 MB of parquet


if __name__ == "__main__":
    main()
