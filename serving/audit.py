"""Render a ledger entry as the provenance lines `facesurv audit` and the demo print."""

from __future__ import annotations

import json
from typing import Any

from serving.ledger import LedgerEntry


def flatten(record: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested record -> sorted (dotted.key, text) pairs."""
    rows: list[tuple[str, str]] = []
    for key in sorted(record):
        name = f"{prefix}.{key}" if prefix else key
        value = record[key]
        if isinstance(value, dict) and value:
            rows.extend(flatten(value, name))
        else:
            rows.append((name, value if isinstance(value, str) else json.dumps(value)))
    return rows


def provenance_lines(entry: LedgerEntry, *, where: str) -> list[str]:
    rows = flatten(entry.record)
    rows += [("ledger.record_hash", entry.hash), ("ledger.previous_hash", entry.prev_hash)]
    width = max(len(k) for k, _ in rows)
    return [f"score {entry.score_id}  (ledger seq {entry.seq}, {where})"] + \
        [f"  {k:<{width}}  {v}" for k, v in rows]
