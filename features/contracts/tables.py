"""Reading the tables the contracts check, and the one rule for corrections.

CSV files are read with the csv module, line by line against the header, so that a line with
too many or too few fields (a missing quote, a stray separator) is one bad row, not a shifted
table: it becomes a row with only its first field kept (when that is a valid id) and is listed
in `df.attrs[BAD_LINES]` ({row index: reason}); the contract run quarantines exactly those rows.
A file that is not UTF-8 text (a binary, a spreadsheet, an image) is refused with one line.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from ground.clinical_rules import is_valid_id
from ground.errors import DataError

BAD_LINES = "bad_lines"
_SNIFF = 1 << 16


def read_table(path: Path | str) -> pd.DataFrame:
    """Read a CSV (every cell as text, so valid rows are written back unchanged), a parquet file, or
    a projection shard (.npz, as the latent table: features.latents).

    Raises:
        DataError: one line: no such file, not a regular file, binary / not UTF-8 text, no header,
            a repeated column name, or a parser failure (with its line).
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if path.suffix.lower() == ".npz":
            from features.latents import shard_table

            return shard_table(path).to_pandas()
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a table file") from None
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unreadable
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot be read as a table ({msg})") from None
    return parse_csv(raw, name=str(path))


def parse_csv(raw: bytes, *, name: str = "<csv>") -> pd.DataFrame:
    """The CSV text of `raw` as a frame of strings (NaN for empty cells); see the module doc."""
    if b"\x00" in raw[:_SNIFF]:
        raise DataError(f"{name}: cannot be read as a table (binary content, not CSV text)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: cannot be read as a table (not UTF-8 text: byte 0x{raw[exc.start]:02x} at "
                        f"offset {exc.start}; save the file as UTF-8 CSV)") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not any(f.strip() for f in header):  # leading blank lines
            header = next(reader, None)
        if header is None:
            raise DataError(f"{name}: cannot be read as a table (the file is empty: no header line)")
        columns = [h if h != "" else f"Unnamed: {i}" for i, h in enumerate(header)]
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise DataError(f"{name}: cannot be read as a table (the header repeats column(s) {', '.join(repeated)})")
        width = len(columns)
        rows: list[list[object]] = []
        bad: dict[int, str] = {}
        for fields in reader:
            if not fields or (len(fields) == 1 and fields[0] == ""):
                continue  # blank line
            if len(fields) != width:
                first = fields[0]
                keep = first if is_valid_id(first) else np.nan
                bad[len(rows)] = (f"line {reader.line_num} has {len(fields)} fields but the header has {width} "
                                  "(a stray separator or quote); the row cannot be placed in columns")
                rows.append([keep, *([np.nan] * (width - 1))])
                continue
            rows.append([f if f != "" else np.nan for f in fields])
    except csv.Error as exc:
        raise DataError(f"{name}: cannot be read as a table (line {reader.line_num}: {exc})") from None
    df = pd.DataFrame(rows, columns=columns, dtype=object) if rows else pd.DataFrame(
        {c: pd.Series(dtype=object) for c in columns})
    if bad:
        df.attrs[BAD_LINES] = bad
    return df


def bad_lines(df: pd.DataFrame) -> dict[int, str]:
    """{row label: reason} of the rows read_table could not place in columns."""
    return dict(df.attrs.get(BAD_LINES) or {})


def require_well_formed(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """df unchanged, or DataError naming its first malformed line (for tables no contract checks)."""
    bad = bad_lines(df)
    if bad:
        first = next(iter(bad.values()))
        raise DataError(f"{what}: {len(bad)} malformed line(s), first: {first}")
    return df


def latest_records(df: pd.DataFrame, *, time_column: str = "record_known_at") -> pd.DataFrame:
    """Each patient's current record: the row with the latest time_column (later rows win ties).

    The correction rule of the clinical contract: a later record_known_at supersedes an earlier
    row of the same patient, which stays in the table (and the feature store) as history.
    """
    if df.empty or "patient_id" not in df.columns or time_column not in df.columns:
        return df
    when = pd.to_datetime(df[time_column], utc=True, errors="coerce", format="ISO8601")
    order = pd.DataFrame({"when": when.to_numpy(), "pos": np.arange(len(df))}, index=df.index)
    order = order.sort_values(["when", "pos"], na_position="first", kind="stable")
    keep = df.loc[order.index, "patient_id"].duplicated(keep="last")
    chosen = order.index[~keep.to_numpy()]
    return df.loc[sorted(chosen, key=df.index.get_loc)]


def newest_first(df: pd.DataFrame, *, time_column: str = "record_known_at") -> pd.DataFrame:
    """df ordered by time_column, latest first (ties: later rows first), so first-wins lookups see corrections."""
    if df.empty or time_column not in df.columns:
        return df
    when = pd.to_datetime(df[time_column], utc=True, errors="coerce", format="ISO8601")
    order = pd.DataFrame({"when": when.to_numpy(), "pos": np.arange(len(df))})
    order = order.sort_values(["when", "pos"], ascending=False, na_position="last", kind="stable")
    return df.iloc[order.index.to_numpy()]
