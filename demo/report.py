"""The demo report: report/index.html, report/report.md and report/metrics.json.

Pure rendering: the demo hands in what its stages found; nothing here computes a metric.
The two pages render from demo/templates/ (index.html.j2, report.md.j2) with the same rows;
metrics.json keeps a stable layout for scripts (docs/demo.md documents it).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

# Hagag et al., MICCAI, Table 1 (C-index on their test set); the end-to-end CNNs are the paper's DeepSurv
# on ResNet-18 and VGG-16 features
PAPER_TABLE1 = {"embedding_deepsurv": 0.680, "clinical_coxph": 0.690, "clinical_deepsurv": 0.729, "fusion": 0.787,
                "cnn_resnet18": 0.51, "cnn_vgg16": 0.47}
# The paper's Brier score: only the embedding model's pan-cancer mean (0.200) was available to this project,
# without its horizon; the other rows say so rather than guess
PAPER_BRIER = {"embedding_deepsurv": 0.200}
PAPER_BRIER_HORIZON = "the paper's mean Brier score; its horizon is not stated in the sources available here"

MODEL_LABELS = {
    "embedding_deepsurv": "Embeddings, DeepSurv",
    "embedding_coxph": "Embeddings, CoxPH (Coxnet)",
    "clinical_coxph": "Clinical, CoxPH",
    "clinical_deepsurv": "Clinical, DeepSurv",
    "fusion": "Combined (late fusion)",
    "cnn_resnet18": "End-to-end CNN: ResNet-18 (from scratch)",
    "cnn_vgg16": "End-to-end CNN: VGG-16 (ImageNet convolutions)",
    "oracle_embedding": "Oracle: true latents, CoxPH",
    "oracle_fusion": "Oracle: true latents + clinical",
}
# the registry's and the cross-fit's models: report name -> training/'s model name
TRAINING_NAMES = {"embedding_deepsurv": "deepsurv_latent", "embedding_coxph": "coxnet_latent",
                  "clinical_coxph": "coxph_clinical", "clinical_deepsurv": "deepsurv_clinical", "fusion": "fusion"}


@dataclass
class ReportInputs:
    base: str
    patients: int
    seed: int
    models: dict[str, dict[str, Any]]            # name -> {c_index, c_index_ci, ibs, ibs_ci?, ...}
    retention: float | None
    stages_s: dict[str, float]
    stage_status: dict[str, str]
    total_s: float
    assets: list[tuple[str, str]]                # (what, statement) e.g. generator / perceptual / landmarks
    figures: dict[str, str] = field(default_factory=dict)   # caption -> path relative to report/
    contracts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    stage_parts_s: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> part -> seconds
    cohort: dict[str, Any] = field(default_factory=dict)     # kind, rung, line (the demo's first line)
    crossfit: dict[str, Any] | None = None                   # training.crossfit CrossFit.summary(...)
    alignment: dict[str, Any] | None = None                  # real faces: aligned share overall / per group
    horizons: tuple[int, ...] = ()                           # days of the Brier columns (training.horizons_days)
    attributes: dict[str, Any] | None = None                 # the attributes stage's figures (metrics.json layout)
    sections: list[dict[str, Any]] = field(default_factory=list)  # extra tables: {title, header, rows, lines}


# cross-fitted rows: metrics.json key -> (label, risk name in the cross-fit summary)
CROSSFIT_ROWS = {key: (MODEL_LABELS[key], name) for key, name in TRAINING_NAMES.items()}
CEILINGS = {"face": ("Ceiling: true face log-hazard", "ceiling_face"),
            "clinical": ("Ceiling: true clinical log-hazard", "ceiling_clinical"),
            "total": ("Ceiling: true total log-hazard", "ceiling_total")}
DERIVED = ("retention", "retention_face", "fusion_gain", "ceiling_gain")


def _stat(stat: dict[str, Any] | None) -> dict[str, Any] | None:
    if not stat:
        return None
    ci = stat.get("ci") or [None, None]
    return {"value": _num(stat.get("value")), "ci": [_num(ci[0]), _num(ci[1])]}


def crossfit_json(cf: dict[str, Any] | None) -> dict[str, Any]:
    """The cross-fitted figures in metrics.json's layout (empty when the stage did not run)."""
    if not cf:
        return {}
    models = {key: {"c_index": _stat(cf["models"][name]["c_index"]), "ibs": _stat(cf["models"][name].get("ibs"))}
              for key, (_, name) in CROSSFIT_ROWS.items() if name in cf["models"]}
    out: dict[str, Any] = {
        "crossfit": {"folds": cf.get("folds"), "patients": cf.get("n"), "events": cf.get("events"),
                     "bootstrap": cf.get("bootstrap"), "models": models},
        "ceiling": {k: _stat(cf["models"][name]["c_index"]) for k, (_, name) in CEILINGS.items()
                    if name in cf["models"]},
    }
    for k in DERIVED:
        if k in cf.get("derived", {}):
            out[k] = _stat(cf["derived"][k])
    return out


