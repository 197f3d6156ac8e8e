"""The Table-1-style results table: one row per evaluated model, each metric with its 95% CI."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from training.base import SurvivalModel
from training.metrics import Evaluation
from training.models import FEATURES


def features_of(name: str, model: SurvivalModel) -> str:
    members = getattr(model, "members", None)
    if not members:
        return FEATURES.get(name, "")
    kinds = sorted({FEATURES[m] for m in members}, key=("latent", "clinical").index)
    return " + ".join(kinds)


def table_row(name: str, model: SurvivalModel, ev: Evaluation, n_train: int) -> dict[str, Any]:
    return {"model": name, "features": features_of(name, model), "n_train": n_train, "n_test": ev.n_test,
            "test_events": ev.n_events, **ev.flat()}


def format_ci(value: float, lo: float, hi: float, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def table1_text_rows(table: pd.DataFrame, horizons: list[int]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the Table-1-style summary: each metric as 'value (95% CI)'."""
    cols = [("c_index", "Harrell C"), ("uno_c", "Uno C"), ("ibs", "IBS"),
            *[(f"brier_{h}d", f"Brier {h}d") for h in horizons], ("auc_mean", "td-AUC")]
    header = ["model", "features", "n train/test (events)", *[c[1] for c in cols]]
    rows = []
    for r in table.to_dict(orient="records"):
        rows.append([r["model"], r["features"], f"{r['n_train']}/{r['n_test']} ({r['test_events']})",
                     *[format_ci(r.get(k, math.nan), r.get(f"{k}_lo", math.nan), r.get(f"{k}_hi", math.nan))
                       for k, _ in cols]])
    return header, rows
