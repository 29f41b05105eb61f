"""Reading a run's records as numbers: the helpers the rules, the tables and the plots share.

A scalar kind's frame holds `step`, sometimes `opt_step` (and `time` in foreign logs), and
one column per logged key (docs/internals.md §3); `value_columns` names the keys, `col`
reads one as float64.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from riswb.runlog import Run

# Record bookkeeping, not logged values.
AXIS_COLUMNS = frozenset({"step", "opt_step", "time"})


def value_columns(frame: pd.DataFrame, prefix: str = "", exclude: Iterable[str] = ()) -> list[str]:
    """The logged keys of a kind's frame (those starting with `prefix`), in log order."""
    skip = AXIS_COLUMNS | set(exclude)
    return [c for c in frame.columns if c not in skip and c.startswith(prefix)]


def col(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A column as float64 (NaN where absent or not numeric)."""
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def latest_spectra(run: Run) -> tuple[int | None, dict[str, list[float]]]:
    """(step, name -> eigenvalues) of the latest evaluation in spectra.jsonl."""
    records = run.spectrum_records
    if not records:
        return None, {}
    step = max(int(r.get("step", -1)) for r in records)
    out = {}
    for record in records:
        if int(record.get("step", -1)) == step and isinstance(record.get("values"), list):
            out[str(record.get("name"))] = [float(v) for v in record["values"]]
    return step, out