def metrics_json(r: ReportInputs) -> dict[str, Any]:
    # the stable keys first, rounded; whatever else an entry carries (uno_c, n_test, ...) after them as is
    models = {name: {"c_index": _num(m.get("c_index")), "c_index_ci": [_num(x) for x in m.get("c_index_ci", [None, None])],
                     "ibs": _num(m.get("ibs")), **{k: v for k, v in m.items() if k not in ("c_index", "c_index_ci", "ibs")}}
              for name, m in r.models.items()}
    out: dict[str, Any] = {
        "base": r.base, "patients": r.patients, "seed": r.seed,
        "cohort": {"kind": r.cohort.get("kind"), "rung": r.cohort.get("rung"),
                   "survival_seed": r.cohort.get("survival_seed")},
        "models": models, "retention": None, "retention_vs_oracle": _num(r.retention),
    }
    out.update(crossfit_json(r.crossfit))
    if r.alignment:
        out["alignment"] = r.alignment
    if r.attributes:
        out.update(r.attributes)
    out["brier"] = {"horizons_days": list(r.horizons), "paper": dict(PAPER_BRIER), "paper_horizon": PAPER_BRIER_HORIZON,
                    "ibs_window": "5th to 90th percentile of the test patients' follow-up (training.metrics)"}
    out.update({
        "stages_s": {k: round(v, 2) for k, v in r.stages_s.items()},
        "total_s": round(r.total_s, 2),
        "stage_parts_s": {k: {p: round(v, 2) for p, v in parts.items()} for k, parts in r.stage_parts_s.items()},
        **r.extra,
    })
    return out


def stat_text(stat: dict[str, Any] | None, digits: int = 3) -> str:
    """'value [lo, hi]' of a {value, ci} statistic; 'n/a' when it has no value."""
    if not stat or stat.get("value") is None:
        return "n/a"
    ci = stat.get("ci") or [None, None]
    if ci[0] is None or ci[1] is None:
        return f"{stat['value']:.{digits}f}"
    return f"{stat['value']:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _crossfit_rows(r: ReportInputs) -> list[list[str]]:
    """Cross-fitted Table 1 rows (model, C-index, IBS, paper) with the ceilings under them."""
    cf = r.crossfit
    if not cf:
        return []
    rows = []
    for key, (label, name) in CROSSFIT_ROWS.items():
        m = cf["models"].get(name)
        if m:
            rows.append([label, stat_text(m["c_index"]), stat_text(m.get("ibs")), _paper(key)])
    for label, name in CEILINGS.values():
        if name in cf["models"]:
            rows.append([label, stat_text(cf["models"][name]["c_index"]), "—", "—"])
    return rows


