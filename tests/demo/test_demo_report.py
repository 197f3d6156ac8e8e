from __future__ import annotations

import json
from pathlib import Path

import pytest

from demo.report import ReportInputs, metrics_json, write_report

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


def _stat(v, lo, hi):
    return {"value": v, "ci": [lo, hi], "resamples": 200}


def _crossfit() -> dict:
    names = ("deepsurv_latent", "coxnet_latent", "coxph_clinical", "deepsurv_clinical", "fusion")
    models = {n: {"c_index": _stat(0.6 + i / 100, 0.55, 0.7), "ibs": _stat(0.2, 0.18, 0.22)}
              for i, n in enumerate(names)}
    models.update({"ceiling_face": {"c_index": _stat(0.68, 0.64, 0.72)},
                   "ceiling_clinical": {"c_index": _stat(0.64, 0.6, 0.68)},
                   "ceiling_total": {"c_index": _stat(0.74, 0.7, 0.78)}})
    derived = {"retention": _stat(0.3, -0.1, 0.7), "retention_face": _stat(0.5, 0.2, 0.8),
               "fusion_gain": _stat(0.03, -0.01, 0.07), "ceiling_gain": _stat(0.1, 0.07, 0.13)}
    return {"models": models, "derived": derived, "bootstrap": 200, "seed": 0, "n": 300, "events": 130, "folds": 5}


def test_cross_fitted_figures_ceilings_and_retention_with_cis(tmp_path: Path) -> None:
    inputs = _inputs(crossfit=_crossfit(), cohort={"kind": "rendered", "rung": "rendered, random direction in w",
                                                   "line": "cohort: rendered faces"})
    m = metrics_json(inputs)
    assert m["ceiling"] == {"face": {"value": 0.68, "ci": [0.64, 0.72]}, "clinical": {"value": 0.64, "ci": [0.6, 0.68]},
                            "total": {"value": 0.74, "ci": [0.7, 0.78]}}
    assert m["retention"] == {"value": 0.3, "ci": [-0.1, 0.7]}
    assert m["fusion_gain"] == {"value": 0.03, "ci": [-0.01, 0.07]} and m["retention_face"]["value"] == 0.5
    assert m["crossfit"]["models"]["fusion"]["c_index"] == {"value": 0.64, "ci": [0.55, 0.7]}
    assert m["crossfit"]["folds"] == 5 and m["cohort"]["rung"] == "rendered, random direction in w"
    paths = write_report(tmp_path / "report", inputs)
    md = paths["report.md"].read_text()
    assert md.splitlines()[2].startswith("**Cohort:** rendered faces; rung: rendered, random direction in w")
    assert "| Ceiling: true total log-hazard | 0.740 [0.700, 0.780] | — | — |" in md
    assert "**Retention (share of the face's added value captured)**: 0.30 [-0.10, 0.70]" in md
    assert "rung: <b>rendered, random direction in w</b>" in paths["index.html"].read_text()


def test_real_faces_report_alignment_per_group_and_no_face_only_retention(tmp_path: Path) -> None:
    alignment = {"overall": {"photos": 10, "aligned": 9, "quarantined": 1, "rate": 0.9},
                 "photo_sex": {"female": {"photos": 10, "aligned": 9, "quarantined": 1, "rate": 0.9}},
                 "race_group": {"black": {"photos": 4, "aligned": 3, "quarantined": 1, "rate": 0.75},
                                "white": {"photos": 6, "aligned": 6, "quarantined": 0, "rate": 1.0}}}
    inputs = _inputs(crossfit=_crossfit(), cohort={"kind": "real", "rung": "real faces"}, alignment=alignment)
    md = write_report(tmp_path / "report", inputs)["report.md"].read_text()
    assert "| race group black | 4 | 3 | 1 | 75.0% |" in md and "| all | 10 | 9 | 1 | 90.0% |" in md
    assert "Face-only retention" not in md
    assert metrics_json(inputs)["alignment"]["race_group"]["black"]["rate"] == 0.75


def test_metrics_json_has_the_stable_layout() -> None:
    m = metrics_json(_inputs())
    assert set(m) >= {"base", "patients", "seed", "cohort", "models", "retention", "retention_vs_oracle",
                      "stages_s", "total_s"}
    assert set(m["models"]) == set(MODELS)
    for entry in m["models"].values():
        assert set(entry) >= {"c_index", "c_index_ci", "ibs"} and len(entry["c_index_ci"]) == 2
    assert m["stages_s"]["cohort"] == 1.23


def test_nan_and_missing_values_become_null() -> None:
    inputs = _inputs(retention=float("nan"))
    inputs.models["fusion"] = {"c_index": float("nan"), "ibs": None}
    m = metrics_json(inputs)
    assert m["retention"] is None and m["retention_vs_oracle"] is None
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


