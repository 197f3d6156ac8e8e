"""Write a contract run: valid.csv, quarantine.csv, results.json, report.html (+ GX data docs)."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.contracts.runner import ContractResult
from ground.atomic import atomic_path, ensure_writable_dir


def _csv_ready(df: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """Array cells (latents) become JSON lists so the CSV can be read back; True if any were."""
    out = df.copy()
    changed = False
    for col in out.columns:
        if out[col].dtype == object and out[col].map(lambda v: isinstance(v, list | np.ndarray)).any():
            out[col] = out[col].map(lambda v: json.dumps([float(x) for x in v]) if isinstance(v, list | np.ndarray) else v)
            changed = True
    return out, changed


def save_contract_outputs(result: ContractResult, out_dir: Path | str) -> dict[str, Path]:
    """Write the run's files into out_dir (each atomically); returns their paths by name."""
    out_dir = ensure_writable_dir(out_dir)
    paths: dict[str, Path] = {}
    for name, frame in (("valid", result.valid), ("quarantine", result.quarantine)):
        ready, had_arrays = _csv_ready(frame)
        with atomic_path(out_dir / f"{name}.csv") as tmp:
            ready.to_csv(tmp, index=False)
        paths[name] = out_dir / f"{name}.csv"
        if had_arrays or result.kind == "latents":  # parquet keeps latents as float32 lists
            with atomic_path(out_dir / f"{name}.parquet") as tmp:
                frame.to_parquet(tmp, index=False)
            paths[f"{name}_parquet"] = out_dir / f"{name}.parquet"
    with atomic_path(out_dir / "results.json") as tmp:
        tmp.write_text(json.dumps({"summary": result.summary, "great_expectations": result.gx_result},
                                  indent=1, default=str))
    paths["results"] = out_dir / "results.json"
    with atomic_path(out_dir / "report.html") as tmp:
        tmp.write_text(render_html(result, out_dir), encoding="utf-8")
    paths["report"] = out_dir / "report.html"
    return paths


def summarize_runs(root: Path | str) -> list[dict[str, Any]]:
    """One row per contract kind ({name, rows, valid, quarantined, passed}), summed over every run
    saved under `root` (their results.json): the latents contract runs once per projection shard."""
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(root).rglob("results.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        summary = data.get("summary", data) if isinstance(data, dict) else None
        if not isinstance(summary, dict) or "rows" not in summary:
            continue
        name = summary.get("kind") or path.parent.parent.name
        m = merged.setdefault(name, {"name": name, "rows": 0, "valid": 0, "quarantined": 0, "passed": True})
        rows, failing = int(summary.get("rows") or 0), int(summary.get("failing") or 0)
        m["rows"], m["valid"], m["quarantined"] = m["rows"] + rows, m["valid"] + rows - failing, m["quarantined"] + failing
        m["passed"] = m["passed"] and bool(summary.get("passed"))
    return list(merged.values())


def render_html(result: ContractResult, out_dir: Path) -> str:
    s = result.summary
    verdict = "PASSED" if s["passed"] else "FAILED"
    rows = "".join(
        f"<tr><td><code>{html.escape(f['expectation'])}</code></td><td>{f['rows']}</td>"
        f"<td>{html.escape(f['reason'])}</td></tr>" for f in s["failures"]) or \
        "<tr><td colspan=3>every expectation met</td></tr>"
    docs = ""
    if result.docs_index is not None:
        rel = os.path.relpath(result.docs_index, out_dir)
        docs = f'<p>Great Expectations data docs: <a href="{html.escape(rel)}">{html.escape(rel)}</a></p>'
    sample = result.quarantine.head(20)
    sample_cols = [c for c in sample.columns if c != "latent"]
    qtable = sample[sample_cols].to_html(index=False, escape=True, na_rep="") if len(sample) else "<p>none</p>"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>facesurv {result.kind} contract: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
.PASSED{{color:#070}}.FAILED{{color:#a00}}</style></head><body>
<h1>{html.escape(result.kind)} contract: <span class="{verdict}">{verdict}</span></h1>
<p>{s['rows']} rows: {s['valid']} valid, {s['failing']} quarantined ({s['failing_fraction']:.2%});
the run fails above {s['threshold']:.2%}. {s['expectations']} expectations evaluated.</p>
<h2>Failed expectations</h2>
<table><tr><th>expectation</th><th>rows</th><th>reason</th></tr>{rows}</table>
<h2>Quarantined rows (first 20)</h2>{qtable}
{docs}
<p>Files: valid.csv (passing rows, unchanged), quarantine.csv (failing rows + reason, expectation), results.json.</p>
</body></html>
"""