def _derived_lines(r: ReportInputs) -> list[tuple[str, str]]:
    d = (r.crossfit or {}).get("derived", {})
    labels = {"retention": "Retention (share of the face's added value captured)",
              "fusion_gain": "Fusion gain over the clinical CoxPH",
              "ceiling_gain": "The ceiling's gain (what the face could add)",
              "retention_face": "Face-only retention (embedding Coxnet against the face ceiling)"}
    out = []
    for k in DERIVED:
        if k in d and not (k == "retention_face" and r.cohort.get("kind") != "rendered"):
            out.append((labels[k], stat_text(d[k], 2 if k.startswith("retention") else 3)))
    return out


def _alignment_rows(r: ReportInputs) -> list[list[str]]:
    a = r.alignment or {}
    rows = []
    for col, label in (("overall", "all"), ("photo_sex", "sex"), ("race_group", "race group")):
        groups = {"": a[col]} if col == "overall" and col in a else a.get(col, {})
        for g, c in groups.items():
            rate = "n/a" if c.get("rate") is None else f"{c['rate']:.1%}"
            rows.append([f"{label} {g}".strip(), str(c["photos"]), str(c["aligned"]), str(c["quarantined"]), rate])
    return rows


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return round(f, 4) if math.isfinite(f) else None


def _fmt(m: dict[str, Any] | None, key: str) -> str:
    """stat_text of a frozen-split entry's flat `key` and `key_ci`."""
    return stat_text({"value": (m or {}).get(key), "ci": (m or {}).get(f"{key}_ci")})


def _table_rows(r: ReportInputs) -> list[list[str]]:
    rows = []
    for name, label in MODEL_LABELS.items():
        m = r.models.get(name)
        if m is None and (name.startswith("oracle") or name.startswith("cnn_")):
            continue  # real faces have no oracle; cnn.models may leave a CNN out
        rows.append([label, _fmt(m, "c_index"), _fmt(m, "ibs"), *[_fmt(m, f"brier_{h}d") for h in r.horizons],
                     _paper(name), _paper(name, PAPER_BRIER)])
    return rows


def frozen_header(r: ReportInputs) -> list[str]:
    return ["model", "C-index", "IBS", *[f"Brier {h} d" for h in r.horizons], "paper C-index", "paper Brier"]


def _paper(key: str, table: dict[str, float] = PAPER_TABLE1) -> str:
    paper = table.get(key)
    return f"{paper:.3f}" if paper else "—"


def _render(template: str, r: ReportInputs) -> str:
    """One format of the report: the template lays it out; the rows are formatted here, once for both."""
    return _templates().get_template(template).render(
        r=r, crossfit_rows=_crossfit_rows(r), derived=_derived_lines(r), frozen_rows=_table_rows(r),
        alignment_rows=_alignment_rows(r), frozen_header=frozen_header(r), paper_brier_horizon=PAPER_BRIER_HORIZON,
        contract_rows=[[str(c.get(k)) for k in ("name", "rows", "valid", "quarantined", "passed")] for c in r.contracts],
        stages=[(k, r.stage_status.get(k, ""), f"{v:.1f}", [(part, f"{pv:.1f}") for part, pv in
                                                         r.stage_parts_s.get(k, {}).items()])
                for k, v in r.stages_s.items()])


@functools.cache
def _templates() -> jinja2.Environment:
    # HTML escapes every value it shows (captions and notes hold quotes, paths, '<'); markdown shows them as written
    return jinja2.Environment(loader=jinja2.PackageLoader("demo", "templates"), undefined=jinja2.StrictUndefined,
                              autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
                              trim_blocks=True, lstrip_blocks=True)


def write_report(report_dir: Path, r: ReportInputs) -> dict[str, Path]:
    """Write index.html, report.md and metrics.json (each atomically) into report_dir."""
    from ground.atomic import atomic_path

    report_dir.mkdir(parents=True, exist_ok=True)
    outputs = {
        "index.html": _render("index.html.j2", r),
        "report.md": _render("report.md.j2", r),
        "metrics.json": json.dumps(metrics_json(r), indent=2, sort_keys=False) + "\n",
    }
    paths = {}
    for name, text in outputs.items():
        with atomic_path(report_dir / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
        paths[name] = report_dir / name
    return paths
