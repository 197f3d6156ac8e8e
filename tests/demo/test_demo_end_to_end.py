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
    """A rendered cohort on a fixed seed. The signal is made strong and easy (s = 3 along the
    generator's most visible direction, a 16 px generator) so that a 200-patient cohort with a
    short projection still carries it: the science assertions below must hold, not merely run
    (at s = 2, 120 patients and 30 steps the embedding's CI was 0.465-0.622)."""
    out = tmp_path / "demo"
    out.mkdir()
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    # small enough for a test: few projection steps and bootstrap draws, short DeepSurv training
    raw["projection"]["steps"] = 50
    raw["evaluation"]["bootstrap"] = 100
    raw["training"]["deepsurv_epochs"] = 20
    raw["generator"].update({"resolution": 16, "channel_max": 16})
    raw["synth"].update({"strength": 3.0, "direction": "visible", "direction_samples": 16})
    (out / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    rc = main(["demo", "--out", str(out), "--patients", "200", "--seed", "1", "--rendered"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err[-3000:] + printed.out[-3000:]
    assert printed.err.splitlines()[0] == "cohort: rendered faces (--rendered)"  # the first line a user sees
    for stage in ("cohort", "nightly embedding flow", "train and promote flow", "oracle", "evaluation",
                  "scoring + audit", "grids", "report"):
        assert re.search(rf"^\s+{re.escape(stage)}\s+done\b", printed.out, re.M), stage

    report = out / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert (metrics["base"], metrics["patients"], metrics["seed"]) == ("gbsg2", 200, 1)
    assert metrics["cohort"] == {"kind": "rendered", "survival_seed": 1,
                                 "rung": "rendered, the generator's most visible direction in w (the easy case)"}
    for name in ("embedding_deepsurv", "embedding_coxph", "clinical_coxph", "clinical_deepsurv", "fusion",
                 "oracle_embedding", "oracle_fusion"):
        entry = metrics["models"][name]
        assert 0.0 <= entry["c_index"] <= 1.0 and len(entry["c_index_ci"]) == 2, name
    cross = metrics["crossfit"]["models"]
    assert metrics["crossfit"]["patients"] == 200 and set(metrics["ceiling"]) == {"face", "clinical", "total"}
    # the science: the embedding finds the planted signal, and fusing it in does not hurt
    lo, hi = cross["embedding_coxph"]["c_index"]["ci"]
    assert lo > 0.5, cross["embedding_coxph"]
    fusion, clinical = cross["fusion"]["c_index"], cross["clinical_coxph"]["c_index"]
    assert metrics["fusion_gain"]["ci"][1] >= 0, (fusion, clinical)
    assert fusion["value"] >= clinical["ci"][0]
    for key in ("retention", "retention_face", "fusion_gain", "ceiling_gain"):
        assert metrics[key]["value"] is not None and len(metrics[key]["ci"]) == 2, key
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


def test_demo_chooses_real_faces_only_where_a_face_folder_exists(tmp_path: Path, params) -> None:
    from facesurv.config import with_overrides
    from facesurv.workspace import Workspace
    from flows.demo import choose_faces

    ws = Workspace(tmp_path)
    faces = tmp_path / "faces"
    faces.mkdir()
    found, line = choose_faces(ws, with_overrides(params, demo={"faces": "faces"}), rendered=False)
    assert found == faces.resolve() and line.startswith("cohort: REAL FACES from")
    assert choose_faces(ws, with_overrides(params, demo={"faces": "faces"}), rendered=True)[0] is None
    found, line = choose_faces(ws, with_overrides(params, demo={"faces": "no/such/folder"}), rendered=False)
    assert found is None and "no labelled face folder at demo.faces = 'no/such/folder'" in line
