"""Run a contract with Great Expectations and split rows into valid and quarantined."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features.contracts.suites import BUILDERS, KINDS, Check
from features.contracts.tables import bad_lines
from ground.config import Params
from ground.errors import DataError

REASON = "reason"
EXPECTATION = "expectation"
ROW_PARSED = "row_fields_match_header"   # view-only column: False for lines read_table could not place


@dataclass
class ContractResult:
    """valid: the passing input rows, unchanged; quarantine: failing rows + reason, expectation."""

    kind: str
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    summary: dict[str, Any]
    gx_result: dict[str, Any] = field(repr=False, default_factory=dict)
    docs_index: Path | None = None

    @property
    def passed(self) -> bool:
        return bool(self.summary["passed"])

    def failure_message(self) -> str:
        s = self.summary
        worst = "; ".join(f"{f['expectation']}: {f['rows']} rows ({f['reason']})" for f in s["failures"][:5])
        if not s["rows"]:
            return f"{self.kind} contract failed: the table has no rows and {worst or 'nothing to validate'}"
        return (f"{self.kind} contract failed: {s['failing']} of {s['rows']} rows ({s['failing_fraction']:.1%}) "
                f"fail, above the {s['threshold']:.1%} threshold; {worst}")


def _context(docs_dir: Path | None) -> Any:
    import logging

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX pins this module's logger at INFO, so every validation printed a line about a
    # temporary docs directory whatever the application's logging level; WARNING keeps its problems
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        ctx.add_data_docs_site("facesurv", {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    return ctx


def run_contract(kind: str, df: pd.DataFrame, params: Params, *, docs_dir: Path | str | None = None) -> ContractResult:
    """Validate a table against its contract (ephemeral GX context, suite built in code).

    Args:
        kind: clinical | manifest | latents.
        df: (n, ...) the table as read from its file (CSV strings are fine: the contract
            parses them in a view and never changes the rows it returns).
        docs_dir: when given, GX data docs for this run are built there.

    Returns:
        ContractResult; summary["passed"] is False only when the failing fraction exceeds
        params.contracts.max_failing_fraction.
    """
    if kind not in KINDS:
        raise DataError(f"unknown contract {kind!r}; choose one of {', '.join(KINDS)}")
    import great_expectations as gx

    malformed = {df.index.get_loc(label): why for label, why in bad_lines(df).items() if label in df.index}
    df = df.reset_index(drop=True)
    df.attrs = {}  # the row marks are consumed here; the frames returned carry none
    contract = BUILDERS[kind](df, params)
    if malformed:
        contract.view[ROW_PARSED] = [i not in malformed for i in range(len(df))]
        contract.checks.append(Check("ExpectColumnValuesToBeInSet", {"column": ROW_PARSED, "value_set": [True]},
                                     "a line whose field count differs from the header's",
                                     row_reasons=malformed, exclusive=True))
    derived = [c for c in contract.view.columns if c not in df.columns]  # view-only columns, never a mismatch
    for i, check in enumerate(contract.checks):
        if check.expectation == "ExpectTableColumnsToMatchSet" and derived:
            kwargs = {**check.kwargs, "column_set": [*check.kwargs["column_set"], *derived]}
            contract.checks[i] = dataclasses.replace(check, kwargs=kwargs)
    docs = Path(docs_dir).resolve() if docs_dir is not None else None
    ctx = _context(docs)
    tag = f"{kind}_{uuid.uuid4().hex[:8]}"
    batch = ctx.data_sources.add_pandas(f"src_{tag}").add_dataframe_asset(kind).add_batch_definition_whole_dataframe("all")
    suite = gx.ExpectationSuite(name=f"facesurv_{kind}_contract")
    for i, check in enumerate(contract.checks):
        cls = getattr(gx.expectations, check.expectation)
        suite.add_expectation(cls(**check.kwargs, meta={"check": i, "reason": check.reason}))
    suite = ctx.suites.add(suite)
    definition = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"validate_{tag}", data=batch, suite=suite))
    result_format = {"result_format": "COMPLETE"}
    if docs is not None:
        checkpoint = ctx.checkpoints.add(gx.Checkpoint(
            name=f"checkpoint_{tag}", validation_definitions=[definition], result_format=result_format,
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["facesurv"])]))
        run = checkpoint.run(batch_parameters={"dataframe": contract.view})
        result = next(iter(run.run_results.values()))
    else:
        result = definition.run(batch_parameters={"dataframe": contract.view}, result_format=result_format)
    return _split(kind, df, contract.checks, result, params, docs)


def _split(kind: str, df: pd.DataFrame, checks: list[Check], result: Any, params: Params,
           docs: Path | None) -> ContractResult:
    n = len(df)
    failed: list[tuple[Check, str, list[int]]] = []
    for r in result.results:
        if r.success:
            continue
        check = checks[int(r.expectation_config.meta["check"])]
        raised = bool(r.exception_info and r.exception_info.get("raised_exception"))
        rows = None if raised else (r.result or {}).get("unexpected_index_list")
        if rows is None:  # table-level (or a check that could not run): no row of the table can be trusted
            rows = list(range(n))
        reason = check.reason
        if check.expectation == "ExpectTableColumnsToMatchSet":
            mismatch = ((r.result or {}).get("details") or {}).get("mismatched") or {}
            bits = [f"{k}: {', '.join(map(str, v))}" for k, v in sorted(mismatch.items()) if v]
            reason = f"{reason} [{'; '.join(bits)}]" if bits else reason
        failed.append((check, reason, sorted({int(i) for i in rows})))
    # a row failing an exclusive check (a malformed line) is told only that check's reasons
    exclusive = {i for check, _, rows in failed if check.exclusive for i in rows}
    reasons: list[list[str]] = [[] for _ in range(n)]
    labels: list[list[str]] = [[] for _ in range(n)]
    failures: list[dict[str, Any]] = []
    for check, reason, rows in failed:
        if not check.exclusive:
            rows = [i for i in rows if i not in exclusive]
        for i in rows:
            reasons[i].append((check.row_reasons or {}).get(i, reason))
            labels[i].append(check.label)
        if rows or not n:  # with no rows a failed (table-level) check is still a failure
            failures.append({"expectation": check.label, "reason": reason, "rows": len(rows)})
    bad = [bool(x) for x in reasons]
    mask = pd.Series(bad, index=df.index, dtype=bool)
    quarantine = df[mask].copy()
    quarantine[REASON] = ["; ".join(x) for x, b in zip(reasons, bad, strict=True) if b]
    quarantine[EXPECTATION] = ["; ".join(x) for x, b in zip(labels, bad, strict=True) if b]
    failing = int(mask.sum())
    fraction = failing / n if n else 0.0
    threshold = params.contracts.max_failing_fraction
    failures.sort(key=lambda f: -int(f["rows"]))
    summary = {
        "contract": kind, "rows": n, "valid": n - failing, "failing": failing,
        # a table with no rows passes only when nothing failed (a binary or foreign file has no rows either)
        "failing_fraction": round(fraction, 6), "threshold": threshold,
        "passed": fraction <= threshold and (n > 0 or not failures),
        "expectations": len(result.results), "failures": failures,
    }
    index = docs / "index.html" if docs is not None and (docs / "index.html").is_file() else None
    return ContractResult(kind=kind, valid=df[~mask].copy(), quarantine=quarantine, summary=summary,
                          gx_result=result.to_json_dict(), docs_index=index)
