"""Load benchmark for id-based scoring: `facesurv serve` in one process, this load generator in another.

Set-up (once): a temporary workspace whose MLflow registry holds a small real champion
(scikit-survival CoxPH pyfunc, alias champion) and whose Feast online store (SQLite) holds
the gbsg2 cohort's clinical features, materialised with the features part's own functions.

For each server configuration (micro-batching on: serving.max_batch=64; the baseline, off:
max_batch=1) the script starts `facesurv serve --no-photo` on a loopback port and drives
POST /v1/scores with 1, 16 and 64 concurrent keep-alive clients for a fixed time each,
then reports p50/p90/p99 latency and throughput, and checks the ledger: every 200 response's
score_id is in it, the record count grew by exactly the number of 200s, and the chain
verifies.

    .venv/bin/python benchmarks/serving_load.py [--seconds 10] [--levels 1,16,64] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import machine  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"


def _quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    for k, v in (("DVC_NO_ANALYTICS", "1"), ("FEAST_USAGE", "False"), ("MLFLOW_DISABLE_TELEMETRY", "true"),
                 ("GX_ANALYTICS_ENABLED", "false"), ("DO_NOT_TRACK", "1"), ("TQDM_DISABLE", "1")):
        env.setdefault(k, v)
    return env


def register_training_champion(ws, params, df) -> None:
    """The training part's real served model (fusion of CoxPH/DeepSurv...), trained quickly and promoted."""
    import dataclasses

    from training.pipeline import train
    from training.registry import promote
    from training.tracking import ensure_tracking_store, tracking_uri_for

    quick = dataclasses.replace(
        params, training=dataclasses.replace(params.training, deepsurv_epochs=5, fusion_folds=2),
        evaluation=dataclasses.replace(params.evaluation, bootstrap=0))
    ensure_tracking_store(quick)
    uri = tracking_uri_for(quick, ws.mlflow_dir)
    train(df.drop(columns=["photo_id", "photo_taken_at", "record_known_at"]), params=quick, tracking_uri=uri,
          artifact_root=ws.mlflow_dir / "artifacts")
    r = quick.registry
    promote(tracking_uri=uri, model_name=r.model_name, metric=r.metric, margin=r.promote_margin,
            experiment=r.experiment, artifact_root=ws.mlflow_dir / "artifacts")


def prepare_workspace(root: Path, model: str = "reference") -> list[str]:
    """Champion in the workspace registry + clinical features in the online store; returns patient ids."""
    import yaml

    os.environ.update(_quiet_env())
    from ground.workspace import Workspace
    from tests.serving.reference_champion import cohort, register_reference_champion

    ws = Workspace.create(root)
    raw = yaml.safe_load(ws.params_path.read_text())
    raw["serving"]["rate_limit_per_minute"] = 10_000_000  # the benchmark measures scoring, not the limiter
    ws.params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    params = ws.load_params()
    import features.store as fs

    df = cohort()
    if model == "training":
        register_training_champion(ws, params, df)
    else:
        register_reference_champion(ws.mlflow_dir, model_name=params.registry.model_name)
    store = fs.apply_repo(ws.feature_repo_dir, params)
    fs.write_clinical(ws.feature_repo_dir, df, params)
    fs.materialize(ws.feature_repo_dir, params, store=store)
    return [str(p) for p in df["patient_id"]]


def set_max_batch(root: Path, max_batch: int) -> None:
    import yaml

    path = root / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["serving"]["max_batch"] = max_batch
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int, log_path: Path) -> subprocess.Popen:
    env = {**_quiet_env(), "FACESURV_API_TOKENS": TOKEN}
    cmd = [sys.executable, "-m", "facesurv", "serve", "--workspace", str(root), "--port", str(port), "--no-photo"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log_path}:\n{log_path.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if b" 200 " in s.recv(200):
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not become ready in 300 s")


def batching(port: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])["batching"]


