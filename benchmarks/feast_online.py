"""Online read latency of one patient's prognosis_v1 (512-d latent + clinical): SQLite vs Redis.

    .venv/bin/python benchmarks/feast_online.py [--patients 2000] [--reads 500]

Redis needs the server of infra/README.md; without it only SQLite is measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
from feast_data import cohort, fill, machine, params


def measure(profile: str, n_patients: int, reads: int) -> dict:
    import features.store as fs

    p = params(profile)
    repo = Path(tempfile.mkdtemp(prefix=f"feast-online-{profile}-"))
    clin = cohort(n_patients)
    try:
        store = fs.apply_repo(repo, p)
        fill(repo, p, clin)
        fs.materialize(repo, p, store=store)
        service = store.get_feature_service(p.features.feature_service)
        rng = np.random.default_rng(0)
        ids = clin["patient_id"].to_numpy()[rng.integers(0, n_patients, reads + 20)]
        lat = []
        for i, pid in enumerate(ids):
            t0 = time.perf_counter()
            resp = store.get_online_features(features=service, entity_rows=[{"patient_id": pid}]).to_dict()
            elapsed = time.perf_counter() - t0
            assert len(resp["latent"][0]) == 512
            if i >= 20:  # warm-up reads excluded
                lat.append(elapsed * 1000)
        lat_arr = np.asarray(lat)
        return {"store": "sqlite" if profile == "local" else "redis", "patients": n_patients, "reads": reads,
                "p50_ms": round(float(np.percentile(lat_arr, 50)), 2),
                "p99_ms": round(float(np.percentile(lat_arr, 99)), 2),
                "mean_ms": round(float(lat_arr.mean()), 2)}
    finally:
        if profile == "scale":
            fs.teardown_repo(repo, p)


def redis_up(p) -> bool:
    host, _, port = p.features.scale.redis_connection.split(",")[0].partition(":")
    try:
        socket.create_connection((host, int(port or 6379)), timeout=2).close()
        return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--reads", type=int, default=500)
    a = ap.parse_args()
    results = [measure("local", a.patients, a.reads)]
    if redis_up(params("local")):
        results.append(measure("scale", a.patients, a.reads))
    print(json.dumps({"benchmark": "feast_online", "machine": machine(),
                      "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "results": results}, indent=1))


if __name__ == "__main__":
    main()
