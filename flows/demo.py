"""The main job end to end (`facesurv demo`): every stage that has landed, in order.

Each stage is a function of a shared context; a stage whose library has not landed raises
NotAvailableError and is listed as not available with its issue number, never faked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facesurv.config import Params
from facesurv.errors import NotAvailableError
from facesurv.workspace import Workspace


@dataclass
class StageResult:
    name: str
    status: str            # done | not available | failed
    seconds: float
    detail: str = ""


@dataclass
class DemoContext:
    ws: Workspace
    params: Params
    log: Callable[[str], None]
    state: dict[str, Any] = field(default_factory=dict)


def stage_cohort(ctx: DemoContext) -> str:
    from facesurv.atomic import atomic_path
    from features.cohort import import_cohort, summarize

    c = ctx.params.cohort
    df = import_cohort(c.base, seed=c.seed, admission_start=c.admission_start,
                       admission_span_days=c.admission_span_days, record_lag_days=c.record_lag_days)
    if ctx.params.demo.patients and ctx.params.demo.patients < len(df):
        df = df.sample(n=ctx.params.demo.patients, random_state=ctx.params.demo.seed).sort_index()
    target = ctx.ws.data_dir / "clinical" / "clinical.csv"
    with atomic_path(target) as tmp:
        df.to_csv(tmp, index=False)
    ctx.state["clinical_csv"] = target
    s = summarize(df)
    ctx.state["cohort_summary"] = s
    return (f"{s['patients']} patients ({c.base}), {s['events']} events, "
            f"median follow-up {s['median_follow_up_days']:.0f} days -> {target.relative_to(ctx.ws.root)}")


def _pending(name: str, issue: int) -> Callable[[DemoContext], str]:
    def run(ctx: DemoContext) -> str:
        raise NotAvailableError(f"{name}: not available yet (issue #{issue})")
    return run


STAGES: list[tuple[str, Callable[[DemoContext], str]]] = [
    ("cohort", stage_cohort),
    ("version (DVC)", _pending("data versioning", 7)),
    ("data contracts", _pending("data contracts", 5)),
    ("alignment", _pending("alignment", 3)),
    ("projection", _pending("projection", 4)),
    ("feature store", _pending("feature store", 5)),
    ("training", _pending("training", 6)),
    ("promotion", _pending("registry promotion", 6)),
    ("scoring + audit", _pending("serving and lineage", 8)),
    ("health and age grids", _pending("latent editing", 4)),
    ("report", _pending("demo report", 9)),
]


def run_demo(out: Path, *, params_overrides: dict[str, dict[str, Any]], log: Callable[[str], None]) -> list[StageResult]:
    """Create (or reuse) the workspace at `out` and run every stage; returns one result per stage."""
    from facesurv.config import with_overrides

    ws = Workspace.create(out)
    params = with_overrides(ws.load_params(), **params_overrides)
    ctx = DemoContext(ws=ws, params=params, log=log)
    results: list[StageResult] = []
    for name, fn in STAGES:
        t0 = time.perf_counter()
        try:
            detail = fn(ctx)
            results.append(StageResult(name, "done", time.perf_counter() - t0, detail))
        except NotAvailableError as exc:
            results.append(StageResult(name, "not available", 0.0, str(exc)))
        log(f"{name}: {results[-1].status} ({results[-1].seconds:.1f}s) {results[-1].detail}")
    return results
