"""The Parquet target: the tables of riswb.diagnose.export.tables, one file each, via pyarrow."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from riswb.diagnose.export.tables import record_counts, tables


def _column(series: pd.Series) -> pa.Array:
    if pd.api.types.is_float_dtype(series):
        # pandas semantics would store NaN as null; a logged NaN is a value, keep it one
        return pa.array(series.to_numpy(), from_pandas=False)
    try:
        return pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # a column mixing numbers and text (a metric logged as a string at some steps):
        # a Parquet column has one type, so the numbers are written as text too
        return pa.array(series.astype(str).where(series.notna(), None), from_pandas=True)


def write(run, directory: Path) -> tuple[list[Path], dict[str, int]]:
    files = []
    for stem, table in tables(run).items():
        path = directory / f"{stem}.parquet"
        pq.write_table(pa.table({str(name): _column(table[name]) for name in table.columns}), path)
        files.append(path)
    return files, record_counts(run)
