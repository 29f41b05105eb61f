"""Export a run's records to TensorBoard, Parquet or CSV (docs/export.md).

```python
from riswb.diagnose.export import export_run
result = export_run(read_run(path), "tensorboard", Path("tb"))  # tb/<run id>/events.out.tfevents.*
result.files, result.counts                                     # counts: records per kind
```

Every target writes into `<out>/<run id>/`, so one `--out` collects many runs (a TensorBoard
logdir then shows them side by side). A target imports its optional package only when it
is chosen; a missing one is a one-line RiswbError naming the `export` extra. Nothing already
in `out` is deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from riswb.errors import RiswbError

TARGETS = ("tensorboard", "parquet", "csv")
OPTIONAL_PACKAGES = ("tensorboard", "pyarrow")

Writer = Callable[..., tuple[list[Path], dict[str, int]]]


@dataclass
class ExportResult:
    """What one export wrote: the run's folder under `out`, its files, records per kind."""

    target: str
    directory: Path
    files: list[Path]
    counts: dict[str, int]


def _writer(target: str) -> Writer:
    try:
        if target == "tensorboard":
            from riswb.diagnose.export.tb import write
        elif target == "parquet":
            from riswb.diagnose.export.parquet import write
        else:
            from riswb.diagnose.export.tables import write_csv as write
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] not in OPTIONAL_PACKAGES:
            raise
        raise RiswbError(
            f"{target} export needs the `export` extra: pip install 'riswb[export]'"
        ) from None
    return write


def export_run(run, to: str, out: str | Path) -> ExportResult:
    """Write `run` (a riswb.runlog.Run) as `to` (one of TARGETS) under `out/<run id>/`."""
    target = to.strip().lower()
    if target not in TARGETS:
        raise RiswbError(f"unknown --to {to!r} (choose from {', '.join(TARGETS)})")
    write = _writer(target)  # before any folder is made: a missing package leaves no trace
    out = Path(out)
    # resolve(): a run read as "." still gets its own folder name
    directory = out / run.path.resolve().name
    for path in (out, directory):
        if path.exists() and not path.is_dir():
            raise RiswbError(f"--out: {path} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    files, counts = write(run, directory)
    return ExportResult(target, directory, files, counts)