def test_demo_refuses_early_when_the_cohort_has_too_few_events(params) -> None:
    from demo.runner import check_enough_events
    from ground.config import with_overrides
    from ground.errors import DataError

    check_enough_events(with_overrides(params, cohort={"base": "gbsg2"}, synth={"patients": 300}))
    with pytest.raises(DataError, match=r"aids: 300 patients hold about \d+ events .* pass --patients \d+"):
        check_enough_events(with_overrides(params, cohort={"base": "aids"}, synth={"patients": 300}))


def test_without_patients_given_a_low_event_base_gets_the_patients_it_needs(params) -> None:
    from demo.runner import check_enough_events, patients_needed
    from ground.config import with_overrides

    assert patients_needed(with_overrides(params, cohort={"base": "gbsg2"}, synth={"patients": 300})) is None
    suggest, why = patients_needed(with_overrides(params, cohort={"base": "aids"}, synth={"patients": 300}))
    assert 300 < suggest <= 1151 and "the dataset has" in why
    check_enough_events(with_overrides(params, cohort={"base": "aids"}, synth={"patients": suggest}))
    # a base smaller than demo.patients is used whole
    assert patients_needed(with_overrides(params, cohort={"base": "veterans_lung_cancer"}, synth={"patients": 300})) \
        == (137, "veterans_lung_cancer has 137 patients, fewer than the 300 asked for")


def test_html_escapes_what_it_shows_and_markdown_shows_it_as_written(tmp_path: Path) -> None:
    note = "a <b>note</b> & 'quotes'"
    paths = write_report(tmp_path / "report", _inputs(notes=[note], figures={note: "figures/x.png"}))
    page, md = paths["index.html"].read_text(), paths["report.md"].read_text()
    assert "<b>note</b>" not in page and "<li>a &lt;b&gt;note&lt;/b&gt; &amp; &#39;quotes&#39;</li>" in page
    assert "alt='a &lt;b&gt;note&lt;/b&gt; &amp; &#39;quotes&#39;'" in page  # a quote cannot end the attribute
    assert f"- {note}\n" in md and f"![{note}](figures/x.png)" in md


def test_table1_has_brier_columns_the_papers_brier_and_the_cnn_rows(tmp_path: Path) -> None:
    models = _inputs().models
    models["embedding_deepsurv"].update({"brier_365d": 0.15, "brier_365d_ci": [0.12, 0.18], "brier_1095d": None})
    models["cnn_resnet18"] = {"c_index": 0.53, "c_index_ci": [0.45, 0.61], "ibs": 0.24, "brier_365d": 0.2,
                              "brier_365d_ci": [0.17, 0.23]}
    inputs = _inputs(models=models, horizons=(365, 1095))
    md = write_report(tmp_path / "report", inputs)["report.md"].read_text()
    assert "| model | C-index | IBS | Brier 365 d | Brier 1095 d | paper C-index | paper Brier |" in md
    # the paper's embedding row: its C-index and its (only published) Brier score beside ours
    assert "| Embeddings, DeepSurv | 0.600 [0.500, 0.700] | 0.200 | 0.150 [0.120, 0.180] | n/a | 0.680 | 0.200 |" in md
    assert "| End-to-end CNN: ResNet-18 (from scratch) | 0.530 [0.450, 0.610] | 0.240 | 0.200 [0.170, 0.230] | n/a " \
           "| 0.510 | — |" in md
    assert "End-to-end CNN: VGG-16" not in md        # a CNN that did not run is left out, not shown empty
    assert "its horizon is not stated" in md and "5th to 90th percentile" in md
    brier = metrics_json(inputs)["brier"]
    assert brier["horizons_days"] == [365, 1095] and brier["paper"] == {"embedding_deepsurv": 0.2}
    assert metrics_json(inputs)["models"]["cnn_resnet18"]["brier_365d_ci"] == [0.17, 0.23]


def test_extra_sections_render_the_same_rows_in_both_formats(tmp_path: Path) -> None:
    sec = {"title": "Subgroups", "header": ["group", "C-index"], "rows": [["<50", "0.612 [0.550, 0.670]"],
                                                                          [">=75", "not shown: fewer than 10 events (7)"]],
           "lines": ["a note"]}
    paths = write_report(tmp_path / "report", _inputs(sections=[sec], attributes={"subgroups": {"rows": []}}))
    md, page = paths["report.md"].read_text(), paths["index.html"].read_text()
    assert "## Subgroups\n\n| group | C-index |\n|---|---|\n| <50 | 0.612 [0.550, 0.670] |" in md
    assert "<td>&gt;=75</td><td>not shown: fewer than 10 events (7)</td>" in page and "<li>a note</li>" in page
    assert json.loads(paths["metrics.json"].read_text())["subgroups"] == {"rows": []}
