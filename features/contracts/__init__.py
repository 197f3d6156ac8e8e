"""Data contracts (Great Expectations 1.x): clinical table, alignment manifest, latents.

    res = run_contract(kind, df, params, *, docs_dir=None) -> ContractResult(valid, quarantine, summary)
    save_contract_outputs(res, out_dir) -> {name: path}
    df = read_table(path)       # CSV or parquet, as the contract expects it
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from facesurv.errors import DataError
from features.contracts.report import save_contract_outputs
from features.contracts.runner import ContractResult, run_contract
from features.contracts.suites import KINDS


def read_table(path: Path | str) -> pd.DataFrame:
    """Read a CSV (every cell as text, so valid rows are written back unchanged) or parquet file."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure means the file is unreadable
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot be read as a table ({msg})") from None


__all__ = ["KINDS", "ContractResult", "read_table", "run_contract", "save_contract_outputs"]
