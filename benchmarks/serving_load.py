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

Where a request's time goes: the server runs with serving.stage_timers on, and each level
reports CPU microseconds per request by stage from GET /v1/status (the event loop: HTTP,
JSON, auth, routing; the score thread: Feast read, DataFrame + predict, record building; the
commit thread: canonical JSON + sha256 + signature, SQLite insert + commit; the anchor
thread), beside the load generator's own CPU per request. The load generator is cheap on
purpose (it shares the machine's cores): raw asyncio streams on uvloop, requests built once,
and per response only the status line, Content-Length and score_id are parsed.
serving.score_log is off (one log line per score costs the event loop about a quarter of
its time; --score-log keeps it). --profile DIR also writes a cProfile of each server's
event loop thread there (FACESURV_PROFILE, see `facesurv serve`).

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

    from training.gates import GatePolicy
    from training.pipeline import train
    from training.registry import promote
    from training.tracking import ensure_tracking_store, tracking_uri_for

    quick = dataclasses.replace(
        params, training=dataclasses.replace(params.training, deepsurv_epochs=5, fusion_folds=2),
        evaluation=dataclasses.replace(params.evaluation, bootstrap=0),
        registry=dataclasses.replace(params.registry, require_contracts=False))  # a table no contract checked
    ensure_tracking_store(quick)
    uri = tracking_uri_for(quick, ws.mlflow_dir)
    train(df.drop(columns=["photo_id", "photo_taken_at", "record_known_at"]), params=quick, tracking_uri=uri,
          artifact_root=ws.mlflow_dir / "artifacts")
    r = quick.registry
    promote(tracking_uri=uri, model_name=r.model_name, policy=GatePolicy.from_params(quick),
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
    raw["serving"]["stage_timers"] = True
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


def set_serving(root: Path, **values: object) -> None:
    import yaml

    path = root / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["serving"].update(values)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int, log_path: Path, profile: Path | None = None) -> subprocess.Popen:
    env = {**_quiet_env(), "FACESURV_API_TOKENS": TOKEN, **({"FACESURV_PROFILE": str(profile)} if profile else {})}
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


def server_status(port: int) -> dict:
    """GET /v1/status: the batching counters and the stage timers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                  + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"GET /v1/status answered {head.splitlines()[0]!r}: {body[:300]!r}")
    return json.loads(body)


def score_requests(ids: list[str]) -> list[bytes]:
    """Each patient's whole request, built once: the generator's CPU is the server's loss."""
    out = []
    for pid in ids:
        body = json.dumps({"patient_id": pid}).encode()
        out.append(b"POST /v1/scores HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\n\r\n" + body)
    return out


def _content_length(head: bytes) -> int:
    at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
    return int(head[at + 17:head.index(b"\r\n", at + 2)])


async def _client(port: int, requests: list[bytes], offset: int, stop_at: float, out: list, errors: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i, n = offset, len(requests)
    clock = time.perf_counter
    try:
        while clock() < stop_at:
            req = requests[i % n]
            i += 1
            t0 = clock()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            payload = await reader.readexactly(_content_length(head))
            dt = clock() - t0
            status = int(head[9:12])  # "HTTP/1.1 200 OK"
            if status == 200:
                out.append((dt, json.loads(payload)["score_id"]))
            else:
                errors.append((status, payload[:200]))
    finally:
        writer.close()


async def _level(port: int, requests: list[bytes], clients: int, seconds: float) -> tuple[list, list, float]:
    out: list = []
    errors: list = []
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(_client(port, requests, k * 7919, stop_at, out, errors) for k in range(clients)))
    return out, errors, time.perf_counter() - start


def run_level(port: int, requests: list[bytes], clients: int, seconds: float) -> tuple[list, list, float, float]:
    """(200s as (seconds, score_id), errors, elapsed, this process's CPU seconds) of `clients` keep-alive
    clients for `seconds`, on uvloop when it is installed (it halves the generator's CPU)."""
    import resource

    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    ok, errors, elapsed = runner(_level(port, requests, clients, seconds))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return ok, errors, elapsed, cpu


def stage_breakdown(before: dict, after: dict, requests: int, loadgen_cpu_s: float) -> dict:
    """CPU microseconds per request by stage between two GET /v1/status answers."""
    b, a = before["stages"], after["stages"]

    def d(*path: str) -> float:
        x, y = a, b
        for k in path:
            x, y = x.get(k, 0.0), y.get(k, 0.0)
        return x - y

    per = 1e6 / max(1, requests)
    score, commit, anchor = d("score_thread_cpu_s"), d("commit_thread_cpu_s"), d("anchor_cpu_s")
    seal = d("ledger", "seal_sign_s")
    out = {
        "event_loop_http_json_auth_us": (d("process_cpu_s") - score - commit - anchor) * per,
        "feast_read_us": d("score", "feature_read_s") * per,
        "dataframe_predict_us": d("score", "predict_s") * per,
        "record_building_us": d("score", "records_s") * per,
        "score_thread_other_us": (score - d("score", "feature_read_s") - d("score", "predict_s")
                                  - d("score", "records_s")) * per,
        "canonical_json_sha256_sign_us": seal * per,
        "sqlite_insert_commit_us": (d("ledger", "ledger_append_s") - seal) * per,
        "commit_thread_other_us": (commit - d("ledger", "ledger_append_s")) * per,
        "anchor_us": anchor * per,
    }
    out["server_total_us"] = d("process_cpu_s") * per
    out["load_generator_us"] = loadgen_cpu_s * per
    return {k: round(v, 1) for k, v in out.items()}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def run_config(root: Path, ids: list[str], *, max_batch: int, levels: list[int], seconds: float,
               warmup: float, score_log: bool = False, profile_dir: Path | None = None) -> list[dict]:
    from serving.ledger import SQLiteLedger

    set_serving(root, max_batch=max_batch, score_log=score_log)
    port = free_port()
    profile = profile_dir / f"server-batch{max_batch}.prof" if profile_dir else None
    proc = start_server(root, port, root / f"server-batch{max_batch}.log", profile)
    requests = score_requests(ids)
    rows = []
    try:
        run_level(port, requests, 4, warmup)
        ledger = SQLiteLedger(root / "ledger.db")
        for clients in levels:
            before = ledger.count()
            s0 = server_status(port)
            ok, errors, elapsed, loadgen_cpu = run_level(port, requests, clients, seconds)
            s1 = server_status(port)
            b0, b1 = s0["batching"], s1["batching"]
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
                         "mean_batch_ms": round((b1["busy_s"] - b0["busy_s"]) / n_batches * 1000, 2),
                         "score_log": score_log,
                         "cpu_us_per_request": stage_breakdown(s0, s1, len(ok) + len(errors), loadgen_cpu)})
            print(json.dumps(rows[-1]), flush=True)
            if errors:
                print(f"  first error: {errors[0]}", flush=True)
        rep = ledger.verify()
        rows[-1]["ledger_verify_ok"] = rep.ok
        ledger.close()
    finally:
        proc.terminate()  # SIGTERM: uvicorn shuts down cleanly (the shutdown anchor, the profile)
        try:
            proc.wait(30)
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
    ap.add_argument("--score-log", action="store_true", help="keep serving.score_log on (a log line per score)")
    ap.add_argument("--profile", type=Path, default=None,
                    help="write a cProfile of each server's event loop thread to this folder")
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
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        common = {"levels": levels, "seconds": args.seconds, "warmup": args.warmup, "score_log": args.score_log,
                  "profile_dir": args.profile.resolve() if args.profile else None}
        rows = run_config(root, ids, max_batch=64, **common)
        if not args.no_baseline:
            rows += run_config(root, ids, max_batch=1, **common)
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
    stages = list(rows[0]["cpu_us_per_request"]) if rows else []
    print("\nCPU microseconds per request by stage (server: GET /v1/status stage timers; load generator: its "
          "own CPU)\n")
    print("| max_batch | clients | " + " | ".join(k.removesuffix("_us") for k in stages) + " |")
    print("|---|---|" + "---|" * len(stages))
    for r in rows:
        c = r["cpu_us_per_request"]
        print(f"| {r['max_batch']} | {r['clients']} | " + " | ".join(str(c[k]) for k in stages) + " |")
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
