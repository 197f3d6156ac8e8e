"""The demo report: report/index.html, report/report.md and report/metrics.json.

Pure rendering: the demo hands in what its stages found; nothing here computes a metric.
metrics.json keeps a stable layout for scripts (docs/demo.md documents it).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Hagag et al., MICCAI, Table 1 (C-index on their test set)
PAPER_TABLE1 = {
    "embedding_deepsurv": 0.680,
    "clinical_coxph": 0.690,
    "clinical_deepsurv": 0.729,
    "fusion": 0.787,
}

MODEL_LABELS = {
    "embedding_deepsurv": "Embeddings, DeepSurv",
    "embedding_coxph": "Embeddings, CoxPH (Coxnet)",
    "clinical_coxph": "Clinical, CoxPH",
    "clinical_deepsurv": "Clinical, DeepSurv",
    "fusion": "Combined (late fusion)",
    "oracle_embedding": "Oracle: true latents, CoxPH",
    "oracle_fusion": "Oracle: true latents + clinical",
}


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


# cross-fitted rows: metrics.json key -> (label, risk name in the cross-fit summary)
CROSSFIT_ROWS = {
    "embedding_deepsurv": ("Embeddings, DeepSurv", "deepsurv_latent"),
    "embedding_coxph": ("Embeddings, CoxPH (Coxnet)", "coxnet_latent"),
    "clinical_coxph": ("Clinical, CoxPH", "coxph_clinical"),
    "clinical_deepsurv": ("Clinical, DeepSurv", "deepsurv_clinical"),
    "fusion": ("Combined (late fusion)", "fusion"),
}
CEILINGS = {"face": ("Ceiling: true face log-hazard", "ceiling_face"),
            "clinical": ("Ceiling: true clinical log-hazard", "ceiling_clinical"),
            "total": ("Ceiling: true total log-hazard", "ceiling_total")}
DERIVED = ("retention", "retention_face", "fusion_gain", "ceiling_gain")


def retention(c_embedding: float, c_oracle_embedding: float) -> float | None:
    """Share of the oracle's embedding signal the pixel -> latent round trip keeps."""
    gain = c_oracle_embedding - 0.5
    if not math.isfinite(gain) or gain <= 0:
        return None
    return (c_embedding - 0.5) / gain


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
    models = {}
    for name, m in r.models.items():
        entry = {"c_index": _num(m.get("c_index")), "c_index_ci": [_num(x) for x in m.get("c_index_ci", [None, None])],
                 "ibs": _num(m.get("ibs"))}
        for k, v in m.items():
            if k not in entry:
                entry[k] = v
        models[name] = entry
    out: dict[str, Any] = {
        "base": r.base, "patients": r.patients, "seed": r.seed,
        "cohort": {"kind": r.cohort.get("kind"), "rung": r.cohort.get("rung"),
                   "survival_seed": r.cohort.get("survival_seed")},
        "models": models, "retention": None, "retention_vs_oracle": _num(r.retention),
    }
    out.update(crossfit_json(r.crossfit))
    if r.alignment:
        out["alignment"] = r.alignment
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
            paper = PAPER_TABLE1.get(key)
            rows.append([label, stat_text(m["c_index"]), stat_text(m.get("ibs")), f"{paper:.3f}" if paper else "—"])
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
    if not m or m.get(key) is None:
        return "n/a"
    ci = m.get(f"{key}_ci")
    if ci and all(c is not None for c in ci):
        return f"{m[key]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{m[key]:.3f}"


def _table_rows(r: ReportInputs) -> list[list[str]]:
    rows = []
    for name, label in MODEL_LABELS.items():
        m = r.models.get(name)
        if m is None and name.startswith("oracle"):
            continue  # real faces have no oracle
        paper = PAPER_TABLE1.get(name)
        rows.append([label, _fmt(m, "c_index"), _fmt(m, "ibs"), f"{paper:.3f}" if paper else "—"])
    return rows


