"""Harrell's C by subgroup (age band, sex, cancer type, ...) for every model: the paper's Fig. 3, made honest.

A C-index on a handful of events is noise with a decimal point. A group with fewer than
`min_events` events therefore gets no number at all (c_index None and the reason), and every
number shown carries a percentile bootstrap CI over the group's own patients.

    groups = group_columns(frame)                      # {"age": bands, "sex": ..., "cancer_type": ...}
    rows = subgroup_c_index_table(time, event, {"coxph": r1, "fusion": r2}, groups, bootstrap=200, seed=0)
    [subgroup_text(r) for r in rows]                   # "0.612 [0.55, 0.67]" / "not shown: fewer than 10 events (7)"

Bootstrap conventions are training.crossfit's: resamples drawn by training.resample.resamples
(those without an event skipped), Stat = {"value", "ci", "resamples"}, the CI None unless
max(10, bootstrap/2) resamples define it. Within a group all models share the resamples, so
their CIs are paired; each group's stream is seeded from (seed, grouping, group), so a group's
numbers do not depend on which other groups or groupings are in the table.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ground.errors import DataError
from ground.types import check_survival_target
from training.crossfit import harrell_c
from training.resample import percentile_stat, resamples

AGE_EDGES = (0, 50, 65, 75, 200)


def _fmt(x: float) -> str:
    return f"{x:g}"


def age_bands(age: Sequence[float] | np.ndarray | pd.Series, *, edges: Sequence[float] = AGE_EDGES) -> pd.Categorical:
    """(n,) ages in years -> (n,) ordered categorical labels, one band per pair of edges.

    With the default edges (0, 50, 65, 75, 200): "<50", "50-64", "65-74", ">=75"; band j holds
    edges[j] <= age < edges[j+1]. Inner labels read "lo-(hi-1)" for whole-number edges
    (ages are whole years in the cohort), "lo-<hi" otherwise. A missing age gets a missing
    label (the table leaves that patient out of the grouping).
    Raises DataError for fewer than 3 or unsorted edges, or an age outside [edges[0], edges[-1]).
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or len(e) < 3 or not np.isfinite(e).all() or not (np.diff(e) > 0).all():
        raise DataError(f"age_bands: edges must be at least 3 finite, strictly increasing numbers, got {list(edges)}; "
                        "use e.g. (0, 50, 65, 75, 200)")
    try:
        a = np.asarray(pd.to_numeric(pd.Series(np.asarray(age, dtype=object)), errors="raise"), dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("age_bands: age must be numeric (years); convert the column first") from None
    if a.ndim != 1:
        raise DataError(f"age_bands: age must be 1-D (one per patient), got shape {a.shape}")
    known = ~np.isnan(a)
    out = known & ((a < e[0]) | (a >= e[-1]))
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise DataError(f"age_bands: {int(out.sum())} ages lie outside [{_fmt(e[0])}, {_fmt(e[-1])}) "
                        f"(first at row {i}: {a[i]!r}); fix them or widen edges")
    whole = bool(np.all(e == np.round(e)))
    labels = []
    for j in range(len(e) - 1):
        lo, hi = e[j], e[j + 1]
        if j == 0:
            labels.append(f"<{_fmt(hi)}")
        elif j == len(e) - 2:
            labels.append(f">={_fmt(lo)}")
        else:
            labels.append(f"{_fmt(lo)}-{_fmt(hi - 1)}" if whole else f"{_fmt(lo)}-<{_fmt(hi)}")
    codes = np.full(len(a), -1, dtype=int)
    codes[known] = np.searchsorted(e, a[known], side="right") - 1
    return pd.Categorical.from_codes(codes, categories=labels, ordered=True)


def group_columns(frame: pd.DataFrame, *, age_column: str = "age", sex_column: str = "sex",
                  cancer_column: str = "cancer_type", extra: Iterable[str] = ()) -> dict[str, Any]:
    """The groups mapping for subgroup_c_index_table from a patients frame (n rows).

    {"age": age_bands(frame[age_column]), "sex": ..., "cancer_type": ..., then each `extra`
    column}, keyed by the column name, only for the columns the frame has (a cohort without
    cancer types simply has no such grouping). Values are (n,) label arrays.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"group_columns: frame must be a pandas DataFrame, got {type(frame).__name__}")
    out: dict[str, Any] = {}
    if age_column in frame.columns:
        out[age_column] = age_bands(frame[age_column])
    for col in (sex_column, cancer_column, *extra):
        if col in frame.columns and col not in out:
            s = frame[col]
            out[col] = s.array if isinstance(s.dtype, pd.CategoricalDtype) else s.to_numpy(dtype=object)
    return out


def _levels(labels: Any, n: int, name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(n,) labels -> ((n,) str labels, (n,) bool missing, groups in display order).

    Categoricals keep their category order (age bands read young to old); other labels are
    sorted as text.
    """
    if isinstance(labels, pd.Series):
        labels = labels.array
    if isinstance(labels, pd.Categorical):
        cat = pd.Categorical(labels)
        missing = np.asarray(cat.isna())
        order = [str(c) for c in cat.categories]
        values = np.asarray(cat.astype(object))
    else:
        values = np.asarray(labels, dtype=object)
        if values.ndim != 1:
            raise DataError(f"subgroups: groups {name!r} must be 1-D (one label per patient), got shape {values.shape}")
        missing = np.asarray(pd.isna(values), dtype=bool)
        order = []
    if len(values) != n:
        raise DataError(f"subgroups: groups {name!r} has {len(values)} labels but there are {n} patients; "
                        "pass one label per patient")
    text = np.array(["" if m else str(v) for v, m in zip(values, missing, strict=True)], dtype=object)
    present = set(text[~missing])
    if order:
        order = [g for g in order if g in present]
    else:
        order = sorted(present)
    return text, missing, order


def _group_rng(seed: int, grouping: str, group: str) -> np.random.Generator:
    # crc32 is stable across runs and platforms (hash() of a str is salted per process)
    key = zlib.crc32(f"{grouping}\0{group}".encode())
    return np.random.default_rng([int(seed), key])


def subgroup_c_index_table(time: np.ndarray, event: np.ndarray, risks: Mapping[str, np.ndarray],
                           groups: Mapping[str, Any], *, min_events: int = 10, bootstrap: int = 200, seed: int = 0,
                           level: float = 0.95) -> list[dict[str, Any]]:
    """Harrell's C of every model in every subgroup, with a bootstrap CI, or the reason there is none.

    Args:
        time, event: (n,) follow-up days (> 0) and event indicators.
        risks: model name -> (n,) log-risk (higher = worse), e.g. out-of-fold risks.
        groups: grouping name -> (n,) labels (array, list, Series or Categorical, e.g. from
            group_columns); missing labels (None/NaN) leave that patient out of that grouping.
        min_events: a group with fewer events gets c_index None and a reason, never a number.
        bootstrap: resamples of the group's patients (0: no CI); seed: RNG seed; level: CI coverage.

    Returns:
        One dict per (grouping, group, model), groupings in the given order, groups in category
        order (categoricals) or sorted, models in the given order:
        {"grouping", "group", "model", "n", "events", "c_index": Stat | None, "reason": str | None}.
        c_index is None with reason "fewer than 10 events (k)" (10 being min_events) or
        "no comparable pair" (e.g. all events at one time); its CI is [None, None] where
        fewer than max(10, bootstrap/2) resamples define it (resamples without an event or a
        comparable pair are dropped; "resamples" counts those kept).

    Raises:
        DataError: a bad target, risk or label array of the wrong length, non-finite risks,
            min_events < 1, a bad bootstrap count or level outside (0, 1).
    """
    time, event = check_survival_target(time, event, allow_all_censored=True, what="subgroups: target")
    n = len(time)
    if isinstance(min_events, bool) or not isinstance(min_events, int | np.integer) or min_events < 1:
        raise DataError(f"subgroups: min_events must be an integer >= 1, got {min_events!r}; use 10")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int | np.integer) or bootstrap < 0:
        raise DataError(f"subgroups: bootstrap must be an integer >= 0 (resamples), got {bootstrap!r}; use e.g. 200")
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise DataError(f"subgroups: level must be in (0, 1), got {level!r}; use 0.95")
    if not isinstance(risks, Mapping) or not risks:
        raise DataError("subgroups: risks must be a non-empty dict {model name: (n,) log-risk}")
    if not isinstance(groups, Mapping) or not groups:
        raise DataError("subgroups: groups must be a non-empty dict {grouping name: (n,) labels}; see group_columns")
    r: dict[str, np.ndarray] = {}
    for name, v in risks.items():
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"subgroups: risk {name!r} must be numeric") from None
        if a.ndim != 1 or len(a) != n:
            raise DataError(f"subgroups: risk {name!r} has shape {a.shape} but there are {n} patients; "
                            "pass one risk per patient")
        if not np.isfinite(a).all():
            raise DataError(f"subgroups: risk {name!r} has {int((~np.isfinite(a)).sum())} NaN or infinite values; "
                            "pass finite risks")
        r[str(name)] = a
    labelled = {str(g): _levels(v, n, str(g)) for g, v in groups.items()}  # check every grouping first

    rows: list[dict[str, Any]] = []
    for grouping, (labels, missing, order) in labelled.items():
        for group in order:
            idx = np.flatnonzero((labels == group) & ~missing)
            t, e = time[idx], event[idx]
            k = int(e.sum())
            base = {"grouping": grouping, "group": group, "n": int(len(idx)), "events": k}
            if k < min_events:
                rows += [{**base, "model": m, "c_index": None, "reason": f"fewer than {min_events} events ({k})"}
                         for m in r]
                continue
            gr = {m: a[idx] for m, a in r.items()}
            points = {m: harrell_c(t, e, a) for m, a in gr.items()}
            samples: dict[str, list[float]] = {m: [] for m in r}
            # one set of resamples of this group's patients, shared by every model (paired CIs)
            for b in resamples(e, count=int(bootstrap), rng=_group_rng(seed, grouping, group)):
                for m, a in gr.items():
                    c = harrell_c(t[b], e[b], a[b])
                    if math.isfinite(c):
                        samples[m].append(c)
            for m in r:
                if not math.isfinite(points[m]):
                    rows.append({**base, "model": m, "c_index": None, "reason": "no comparable pair"})
                else:
                    rows.append({**base, "model": m, "c_index": percentile_stat(points[m], samples[m], int(bootstrap),
                                                                       float(level)), "reason": None})
    return rows


def subgroup_text(row: Mapping[str, Any]) -> str:
    """One row of subgroup_c_index_table -> "0.612 [0.55, 0.67]", "0.612 [no CI]" or
    "not shown: fewer than 10 events (7)"."""
    stat = row.get("c_index")
    if stat is None or stat.get("value") is None:
        return f"not shown: {row.get('reason') or 'undefined'}"
    lo, hi = stat.get("ci") or (None, None)
    ci = "[no CI]" if lo is None or hi is None else f"[{lo:.2f}, {hi:.2f}]"
    return f"{stat['value']:.3f} {ci}"
