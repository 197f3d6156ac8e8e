"""`facesurv demo` on a tiny cohort: every stage runs for real and the report is complete."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from facesurv.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_the_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    # small enough for a test: few projection steps and bootstrap draws, short DeepSurv training
    raw["projection"]["steps"] = 15
    raw["evaluation"]["bootstrap"] = 10
    raw["training"]["deepsurv_epochs"] = 20
    (out / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    rc = main(["demo", "--out", str(out), "--patients", "64", "--seed", "1"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err[-3000:] + printed.out[-3000:]
    for stage in ("cohort", "nightly embedding flow", "train and promote flow", "oracle", "scoring + audit",
                  "grids", "report"):
        assert re.search(rf"^\s+{re.escape(stage)}\s+done\b", printed.out, re.M), stage

    report = out / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert (metrics["base"], metrics["patients"], metrics["seed"]) == ("gbsg2", 64, 1)
    for name in ("embedding_deepsurv", "embedding_coxph", "clinical_coxph", "clinical_deepsurv", "fusion",
                 "oracle_embedding", "oracle_fusion"):
        entry = metrics["models"][name]
        assert 0.0 <= entry["c_index"] <= 1.0 and len(entry["c_index_ci"]) == 2, name
    assert metrics["retention"] is None or isinstance(metrics["retention"], float)
    assert metrics["total_s"] > 0 and "nightly embedding flow" in metrics["stages_s"]
    nightly_parts = metrics["stage_parts_s"]["nightly embedding flow"]
    assert {"alignment", "projection", "Feast writes"} <= set(nightly_parts)
    assert sum(nightly_parts.values()) <= metrics["stages_s"]["nightly embedding flow"]
    assert metrics["generator_is_random_init"] is True

    html = (report / "index.html").read_text()
    images = re.findall(r"<img src='([^']+)'", html)
    assert len(images) >= 6
    assert all((report / src).is_file() for src in images)
    assert "random-init stand-in" in html and "stand-in: the shift-tolerant LPIPS" in html

    # the workspace stays usable: its ledger verifies from the CLI
    assert main(["audit", "verify", "--workspace", str(out)]) == 0
    shutil.rmtree(out / ".prefect", ignore_errors=True)
