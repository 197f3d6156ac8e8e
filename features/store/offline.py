"""Offline rows of the feature views: typed, deduplicated, written atomically.

local: each write adds one immutable parquet part file to the view's directory (moved in
from a staging folder with os.replace, so a reader never sees half a file); a file lock
serialises writers so the dedupe check and the new part are consistent.
scale: one PostgreSQL table per view with a UNIQUE constraint on the dedupe keys; rows
are COPYed to a temporary table and inserted with ON CONFLICT DO NOTHING.
Either way writing the same rows again adds nothing and returns 0.

A feature added to a view later (schema.LATENT_ADDED_LATER) is nullable: rows to write may lack
it, and `ensure_offline` (run by every apply and write) gives stored rows without it a null one
(local: the part is rewritten, atomically, under the writers' lock; scale: ALTER TABLE ADD
COLUMN), so Feast, which reads one schema for a whole view, never meets a part without it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.feature_repo.schema import (
    CLINICAL_DEDUPE,
    CLINICAL_TS,
    CLINICAL_VIEW,
    CREATED_TS,
    JOIN_KEY,
    LATENT_ADDED_LATER,
    LATENT_DEDUPE,
    LATENT_FEATURES,
    LATENT_TS,
    LATENT_VIEW,
    OFFLINE_DIR,
    clinical_features,
)
from ground.config import Params
from ground.errors import DataError
from ground.types import LATENT_DIM

STAGING = ".staging"


def view_columns(view: str, base: str) -> tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(timestamp column, dedupe keys, (feature, kind) list) of a view."""
    if view == LATENT_VIEW:
        return LATENT_TS, LATENT_DEDUPE, LATENT_FEATURES
    if view == CLINICAL_VIEW:
        return CLINICAL_TS, CLINICAL_DEDUPE, clinical_features(base)
    raise ValueError(f"unknown feature view {view!r}")


def added_later(view: str) -> tuple[str, ...]:
    """The view's nullable features that rows written before they existed lack."""
    return LATENT_ADDED_LATER if view == LATENT_VIEW else ()


def _with_added_later(df: pd.DataFrame, view: str) -> pd.DataFrame:
    """Stored rows read back: a feature added later is null (None), not absent or NaN, in rows without it."""
    for name in added_later(view):
        df[name] = df[name].astype(object).where(df[name].notna(), None) if name in df.columns else None
    return df


def _utc(values: pd.Series, column: str) -> pd.Series:
    try:
        out = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise DataError(f"column {column}: not ISO-8601 timestamps ({exc}); write them like 2014-03-01T10:00:00+00:00") from None
    if out.isna().any():
        i = int(np.flatnonzero(out.isna().to_numpy())[0])
        raise DataError(f"column {column}: {int(out.isna().sum())} empty timestamps (first at row {i}); fill or drop those rows")
    return out.astype("datetime64[us, UTC]")


def _typed(df: pd.DataFrame, view: str, base: str, *, written_at: dt.datetime) -> pd.DataFrame:
    ts, keys, features = view_columns(view, base)
    optional = added_later(view)
    needed = [JOIN_KEY, ts, *(n for n, _ in features if n not in optional)]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(f"{view} rows lack column(s) {', '.join(missing)}; "
                        f"expected {', '.join(needed)} (base {base})")
    out = pd.DataFrame({JOIN_KEY: df[JOIN_KEY].astype(str).to_numpy()})
    out[ts] = _utc(df[ts], ts).reset_index(drop=True)
    for name, kind in features:
        if name not in df.columns:  # a feature added later, absent from older tables: null
            col = pd.Series([None] * len(df), dtype=object)
        else:
            col = df[name].reset_index(drop=True)
        if kind == "float32_list":
            out[name] = [_latent(v, row) for row, v in enumerate(col)]
        elif kind in ("float64", "float32"):
            num = pd.to_numeric(col, errors="coerce")
            bad = num.isna() & col.notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"{view}.{name}: {int(bad.sum())} values are not numbers (first at row {i}: {col[i]!r})")
            out[name] = num.astype("float32" if kind == "float32" else "float64").to_numpy()
        elif kind == "int64":
            out[name] = pd.to_numeric(col).astype("int64").to_numpy()
        elif kind == "bool":
            out[name] = col.map(lambda v: str(v).strip().lower() in ("1", "true", "yes")).astype(bool).to_numpy()
        else:
            out[name] = col.astype(str).where(col.notna(), None).to_numpy()
    out[CREATED_TS] = pd.Timestamp(written_at).tz_convert("UTC").as_unit("us")
    out = out.drop_duplicates(subset=list(keys), keep="last").reset_index(drop=True)
    return out


