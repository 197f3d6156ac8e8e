"""`facesurv serve` as a user runs it: a separate process, a generated local token, the API up."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_facesurv_serve_starts_prints_token_and_serves(champion_registry, repo_root, tmp_path):
    src = champion_registry.workspace
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copyfile(src.params_path, ws / "params.yaml")
    shutil.copytree(src.mlflow_dir, ws / "mlflow")  # no feature repo here: id scoring answers 503
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("FACESURV_API_TOKENS", "FACESURV_WORKSPACE")}
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "facesurv", "serve", "--workspace", str(ws), "--port", str(port),
                             "--no-photo"], cwd=repo_root, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "facesurv serve did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        text = log.read_text()
        token = re.search(r"export FACESURV_TOKEN=(\S+)", text).group(1)
        assert "curl -s" in text and f"http://127.0.0.1:{port}/v1/scores" in text
        assert "no feature repo" in text
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 503 and "model" not in ready.json()
        r = httpx.post(f"http://127.0.0.1:{port}/v1/scores", json={"patient_id": "gbsg2-00001"},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 503 and "no online feature store" in r.json()["error"]["message"]
        bad = httpx.post(f"http://127.0.0.1:{port}/v1/scores", json={"patient_id": "gbsg2-00001"},
                         headers={"Authorization": "Bearer not-the-token-0000000"}, timeout=30)
        assert bad.status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)


def test_facesurv_profile_switch_writes_a_profile_when_the_server_returns(tmp_path):
    import pstats

    from facesurv.cli.serve_cmd import profiled

    out = tmp_path / "prof" / "serve.prof"

    def serve():
        sorted(range(10_000), key=lambda x: -x)

    profiled(serve, out)
    assert any("serve" in fn for _file, _line, fn in pstats.Stats(str(out)).stats)
