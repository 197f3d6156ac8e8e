"""The few steps that are more than one library call: where a call needs the workspace's paths,
or an output is cached by content.

The Prefect tasks (flows/nightly_embedding.py, flows/train_and_promote.py) are declared on
these and on the library functions themselves, and the DVC stages (flows/stages.py) call the
same functions, so a scheduled run and `dvc repro` compute the same thing. Every output is keyed
by content hash and written atomically, so a step that crashed is simply run again.

Workspace layout used here (ground.workspace has the rest):

    <ws>/data/                         the data repository (git + DVC): photos/, prealigned/, clinical/
    <ws>/artifacts/flows/inbox_state.json
    <ws>/artifacts/contracts/<kind>/<sha16>/   valid.csv, quarantine.csv, report.json
    <ws>/artifacts/aligned/            aligned PNGs (<photo_id>.png) and manifest.csv
    <ws>/artifacts/latents/            projection shards (shard-<run key16>-<batch16>.npz)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ground.config import Params
from ground.errors import DataError
from ground.workspace import Workspace

DATA_OUTS = ("photos", "prealigned", "clinical")


@dataclass(frozen=True)
class Layout:
    ws: Workspace

    @property
    def inbox_state(self) -> Path:
        return self.ws.artifacts_dir / "flows" / "inbox_state.json"

    @property
    def contracts(self) -> Path:
        return self.ws.artifacts_dir / "contracts"

    @property
    def aligned(self) -> Path:
        return self.ws.artifacts_dir / "aligned"

    @property
    def latents(self) -> Path:
        return self.ws.artifacts_dir / "latents"


def validate_file(ws: Workspace, params: Params, kind: str, path: Path) -> Path:
    """Run the `kind` contract on a table file once per content; returns the valid rows' file.

    Outputs go to artifacts/contracts/<kind>/<sha16>/ (valid, quarantine, results.json,
    report.html); `done` is written last, so a run killed midway validates the file again.

    Raises:
        DataError: more rows fail than params.contracts.max_failing_fraction allows.
    """
    from features.contracts import read_table, run_contract, save_contract_outputs

    out = Layout(ws).contracts / kind / hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    valid = out / ("valid.parquet" if kind == "latents" else "valid.csv")
    if (out / "done").exists():
        return valid
    result = run_contract(kind, read_table(path), params)
    save_contract_outputs(result, out)
    if not result.passed:
        raise DataError(f"{path}: {result.failure_message()} (details: {out / 'report.html'})")
    (out / "done").write_text(str(path), encoding="utf-8")
    return valid


def clinical_files(ws: Workspace) -> list[Path]:
    d = ws.data_dir / "clinical"
    return sorted(d.glob("*.csv")) if d.is_dir() else []


def read_valid_clinical(paths: list[Path]) -> Any:
    import pandas as pd

    frames = [pd.read_csv(p) for p in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise DataError("no valid clinical rows yet: drop a clinical.csv into the inbox")
    return pd.concat(frames, ignore_index=True)