def _latent(value: Any, row: int) -> np.ndarray:
    if isinstance(value, str):
        import json

        value = json.loads(value)
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.shape[0] != LATENT_DIM:
        raise DataError(f"latent at row {row} has {arr.shape[0]} values, expected {LATENT_DIM}; run `facesurv validate latents` first")
    return arr


def _arrow_schema(view: str, base: str) -> Any:
    import pyarrow as pa

    ts, _, features = view_columns(view, base)
    kinds = {"float32_list": pa.list_(pa.float32()), "string": pa.string(), "int64": pa.int64(),
             "float32": pa.float32(), "float64": pa.float64(), "bool": pa.bool_()}
    stamp = pa.timestamp("us", tz="UTC")
    return pa.schema([(JOIN_KEY, pa.string()), (ts, stamp), *((n, kinds[k]) for n, k in features),
                      (CREATED_TS, stamp)])


_PG_TYPES = {"float32_list": "real[]", "string": "text", "int64": "bigint", "float32": "real",
             "float64": "double precision", "bool": "boolean"}


def _pg_connect(params: Params) -> Any:
    import psycopg

    s = params.features.scale
    try:
        return psycopg.connect(host=s.postgres_host, port=s.postgres_port, dbname=s.postgres_db,
                               user=s.postgres_user, autocommit=False, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise DataError(f"PostgreSQL at {s.postgres_host}:{s.postgres_port} is not reachable "
                        f"({str(exc).strip().splitlines()[0]}); start it as infra/README.md says") from None


def _pg_table(params: Params, view: str) -> str:
    return f"{params.features.project}_{view}"


def offline_locations(repo_dir: Path | str, params: Params) -> dict[str, str]:
    """Where each view's offline rows live: parquet directories (local) or table names (scale)."""
    repo_dir = Path(repo_dir).resolve()
    if params.profile == "local":
        return {v: str(repo_dir / OFFLINE_DIR / v) for v in (LATENT_VIEW, CLINICAL_VIEW)}
    return {v: f"{params.features.project}_{v}" for v in (LATENT_VIEW, CLINICAL_VIEW)}


def ensure_offline(repo_dir: Path | str, params: Params) -> None:
    """Create the views' offline storage (directories or tables) if missing."""
    base = params.cohort.base
    if params.profile == "local":
        for path in offline_locations(repo_dir, params).values():
            Path(path).mkdir(parents=True, exist_ok=True)
        (Path(repo_dir) / "offline" / STAGING).mkdir(parents=True, exist_ok=True)
        for view in (LATENT_VIEW, CLINICAL_VIEW):
            _upgrade_local_parts(Path(repo_dir), view, base)
        return
    with _pg_connect(params) as conn:
        _planner_settings(conn, params)
        for view in (LATENT_VIEW, CLINICAL_VIEW):
            ts, keys, features = view_columns(view, base)
            cols = ", ".join([f"{JOIN_KEY} text NOT NULL", f"{ts} timestamptz NOT NULL",
                              *(f'"{n}" {_PG_TYPES[k]}' for n, k in features),
                              f"{CREATED_TS} timestamptz NOT NULL",
                              f"UNIQUE ({', '.join(keys)})"])
            conn.execute(f'CREATE TABLE IF NOT EXISTS "{_pg_table(params, view)}" ({cols})')
            kinds = dict(features)
            for name in added_later(view):  # a table created before the feature existed: null in its rows
                conn.execute(f'ALTER TABLE "{_pg_table(params, view)}" ADD COLUMN IF NOT EXISTS '
                             f'"{name}" {_PG_TYPES[kinds[name]]}')


def _planner_settings(conn: Any, params: Params) -> None:
    """The planner default that Feast's point-in-time query needs (features.scale.postgres_nestloop).

    Feast opens its own connections with no session options, so the setting is this role's default
    in this database (ALTER ROLE ... IN DATABASE): other roles and databases are untouched, and
    every new connection of the offline store gets it.
    """
    wanted = "on" if params.features.scale.postgres_nestloop else "off"
    db = params.features.scale.postgres_db
    if conn.execute("SHOW enable_nestloop").fetchone()[0] == wanted:
        return
    from psycopg import sql

    conn.execute(sql.SQL("ALTER ROLE CURRENT_USER IN DATABASE {} SET enable_nestloop = {}").format(
        sql.Identifier(db), sql.Literal(wanted)))


def _upgrade_local_parts(repo_dir: Path, view: str, base: str) -> int:
    """Rewrite the view's parts that lack a feature added later, with nulls in it; returns how many.

    Feast reads a view's parts as one dataset with the first part's columns, so a part without
    the feature would make every read of it fail. The rewritten part is what `_write_local` would
    write for its rows today; os.replace swaps it in whole, under the writers' lock.
    """
    added = added_later(view)
    directory = repo_dir / OFFLINE_DIR / view
    if not added or not directory.is_dir():
        return 0
    import pyarrow as pa
    import pyarrow.parquet as pq
    from filelock import FileLock

    schema = _arrow_schema(view, base)
    staging = repo_dir / OFFLINE_DIR / STAGING
    done = 0
    with FileLock(str(repo_dir / OFFLINE_DIR / f".{view}.lock"), timeout=600):
        for part in _parts(directory):
            have = set(pq.read_schema(part).names)
            if all(c in have for c in added):
                continue
            lacking = [c for c in schema.names if c not in have and c not in added]
            if lacking:
                raise DataError(f"offline part {part} lacks column(s) {', '.join(lacking)}; it was not written "
                                f"by features.store: move it out of {directory}")
            df = pq.read_table(part).to_pandas()
            for name in added:
                if name not in df.columns:
                    df[name] = None
            table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
            tmp = staging / f"{part.name}.{os.getpid()}.upgrade.tmp"
            try:
                pq.write_table(table, tmp)
                os.replace(tmp, part)
            finally:
                tmp.unlink(missing_ok=True)
            done += 1
    return done


def drop_offline(repo_dir: Path | str, params: Params) -> None:
    """Delete the views' offline rows (tables for scale, part files for local)."""
    if params.profile == "local":
        import shutil

        shutil.rmtree(Path(repo_dir) / "offline", ignore_errors=True)
        return
    with _pg_connect(params) as conn:
        for view in (LATENT_VIEW, CLINICAL_VIEW):
            conn.execute(f'DROP TABLE IF EXISTS "{_pg_table(params, view)}"')


def write_rows(repo_dir: Path | str, params: Params, view: str, df: pd.DataFrame) -> int:
    """Add the rows of `df` that the view does not hold yet; returns how many were new."""
    base = params.cohort.base
    written_at = dt.datetime.now(dt.UTC)
    rows = _typed(df, view, base, written_at=written_at)
    if rows.empty:
        return 0
    ensure_offline(repo_dir, params)
    if params.profile == "local":
        return _write_local(Path(repo_dir), view, base, rows)
    return _write_pg(params, view, base, rows)


def _key_frame(df: pd.DataFrame, keys: tuple[str, ...]) -> pd.Series:
    parts = [df[k].astype(str) if not pd.api.types.is_datetime64_any_dtype(df[k])
             else df[k].dt.tz_convert("UTC").astype("int64").astype(str) for k in keys]
    out = parts[0]
    for p in parts[1:]:
        out = out + "\x1f" + p
    return out


def _parts(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("part-*.parquet") if p.is_file())


def views_without_rows(repo_dir: Path | str, params: Params) -> list[str]:
    """The views whose offline storage holds no rows yet that a point-in-time join could not read.

    local: a view directory without parts (DuckDB cannot read an empty file set). scale: none,
    as an empty table joins like any other.
    """
    if params.profile != "local":
        return []
    return [view for view, path in offline_locations(repo_dir, params).items() if not _parts(Path(path))]


def _write_local(repo_dir: Path, view: str, base: str, rows: pd.DataFrame) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from filelock import FileLock


    directory = repo_dir / OFFLINE_DIR / view
    staging = repo_dir / OFFLINE_DIR / STAGING
    _, keys, _ = view_columns(view, base)
    with FileLock(str(repo_dir / OFFLINE_DIR / f".{view}.lock"), timeout=600):
        seen: set[str] = set()
        for part in _parts(directory):
            seen.update(_key_frame(pq.read_table(part, columns=list(keys)).to_pandas(), keys))
        new = rows[~_key_frame(rows, keys).isin(seen).to_numpy()]
        if new.empty:
            return 0
        table = pa.Table.from_pandas(new, schema=_arrow_schema(view, base), preserve_index=False)
        digest = hashlib.sha256("\n".join(_key_frame(new, keys)).encode()).hexdigest()[:12]
        stamp = new[CREATED_TS].iloc[0].strftime("%Y%m%dT%H%M%S%f")
        name = f"part-{stamp}-{digest}.parquet"
        tmp = staging / f"{name}.{os.getpid()}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, directory / name)
        finally:
            tmp.unlink(missing_ok=True)
    return len(new)


def _write_pg(params: Params, view: str, base: str, rows: pd.DataFrame) -> int:
    ts, keys, features = view_columns(view, base)
    cols = [JOIN_KEY, ts, *(n for n, _ in features), CREATED_TS]
    quoted = ", ".join(f'"{c}"' for c in cols)
    table = _pg_table(params, view)
    with _pg_connect(params) as conn:
        conn.execute(f'CREATE TEMP TABLE incoming (LIKE "{table}" INCLUDING DEFAULTS) ON COMMIT DROP')
        data = rows[cols].copy()
        for name, kind in features:
            if kind == "float32_list":  # one array literal per row: far cheaper than adapting 512 floats
                data[name] = _pg_array_literals(data[name])
        with conn.cursor() as cur:
            with cur.copy(f"COPY incoming ({quoted}) FROM STDIN") as copy:
                for rec in data.itertuples(index=False, name=None):
                    copy.write_row([_pg_value(v) for v in rec])
            cur.execute(f'INSERT INTO "{table}" ({quoted}) SELECT {quoted} FROM incoming '
                        f"ON CONFLICT ({', '.join(keys)}) DO NOTHING")
            n = cur.rowcount
        conn.commit()
    return int(n)


def _pg_array_literals(values: pd.Series) -> list[str]:
    import io

    buf = io.StringIO()
    np.savetxt(buf, np.stack([np.asarray(v, np.float32) for v in values]), fmt="%.9g", delimiter=",")
    return ["{" + line + "}" for line in buf.getvalue().splitlines()]


def _pg_value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [float(x) for x in v]
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    if isinstance(v, np.generic):
        return v.item()
    return v


def rows_written_since(repo_dir: Path | str, params: Params, view: str,
                       since: dt.datetime | None) -> tuple[int, dt.datetime | None, dt.datetime | None, list[str]]:
    """(rows written after `since`, their earliest event time, latest write time, their patients)."""
    ts, _, _ = view_columns(view, params.cohort.base)
    if params.profile == "local":
        import pyarrow.parquet as pq


        frames = [pq.read_table(p, columns=[JOIN_KEY, ts, CREATED_TS]).to_pandas()
                  for p in _parts(Path(repo_dir) / OFFLINE_DIR / view)]
        if not frames:
            return 0, None, None, []
        df = pd.concat(frames, ignore_index=True)
        if since is not None:
            df = df[df[CREATED_TS] > pd.Timestamp(since)]
        if df.empty:
            return 0, None, None, []
        return (len(df), df[ts].min().to_pydatetime(), df[CREATED_TS].max().to_pydatetime(),
                sorted(df[JOIN_KEY].unique()))
    with _pg_connect(params) as conn:
        where, args = ("", []) if since is None else (f" WHERE {CREATED_TS} > %s", [since])
        table = _pg_table(params, view)
        n, lo, hi = conn.execute(f'SELECT count(*), min({ts}), max({CREATED_TS}) FROM "{table}"{where}',
                                 args).fetchone()
        ids = [r[0] for r in conn.execute(f'SELECT DISTINCT {JOIN_KEY} FROM "{table}"{where}', args)]
    return int(n), lo, hi, sorted(ids)


def latest_rows(repo_dir: Path | str, params: Params, view: str, patient_ids: list[str],
                end: dt.datetime) -> pd.DataFrame:
    """Each listed patient's latest row with event time < end (ties: the latest write)."""
    ts, _, _ = view_columns(view, params.cohort.base)
    if params.profile == "local":
        import pyarrow.compute as pc
        import pyarrow.parquet as pq


        wanted = set(patient_ids)
        frames = []
        for part in _parts(Path(repo_dir) / OFFLINE_DIR / view):
            table = pq.read_table(part)
            mask = pc.is_in(table[JOIN_KEY], value_set=__import__("pyarrow").array(sorted(wanted)))
            frames.append(table.filter(mask).to_pandas())
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    else:
        with _pg_connect(params) as conn:
            cur = conn.execute(f'SELECT * FROM "{_pg_table(params, view)}" WHERE {JOIN_KEY} = ANY(%s)',
                               [list(patient_ids)])
            df = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
            if "latent" in df.columns:
                df["latent"] = df["latent"].map(lambda v: np.asarray(v, np.float32))
    if df.empty:
        return df
    df = df[pd.to_datetime(df[ts], utc=True) < pd.Timestamp(end)]
    df = df.sort_values([JOIN_KEY, ts, CREATED_TS]).drop_duplicates(JOIN_KEY, keep="last")
    return _with_added_later(df.reset_index(drop=True), view)


def read_rows(repo_dir: Path | str, params: Params, view: str) -> pd.DataFrame:
    """Every offline row of a view (tests, audits and benchmarks read it)."""
    if params.profile == "local":
        import pyarrow.parquet as pq


        parts = _parts(Path(repo_dir) / OFFLINE_DIR / view)
        if not parts:
            return pd.DataFrame(columns=_arrow_schema(view, params.cohort.base).names)
        return _with_added_later(pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True), view)
    with _pg_connect(params) as conn:
        cur = conn.execute(f'SELECT * FROM "{_pg_table(params, view)}"')
        cols = [d.name for d in cur.description]
        return _with_added_later(pd.DataFrame(cur.fetchall(), columns=cols), view)
