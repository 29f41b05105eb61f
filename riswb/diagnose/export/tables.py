"""The tabular layout shared by the Parquet and CSV targets, and the CSV writer.

One table per scalar kind (`scalars-<kind>`: `step`, `kind`, then that kind's keys, sorted
by step, exactly the rows and columns of `run.scalars` for that kind), `spectra` (one row per
eigenvalue: `step`, `name`, `index` (0 = largest), `value`, then any other field of the
record) and `events` (`step`, `event`, `time`, and `payload`: the other fields as strict
JSON text). NaN and ±Inf stay floats; CSV spells them `nan`, `inf`, `-inf`, which
`pandas.read_csv` reads back as floats.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from riswb.jsonsafe import strict_json

EVENT_COLUMNS = ("step", "event", "time")


def scalar_tables(run) -> dict[str, pd.DataFrame]:
    tables = {}
    for kind in run.kinds():
        frame = run.kind(kind)
        frame.insert(1, "kind", kind)
        tables[f"scalars-{kind}"] = frame
    return tables


def spectra_table(records: list[dict]) -> pd.DataFrame:
    # long form: spectra of different sizes share one table, and CSV has no list cells
    if not records:
        return pd.DataFrame({"step": [], "name": [], "index": [], "value": []})
    lengths = np.array([len(record["values"]) for record in records])
    meta = pd.DataFrame.from_records(
        [{k: v for k, v in record.items() if k != "values"} for record in records]
    )
    rows = meta.loc[meta.index.repeat(lengths)].reset_index(drop=True)
    rows.insert(2, "index", np.concatenate([np.arange(n) for n in lengths]))
    values = [value for record in records for value in record["values"]]
    rows.insert(3, "value", np.asarray(values, dtype=np.float64))
    return rows


def events_table(records: list[dict]) -> pd.DataFrame:
    # payloads differ per event: one JSON column instead of a column per field, mostly empty
    return pd.DataFrame(
        {
            "step": [record.get("step") for record in records],
            "event": [record.get("event") for record in records],
            "time": [record.get("time") for record in records],
            "payload": [
                json.dumps(
                    strict_json({k: v for k, v in record.items() if k not in EVENT_COLUMNS}),
                    allow_nan=False,
                )
                for record in records
            ],
        }
    )


def tables(run) -> dict[str, pd.DataFrame]:
    """File stem → table, for every file a tabular export writes."""
    return {
        **scalar_tables(run),
        "spectra": spectra_table(run.spectrum_records),
        "events": events_table(run.event_records),
    }


def record_counts(run) -> dict[str, int]:
    counts = {kind: len(run.kind(kind)) for kind in run.kinds()}
    counts["spectra"] = len(run.spectrum_records)
    counts["events"] = len(run.event_records)
    return counts


def write_csv(run, directory: Path) -> tuple[list[Path], dict[str, int]]:
    files = []
    for stem, table in tables(run).items():
        path = directory / f"{stem}.csv"
        # pandas writes NaN as an empty cell unless told; "nan" reads back as NaN, and
        # ±inf are already written as inf/-inf
        table.to_csv(path, index=False, na_rep="nan")
        files.append(path)
    return files, record_counts(run)
