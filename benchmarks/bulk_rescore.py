"""Re-scoring every patient after a promotion: bulk online reads and `rescore_all`, SQLite vs Redis.

    .venv/bin/python benchmarks/bulk_rescore.py [--patients 10000] [--sample 500] [--chunk 1000] [--json out.json]

For each online store (SQLite; Redis, with the scale profile's PostgreSQL offline store, when the
server of infra/README.md is up) on a cohort of --patients (benchmarks/feast_data.py), in one run:

  (a) one-at-a-time: FeastFeatureReader([id]) (what one API request does) for --sample ids drawn
      at random, after 20 warm-up reads; the total for every patient is the mean x patients
      (extrapolated, and marked so);
  (b) bulk: FeastFeatureReader(all ids) (best of --repeats), then one profiled bulk read that says
      where the time goes: Feast's store read (OnlineStore.online_read), Feast's response building,
      and our conversion of the response into OnlineFeatures. The shares come from cProfile, which
      slows Python-heavy parts more than others: read them as proportions, not seconds;
  (c) serving.bulk.rescore_all over every patient with a small real champion (the serving tests'
      scikit-survival CoxPH pyfunc in a real MLflow registry), records signed and appended to a SQLite
      ledger, with its split: read / predict / record / ledger.

Prints one JSON document with the machine and date.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from feast_data import REPO, cohort, fill, machine, params
from feast_online import redis_up

sys.path.insert(0, str(REPO))

TARGET_S = 2.0
# (label, function name, file suffix) whose cumulative time a profiled bulk read reports
PROFILED = (("feast_get_online_features", "get_online_features", "feast/infra/online_stores/online_store.py"),
            ("feast_store_read", "online_read", "feast/infra/online_stores/sqlite.py"),
            ("feast_store_read", "_read_hash_fields", "feast/infra/online_stores/redis.py"),
            ("feast_store_read", "_convert_redis_values_to_protobuf", "feast/infra/online_stores/redis.py"),
            ("feast_response_build", "_populate_response_from_feature_data", "feast/utils.py"),
            ("our_proto_to_columns", "_column", "serving/online.py"),
            ("reader_total", "__call__", "serving/online.py"))


def _store(profile: str, n: int, root: Path):
    import features.store as fs

    p = params(profile)
    repo = root / f"repo-{profile}"
    clin = cohort(n)
    store = fs.apply_repo(repo, p)
    t0 = time.perf_counter()
    fill(repo, p, clin)
    fs.materialize(repo, p, store=store)
    return p, repo, store, [str(x) for x in clin["patient_id"]], time.perf_counter() - t0


def one_at_a_time(reader, ids: list[str], sample: int) -> dict:
    rng = np.random.default_rng(0)
    picks = [ids[i] for i in rng.integers(0, len(ids), sample + 20)]
    lat = []
    for i, pid in enumerate(picks):
        t0 = time.perf_counter()
        (feats,) = reader([pid])
        elapsed = time.perf_counter() - t0
        assert feats is not None and len(feats.values["latent"]) == 512
        if i >= 20:
            lat.append(elapsed)
    arr = np.asarray(lat)
    return {"reads": sample, "p50_ms": round(float(np.percentile(arr, 50)) * 1000, 3),
            "p99_ms": round(float(np.percentile(arr, 99)) * 1000, 3), "mean_ms": round(float(arr.mean()) * 1000, 3),
            "all_patients_s": round(float(arr.mean()) * len(ids), 2),
            "all_patients_is": "extrapolated" if sample < len(ids) else "measured"}


def bulk(reader, ids: list[str], repeats: int) -> dict:
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = reader(ids)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    assert len(out) == len(ids) and all(f is not None for f in out)
    best = min(walls)
    return {"patients": len(ids), "chunk": reader.chunk, "wall_s": [round(w, 3) for w in walls],
            "best_s": round(best, 3), "cpu_s_best": round(min(cpus), 3), "target_s": TARGET_S,
            "meets_target": best <= TARGET_S}


def where_time_goes(reader, ids: list[str]) -> dict:
    prof = cProfile.Profile()
    prof.enable()
    reader(ids)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    cum: dict[str, float] = {}
    for (file, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.items():
        for label, fn, suffix in PROFILED:
            if name == fn and file.endswith(suffix):
                cum[label] = cum.get(label, 0.0) + ct
    total = cum.get("reader_total") or 1.0
    shares = {k: round(v / total, 3) for k, v in cum.items() if k != "reader_total"}
    gof = cum.get("feast_get_online_features", 0.0)
    shares["feast_other"] = round(max(0.0, gof - cum.get("feast_store_read", 0.0)
                                      - cum.get("feast_response_build", 0.0)) / total, 3)
    shares["our_rows_to_online_features"] = round(
        max(0.0, total - gof - cum.get("our_proto_to_columns", 0.0)) / total, 3)
    return {"profiled_reader_s": round(total, 3), "shares_of_reader": shares}


def rescore(p, repo: Path, store, ids: list[str], root: Path, chunk: int) -> dict:
    from ground.workspace import code_version
    from serving.anchor import anchor_settings
    from serving.bulk import rescore_all
    from serving.ledger import open_ledger
    from serving.online import FeastFeatureReader
    from serving.scoring import LineageContext, Scorer, dvc_photo_version, load_champion
    from tests.serving.reference_champion import register_reference_champion

    reg = root / "mlflow"
    if not (reg / "mlflow.db").exists():
        register_reference_champion(reg, model_name=p.registry.model_name)
    model = load_champion(p.registry.model_name, tracking_uri=f"sqlite:///{reg / 'mlflow.db'}")
    ctx = LineageContext(code_version=code_version(REPO), params_hash=p.params_hash,
                         photo_data=dvc_photo_version(root / "data"))
    scorer = Scorer(model=model, read_features=FeastFeatureReader(repo, p, store=store), context=ctx)
    led_root = root / f"ledger-{p.profile}"
    led_root.mkdir()
    ledger = open_ledger(led_root / "ledger.db", anchoring=anchor_settings(SimpleNamespace(root=led_root), p))
    try:
        summary = rescore_all(scorer, ledger, ids, chunk=chunk, requested_by="benchmark")
        verified = ledger.verify().ok
        count = ledger.count()
    finally:
        ledger.close()
    d = summary.to_dict()
    d.pop("failures")
    return {**d, "chunk": chunk, "ledger": "sqlite, signed (Ed25519), anchored every "
            f"{p.serving.anchor_every}", "ledger_records": count, "ledger_verifies": verified,
            "patients_per_s": round(summary.scored / summary.seconds, 1) if summary.seconds else None}


def measure(profile: str, a: argparse.Namespace, root: Path) -> dict:
    import features.store as fs
    from serving.online import FeastFeatureReader

    p, repo, store, ids, fill_s = _store(profile, a.patients, root)
    try:
        reader = FeastFeatureReader(repo, p, store=store, chunk=a.read_chunk or len(ids))
        reader(ids[:10])  # the registry and the connection, once
        row = {"store": "sqlite" if profile == "local" else "redis", "patients": len(ids),
               "fill_and_materialize_s": round(fill_s, 1),
               "one_at_a_time": one_at_a_time(reader, ids, min(a.sample, len(ids))),
               "bulk_read": bulk(reader, ids, a.repeats)}
        row["bulk_read"]["speedup_vs_one_at_a_time"] = round(
            row["one_at_a_time"]["all_patients_s"] / row["bulk_read"]["best_s"], 1)
        row["bulk_read"]["where_time_goes"] = where_time_goes(reader, ids)
        row["rescore_all"] = rescore(p, repo, store, ids, root, a.chunk)
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row
    finally:
        if profile == "scale":
            fs.teardown_repo(repo, p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=10_000)
    ap.add_argument("--sample", type=int, default=500, help="one-at-a-time reads measured (then extrapolated)")
    ap.add_argument("--chunk", type=int, default=1000, help="rescore_all's patients per read/predict/commit")
    ap.add_argument("--read-chunk", type=int, default=None,
                    help="FeastFeatureReader's patients per get_online_features call (default: its READ_CHUNK)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the document here")
    a = ap.parse_args()
    if a.read_chunk is None:
        from serving.online import READ_CHUNK

        a.read_chunk = READ_CHUNK
    root = Path(tempfile.mkdtemp(prefix="bulk-rescore-"))
    results = [measure("local", a, root)]
    if redis_up(params("local")):
        results.append(measure("scale", a, root))
    doc = {"benchmark": "bulk_rescore", "machine": machine(),
           "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "settings": {"patients": a.patients, "sample": a.sample, "chunk": a.chunk, "read_chunk": a.read_chunk,
                        "repeats": a.repeats}, "results": results}
    text = json.dumps(doc, indent=1)
    if a.json:
        a.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
