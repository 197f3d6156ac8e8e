"""The pipeline's steps as plain functions: file I/O around ONE library call each.

The Prefect tasks (flows/nightly_embedding.py, flows/train_and_promote.py) and the DVC
stages (flows/stages.py) call these same functions, so a scheduled run and `dvc repro`
compute the same thing. Every output is keyed by content hash and written atomically, so
a step that crashed is simply run again, and a step whose output exists is skipped.

Workspace layout used here (ground.workspace has the rest):

    <ws>/data/                         the data repository (git + DVC): photos/, prealigned/, clinical/
    <ws>/artifacts/flows/inbox_state.json
    <ws>/artifacts/contracts/<kind>/<sha16>/   valid.csv, quarantine.csv, report.json
    <ws>/artifacts/aligned/            aligned PNGs (<photo_id>.png) and manifest.csv
    <ws>/artifacts/latents/batches/<key>.parquet   one per projection batch
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.available import require
from ground.config import Params
from ground.errors import DataError
from ground.workspace import Workspace

DATA_OUTS = ("photos", "prealigned", "clinical")


@dataclass(frozen=True)
class Layout:
    ws: Workspace

    @property
    def data(self) -> Path:
        return self.ws.data_dir

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
    def latent_batches(self) -> Path:
        return self.ws.artifacts_dir / "latents" / "batches"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- inbox and data versioning (features.inbox, features.versioning) -----------------------

def scan(ws: Workspace, params: Params) -> Any:
    from features.inbox import inbox_dir, scan_inbox

    return scan_inbox(inbox_dir(ws.root, params.flows.inbox), state_path=Layout(ws).inbox_state)


def prepare_repo(ws: Workspace, params: Params) -> Path:
    from features.versioning import init_data_repo, remote_url_for

    return init_data_repo(ws.data_dir, remote_url=remote_url_for(params.flows.dvc_remote, ws.root),
                          endpoint_url=params.flows.dvc_endpoint_url)


def ingest(ws: Workspace, batch: Any) -> dict[str, list[str]]:
    from features.inbox import ingest as _ingest

    return _ingest(batch, ws.data_dir)


def version(ws: Workspace, *, message: str) -> Any:
    from features.versioning import version_inputs

    outs = [o for o in DATA_OUTS if (ws.data_dir / o).exists()]
    if not outs:
        return None
    return version_inputs(ws.data_dir, outs, message=message)


def mark_done(ws: Workspace, batch: Any) -> int:
    from features.inbox import mark_done as _mark_done

    return _mark_done(batch, state_path=Layout(ws).inbox_state)


# --- data contracts (features.contracts) -----------------------------------------------------

def validate_file(ws: Workspace, params: Params, kind: str, path: Path) -> Path:
    """Run the `kind` contract on a CSV/parquet file once per content; returns the valid rows' file.

    Outputs go to artifacts/contracts/<kind>/<sha16>/ (valid, quarantine, results.json,
    report.html); `done` is written last, so a run killed midway validates the file again.

    Raises:
        DataError: more rows fail than params.contracts.max_failing_fraction allows.
    """
    read_table, run_contract, save_contract_outputs = require(
        "contracts", "read_table", "run_contract", "save_contract_outputs")
    digest = sha256_bytes(Path(path).read_bytes())[:16]
    out = Layout(ws).contracts / kind / digest
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


# --- feature store (features.store) -------------------------------------------------------------

def write_clinical(ws: Workspace, params: Params, valid_paths: list[Path]) -> int:
    write = require("feature store", "write_clinical")
    return int(write(ws.feature_repo_dir, read_valid_clinical(valid_paths), params))


def apply_features(ws: Workspace, params: Params) -> None:
    apply_repo = require("feature store", "apply_repo")
    apply_repo(ws.feature_repo_dir, params)


def materialize(ws: Workspace, params: Params) -> dict[str, int]:
    mat = require("feature store", "materialize")
    return dict(mat(ws.feature_repo_dir, params))
