"""How evenly the pipeline treats groups of patients (sex, age band, race group)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def aligned_by_group(frame: Any, columns: Sequence[str]) -> dict[str, Any]:
    """Alignment outcomes per group: {"overall": counts, column: {group: counts}} where counts is
    {photos, aligned, quarantined, rate}. frame: a pandas DataFrame with a boolean `aligned`
    column and the group columns; a group is used for this audit only, never as a model input."""
    missing = [c for c in ("aligned", *columns) if c not in frame.columns]
    if missing:
        raise ValueError(f"aligned_by_group needs the columns {', '.join(missing)}")

    def counts(part: Any) -> dict[str, Any]:
        n, k = int(len(part)), int(part["aligned"].sum())
        return {"photos": n, "aligned": k, "quarantined": n - k, "rate": round(k / n, 4) if n else None}

    return {"overall": counts(frame), **{col: {str(g): counts(part) for g, part in frame.groupby(col, sort=True)}
                                         for col in columns}}