async def _client(port: int, ids: list[str], offset: int, stop_at: float, out: list, errors: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.perf_counter() < stop_at:
            body = json.dumps({"patient_id": ids[i % len(ids)]}).encode()
            i += 1
            req = (b"POST /v1/scores HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\n\r\n" + body)
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            payload = await reader.readexactly(length)
            dt = time.perf_counter() - t0
            if status == 200:
                out.append((dt, json.loads(payload)["score_id"]))
            else:
                errors.append((status, payload[:200]))
    finally:
        writer.close()


async def run_level(port: int, ids: list[str], clients: int, seconds: float) -> tuple[list, list, float]:
    out: list = []
    errors: list = []
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(_client(port, ids, k * 7919, stop_at, out, errors) for k in range(clients)))
    return out, errors, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def run_config(root: Path, ids: list[str], *, max_batch: int, levels: list[int], seconds: float,
               warmup: float) -> list[dict]:
    from serving.ledger import SQLiteLedger

    set_max_batch(root, max_batch)
    port = free_port()
    proc = start_server(root, port, root / f"server-batch{max_batch}.log")
    rows = []
    try:
        asyncio.run(run_level(port, ids, 4, warmup))
        ledger = SQLiteLedger(root / "ledger.db")
        for clients in levels:
            before = ledger.count()
            b0 = batching(port)
            ok, errors, elapsed = asyncio.run(run_level(port, ids, clients, seconds))
            b1 = batching(port)
            n_batches = max(1, b1["batches"] - b0["batches"])
            lat = [d * 1000 for d, _ in ok]
            after = ledger.count()
            missing = sum(1 for _, sid in ok if ledger.get(sid) is None)
            rows.append({"max_batch": max_batch, "clients": clients, "requests": len(ok), "errors": len(errors),
                         "seconds": round(elapsed, 2), "throughput_rps": round(len(ok) / elapsed, 1),
                         "p50_ms": round(pct(lat, 50), 2), "p90_ms": round(pct(lat, 90), 2),
                         "p99_ms": round(pct(lat, 99), 2), "max_ms": round(max(lat), 2) if lat else None,
                         "ledger_new_records": after - before, "ledger_missing_scores": missing,
                         "mean_batch": round((b1["items"] - b0["items"]) / n_batches, 1),
                         "mean_batch_ms": round((b1["busy_s"] - b0["busy_s"]) / n_batches * 1000, 2)})
            print(json.dumps(rows[-1]), flush=True)
            if errors:
                print(f"  first error: {errors[0]}", flush=True)
        rep = ledger.verify()
        rows[-1]["ledger_verify_ok"] = rep.ok
        ledger.close()
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return rows


def component_costs(root: Path, ids: list[str]) -> list[dict]:
    """In-process cost of the two per-batch steps serving does not own: the champion's
    predict and the Feast online read (same batch sizes as the levels)."""
    from facesurv.components import components
    from ground.workspace import Workspace
    from serving.online import FeastFeatureReader
    from serving.scoring import load_champion

    ws = Workspace(root)
    params = ws.load_params()
    model = load_champion(params.registry.model_name, tracking_uri=components(ws, params).tracking_uri)
    reader = FeastFeatureReader(ws.feature_repo_dir, params)
    import pandas as pd

    rows = []
    for n in (1, 16, 64):
        batch = ids[:n]
        feats = reader(batch)
        frame = pd.DataFrame([f.values for f in feats])[model.input_columns or slice(None)]
        timings = {}
        for name, fn in (("feast_read_ms", lambda b=batch: reader(b)), ("predict_ms", lambda f=frame: model.predict(f))):
            fn()
            t0 = time.perf_counter()
            for _ in range(20):
                fn()
            timings[name] = round((time.perf_counter() - t0) / 20 * 1000, 2)
        rows.append({"batch": n, **timings})
        print(json.dumps(rows[-1]), flush=True)
    return rows



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each concurrency level")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--levels", default="1,16,64")
    ap.add_argument("--no-baseline", action="store_true", help="skip the max_batch=1 baseline run")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    ap.add_argument("--model", choices=("reference", "training"), default="reference",
                    help="reference: a light CoxPH pyfunc (measures serving itself); training: the training "
                         "part's fusion champion, trained quickly on gbsg2 and promoted")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    root = Path(tempfile.mkdtemp(prefix="facesurv-serving-bench-"))
    try:
        t0 = time.time()
        ids = prepare_workspace(root, args.model)
        print(f"workspace ready in {time.time() - t0:.0f} s: {root}", flush=True)
        components = component_costs(root, ids)
        rows = run_config(root, ids, max_batch=64, levels=levels, seconds=args.seconds, warmup=args.warmup)
        if not args.no_baseline:
            rows += run_config(root, ids, max_batch=1, levels=levels, seconds=args.seconds, warmup=args.warmup)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "model": args.model, "seconds_per_level": args.seconds, "rows": rows, "components": components}
    print("\n| max_batch | clients | requests | req/s | p50 ms | p90 ms | p99 ms | mean batch | ms per batch "
          "| errors | ledger +records | missing |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['max_batch']} | {r['clients']} | {r['requests']} | {r['throughput_rps']} | {r['p50_ms']} | "
              f"{r['p90_ms']} | {r['p99_ms']} | {r['mean_batch']} | {r['mean_batch_ms']} | {r['errors']} | "
              f"{r['ledger_new_records']} | {r['ledger_missing_scores']} |")
    print("\nin-process components (ms): " + "; ".join(
        f"batch {c['batch']}: Feast read {c['feast_read_ms']}, predict {c['predict_ms']}" for c in components))
    print(f"\nmachine: {result['machine']}; {result['date']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    bad = [r for r in rows if r["errors"] or r["ledger_missing_scores"] or r["ledger_new_records"] != r["requests"]
           or r.get("ledger_verify_ok") is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
