"""The server as `facesurv serve` builds it, under real uvicorn, with concurrent clients."""

from __future__ import annotations

import concurrent.futures
import dataclasses

import httpx
import pytest

from ground.errors import ConfigError
from tests.serving.conftest import TOKEN, live_server


def test_wiring_scale_profile_has_no_default_token(champion_registry, params):
    from serving.wiring import load_tokens

    ws = champion_registry.workspace
    scale = dataclasses.replace(params, profile="scale")
    with pytest.raises(ConfigError, match="the scale profile has no default token"):
        load_tokens(ws, scale, env={})
    store, generated = load_tokens(ws, scale, env={"FACESURV_API_TOKENS": TOKEN})
    assert generated is None and store.authenticate(TOKEN).name == "env-1"
    store, generated = load_tokens(ws, params, env={})  # local: one made for this run
    assert generated and store.authenticate(generated).name == "generated"


def test_wiring_ledger_target_per_profile(champion_registry, params):
    from serving.wiring import ledger_target

    ws = champion_registry.workspace
    assert ledger_target(ws, params) == str(ws.ledger_path)
    assert ledger_target(ws, dataclasses.replace(params, profile="scale")) == \
        "postgresql://postgres@127.0.0.1:5432/test"


def test_live_server_concurrent_clients_one_unbroken_chain(champion_registry, feature_reader, params):
    from facesurv.components import build_server

    ws = champion_registry.workspace
    server = build_server(ws, params, env={"FACESURV_API_TOKENS": TOKEN}, read_features=feature_reader,
                          photo_scoring=False)
    before = server.ledger.count()
    ids = [f"gbsg2-{i:05d}" for i in range(1, 41)]
    with live_server(server.app) as base:
        def call(pid):
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
                return [c.post("/v1/scores", json={"patient_id": pid}) for _ in range(3)]

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            responses = [r for rs in pool.map(call, ids) for r in rs]
        ready = httpx.get(f"{base}/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert [r.status_code for r in responses] == [200] * 120
    score_ids = {r.json()["score_id"] for r in responses}
    assert len(score_ids) == 120
    assert server.ledger.count() - before == 120
    assert all(server.ledger.get(s) is not None for s in score_ids)
    rep = server.ledger.verify()
    assert rep.ok, rep.problems
    assert ready["batching"]["items"] == 120
    assert ready["model"]["run_id"] and server.model.startswith("facesurv-prognosis v1")
