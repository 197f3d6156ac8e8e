"""One row per data contract over every run saved in a workspace (features.contracts.summarize_runs)."""

from __future__ import annotations

import json
from pathlib import Path

from features.contracts import summarize_runs


def test_runs_of_one_contract_are_summed(tmp_path: Path) -> None:
    for i, (kind, rows, failing) in enumerate([("latents", 32, 0), ("latents", 10, 2), ("clinical", 5, 0)]):
        d = tmp_path / "contracts" / kind / str(i)
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"summary": {"kind": kind, "rows": rows, "failing": failing,
                                                                "passed": failing == 0}}))
    (tmp_path / "contracts" / "broken").mkdir()
    (tmp_path / "contracts" / "broken" / "results.json").write_text("{not json")  # skipped, not fatal
    got = {r["name"]: r for r in summarize_runs(tmp_path)}
    assert got["latents"] == {"name": "latents", "rows": 42, "valid": 40, "quarantined": 2, "passed": False}
    assert got["clinical"] == {"name": "clinical", "rows": 5, "valid": 5, "quarantined": 0, "passed": True}
    assert set(got) == {"latents", "clinical"}
