from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.report import ReportInputs, metrics_json, retention, write_report

MODELS = ("embedding_deepsurv", "embedding_coxph", "clinical_coxph", "clinical_deepsurv", "fusion",
          "oracle_embedding", "oracle_fusion")


def _inputs(**kw) -> ReportInputs:
    models = {m: {"c_index": 0.6 + i / 100, "c_index_ci": [0.5, 0.7], "ibs": 0.2} for i, m in enumerate(MODELS)}
    base = dict(base="gbsg2", patients=30, seed=1, models=models, retention=0.9,
                stages_s={"cohort": 1.234, "report": 0.1}, stage_status={"cohort": "done", "report": "done"},
                total_s=1.334, assets=[("Generator", "random-init stand-in StyleGAN2")],
                figures={"pairs": "figures/pairs.png"}, contracts=[{"name": "clinical", "rows": 30, "valid": 29,
                                                                  "quarantined": 1, "passed": True}])
    base.update(kw)
    return ReportInputs(**base)


def test_retention_formula() -> None:
    assert retention(0.7, 0.9) == pytest.approx(0.5)
    assert retention(0.9, 0.9) == pytest.approx(1.0)
    assert retention(0.7, 0.5) is None      # no oracle signal: retention is undefined, not infinite
    assert retention(0.7, 0.45) is None


def test_metrics_json_has_the_stable_layout() -> None:
    m = metrics_json(_inputs())
    assert set(m) >= {"base", "patients", "seed", "models", "retention", "stages_s", "total_s"}
    assert set(m["models"]) == set(MODELS)
    for entry in m["models"].values():
        assert set(entry) >= {"c_index", "c_index_ci", "ibs"} and len(entry["c_index_ci"]) == 2
    assert m["stages_s"]["cohort"] == 1.23


def test_nan_and_missing_values_become_null() -> None:
    inputs = _inputs(retention=float("nan"))
    inputs.models["fusion"] = {"c_index": float("nan"), "ibs": None}
    m = metrics_json(inputs)
    assert m["retention"] is None
    assert m["models"]["fusion"]["c_index"] is None and m["models"]["fusion"]["c_index_ci"] == [None, None]
    json.dumps(m, allow_nan=False)  # strictly valid JSON for scripts


def test_write_report_files(tmp_path: Path) -> None:
    paths = write_report(tmp_path / "report", _inputs())
    html = paths["index.html"].read_text()
    md = paths["report.md"].read_text()
    assert "figures/pairs.png" in html and "figures/pairs.png" in md
    assert "random-init stand-in" in html and "class='warn'" in html
    assert "0.787" in md  # the paper's combined C-index sits beside ours
    assert json.loads(paths["metrics.json"].read_text())["patients"] == 30
    assert not [p for p in (tmp_path / "report").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_a_stage_is_broken_down_into_its_parts(tmp_path: Path) -> None:
    inputs = _inputs(stage_parts_s={"cohort": {"projection": 0.987, "alignment": 0.2}})
    paths = write_report(tmp_path / "report", inputs)
    assert json.loads(paths["metrics.json"].read_text())["stage_parts_s"] == {
        "cohort": {"projection": 0.99, "alignment": 0.2}}
    md = paths["report.md"].read_text().splitlines()
    at = md.index("| cohort | done | 1.2 |")
    assert md[at + 1:at + 3] == ["| &nbsp;&nbsp;↳ projection | | 1.0 |", "| &nbsp;&nbsp;↳ alignment | | 0.2 |"]
    assert "↳ projection</td><td></td><td>1.0</td>" in paths["index.html"].read_text()


def test_contract_rows_merge_batches(tmp_path: Path) -> None:
    from facesurv.workspace import Workspace
    from flows.demo import contract_rows

    ws = Workspace(tmp_path)
    for i, (kind, rows, failing) in enumerate([("latents", 32, 0), ("latents", 10, 2), ("clinical", 5, 0)]):
        d = ws.artifacts_dir / "contracts" / kind / str(i)
        d.mkdir(parents=True)
        passed = failing == 0
        (d / "results.json").write_text(json.dumps({"summary": {"kind": kind, "rows": rows, "failing": failing,
                                                                "passed": passed}}))
    got = {r["name"]: r for r in contract_rows(ws)}
    assert got["latents"] == {"name": "latents", "rows": 42, "valid": 40, "quarantined": 2, "passed": False}
    assert got["clinical"]["rows"] == 5 and got["clinical"]["passed"] is True


def test_demo_refuses_early_when_the_cohort_has_too_few_events(params) -> None:
    from facesurv.config import with_overrides
    from facesurv.errors import DataError
    from flows.demo import check_enough_events

    check_enough_events(with_overrides(params, cohort={"base": "gbsg2"}, synth={"patients": 300}))
    with pytest.raises(DataError, match=r"aids: 300 patients hold about \d+ events .* pass --patients \d+"):
        check_enough_events(with_overrides(params, cohort={"base": "aids"}, synth={"patients": 300}))


def test_without_patients_given_a_low_event_base_gets_the_patients_it_needs(params) -> None:
    from facesurv.config import with_overrides
    from flows.demo import check_enough_events, patients_needed

    assert patients_needed(with_overrides(params, cohort={"base": "gbsg2"}, synth={"patients": 300})) is None
    suggest, why = patients_needed(with_overrides(params, cohort={"base": "aids"}, synth={"patients": 300}))
    assert 300 < suggest <= 1151 and "the dataset has" in why
    check_enough_events(with_overrides(params, cohort={"base": "aids"}, synth={"patients": suggest}))
    # a base smaller than demo.patients is used whole
    assert patients_needed(with_overrides(params, cohort={"base": "veterans_lung_cancer"}, synth={"patients": 300})) \
        == (137, "veterans_lung_cancer has 137 patients, fewer than the 300 asked for")
