"""Data contracts (Great Expectations 1.x): clinical table, alignment manifest, latents.

    res = run_contract(kind, df, params, *, docs_dir=None) -> ContractResult(valid, quarantine, summary)
    save_contract_outputs(res, out_dir) -> {name: path}
    summarize_runs(root)        # one row per contract kind over every run saved under root
    df = read_table(path)       # CSV or parquet, as the contract expects it (malformed lines marked)
    latest_records(df)          # each patient's current record (the later record_known_at wins)
"""

from __future__ import annotations

from features.contracts.report import save_contract_outputs, summarize_runs
from features.contracts.runner import ContractResult, run_contract
from features.contracts.suites import KINDS
from features.contracts.tables import (
           bad_lines,
           latest_records,
           newest_first,
           read_table,
           require_well_formed,
)

__all__ = ["KINDS", "ContractResult", "bad_lines", "latest_records", "newest_first", "read_table", "require_well_formed",
           "run_contract", "save_contract_outputs", "summarize_runs"]
