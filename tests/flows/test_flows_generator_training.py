"""The generator-training flow: one task around the engine, a lineage record, promotion on request."""

from __future__ import annotations

import json

from tests.generator.test_generator_registry import _gen_ws


def test_flow_trains_registers_promotes_and_records_lineage(prefect_api, tmp_path):
    from flows.generator_training import generator_training
    from flows.lineage import read_latest

    ws = _gen_ws(tmp_path / "ws")
    summary = generator_training(str(ws.root), kimg=0.016, promote=True)
    assert summary["version"] == "1" and summary["promoted"]["alias"] == "champion"
    assert summary["promoted"]["previous"] is None and not summary["promoted"]["uses_alias"]
    record = read_latest(ws.artifacts_dir, "generator-training")
    assert record["status"] == "completed" and record["outputs"]["sha256"] == summary["sha256"]
    assert record["data_rev"].startswith("none")  # a folder outside the data repository, said so
    assert json.loads(json.dumps(record))["outputs"]["parent"] == "none (from scratch)"