def render_markdown(r: ReportInputs) -> str:
    lines = [f"# facesurv demo report — {r.base}, {r.patients} patients, seed {r.seed}", ""]
    lines += [f"**Cohort:** {r.cohort.get('kind') or 'unknown'} faces; rung: {r.cohort.get('rung') or 'n/a'}. "
              f"{r.cohort.get('line', '')}", ""]
    lines += ["## What ran on what", ""] + [f"- **{what}**: {text}" for what, text in r.assets] + [""]
    if r.crossfit:
        lines += [f"## Table 1, cross-fitted: C-index and IBS on all {r.crossfit.get('n')} patients "
                  f"({r.crossfit.get('folds')} folds, 95% paired bootstrap CIs), beside the ceiling", "",
                  "| model | C-index | IBS | paper C-index |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in _crossfit_rows(r)]
        lines += [""] + [f"- **{label}**: {text}" for label, text in _derived_lines(r)] + [""]
    lines += ["## Table 1, frozen split (the registry's): test C-index and IBS (95% bootstrap CIs)", "",
              "| model | C-index | IBS | paper C-index |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in _table_rows(r)]
    if r.retention is not None:
        lines += ["", f"**Oracle retention** (Coxnet on recovered against true latents, frozen split): "
                  f"{r.retention:.2f}", ""]
    if r.alignment:
        lines += ["", "## Alignment of the real photos (quarantined photos' patients drop out)", "",
                  "| group | photos | aligned | quarantined | aligned share |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in _alignment_rows(r)]
    lines.append("")
    if r.contracts:
        lines += ["## Data contracts", "", "| contract | rows | valid | quarantined | passed |", "|---|---|---|---|---|"]
        lines += [f"| {c.get('name')} | {c.get('rows')} | {c.get('valid')} | {c.get('quarantined')} | {c.get('passed')} |"
                  for c in r.contracts]
        lines.append("")
    lines += ["## Wall time per stage", "", "| stage | status | seconds |", "|---|---|---|"]
    for k, v in r.stages_s.items():
        lines.append(f"| {k} | {r.stage_status.get(k, '')} | {v:.1f} |")
        lines += [f"| &nbsp;&nbsp;↳ {part} | | {pv:.1f} |" for part, pv in r.stage_parts_s.get(k, {}).items()]
    lines += [f"| **total** | | {r.total_s:.1f} |", ""]
    if r.figures:
        lines += ["## Figures", ""] + [f"![{cap}]({path})" for cap, path in r.figures.items()] + [""]
    if r.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in r.notes] + [""]
    return "\n".join(lines)


def render_html(r: ReportInputs) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>facesurv demo — {e(r.base)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
        "th{background:#f2f2f2}.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em 1em}"
        "figure{display:inline-block;margin:1em;vertical-align:top}img{max-width:480px;border:1px solid #ddd}</style>",
        "</head><body>",
        f"<h1>facesurv demo report</h1><p>Base dataset <b>{e(r.base)}</b>, {r.patients} patients, seed {r.seed}.</p>",
        f"<p class='warn'><b>Cohort:</b> {e(str(r.cohort.get('kind') or 'unknown'))} faces; rung: "
        f"<b>{e(str(r.cohort.get('rung') or 'n/a'))}</b>. {e(str(r.cohort.get('line', '')))}</p>",
        "<h2>What ran on what</h2><ul>",
    ]
    for what, text in r.assets:
        cls = " class='warn'" if "stand-in" in text or "random-init" in text else ""
        parts.append(f"<li{cls}><b>{e(what)}</b>: {e(text)}</li>")
    parts.append("</ul>")
    header = "<table><tr><th>model</th><th>C-index</th><th>IBS</th><th>paper C-index</th></tr>"
    if r.crossfit:
        parts.append(f"<h2>Table 1, cross-fitted: all {r.crossfit.get('n')} patients, {r.crossfit.get('folds')} "
                     "folds, 95% paired bootstrap CIs, beside the ceiling</h2>" + header)
        for row in _crossfit_rows(r):
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</table><ul>" + "".join(f"<li><b>{e(label)}</b>: {e(text)}</li>"
                                              for label, text in _derived_lines(r)) + "</ul>")
    parts.append("<h2>Table 1, frozen split (the registry's): test C-index and IBS (95% bootstrap CIs)</h2>" + header)
    for row in _table_rows(r):
        parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    if r.retention is not None:
        parts.append(f"<p><b>Oracle retention</b> (C<sub>embedding</sub> − 0.5)/(C<sub>oracle</sub> − 0.5), "
                     f"frozen split: <b>{r.retention:.2f}</b></p>")
    if r.alignment:
        parts.append("<h2>Alignment of the real photos</h2><table><tr><th>group</th><th>photos</th><th>aligned</th>"
                     "<th>quarantined</th><th>aligned share</th></tr>")
        for row in _alignment_rows(r):
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    if r.contracts:
        parts.append("<h2>Data contracts</h2><table><tr><th>contract</th><th>rows</th><th>valid</th>"
                     "<th>quarantined</th><th>passed</th></tr>")
        for c in r.contracts:
            parts.append("<tr>" + "".join(f"<td>{e(str(c.get(k)))}</td>" for k in ("name", "rows", "valid", "quarantined", "passed")) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Wall time per stage</h2><table><tr><th>stage</th><th>status</th><th>seconds</th></tr>")
    for k, v in r.stages_s.items():
        parts.append(f"<tr><td>{e(k)}</td><td>{e(r.stage_status.get(k, ''))}</td><td>{v:.1f}</td></tr>")
        for part, pv in r.stage_parts_s.get(k, {}).items():
            parts.append(f"<tr class='part'><td>&nbsp;&nbsp;↳ {e(part)}</td><td></td><td>{pv:.1f}</td></tr>")
    parts.append(f"<tr><th>total</th><th></th><th>{r.total_s:.1f}</th></tr></table>")
    if r.figures:
        parts.append("<h2>Figures</h2>")
        for cap, path in r.figures.items():
            parts.append(f"<figure><img src='{e(path)}' alt='{e(cap)}'><figcaption>{e(cap)}</figcaption></figure>")
    if r.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in r.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report_dir: Path, r: ReportInputs) -> dict[str, Path]:
    """Write index.html, report.md and metrics.json (each atomically) into report_dir."""
    from ground.atomic import atomic_path

    report_dir.mkdir(parents=True, exist_ok=True)
    outputs = {
        "index.html": render_html(r),
        "report.md": render_markdown(r),
        "metrics.json": json.dumps(metrics_json(r), indent=2, sort_keys=False) + "\n",
    }
    paths = {}
    for name, text in outputs.items():
        with atomic_path(report_dir / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
        paths[name] = report_dir / name
    return paths
