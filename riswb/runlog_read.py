"""Reading runs (docs/design.md §4): `read_run`, `Run`, `list_runs`, `resolve_run`.

The reader never raises on what is inside a run directory: bad lines are dropped and
counted (riswb/runlog_records.py), a manifest that is not a JSON object makes the run
"corrupt" but still readable, and both show in `Run.warnings`, which `riswb report` prints.
It raises RiswbError only when there is no run to read.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd

from riswb.errors import RiswbError
from riswb.runlog_disk import (
    MANIFEST,
    STREAMS,
    clean_leftovers,
    default_runs_dir,
    sweep_runs_dir,
    writer_alive,
)
from riswb.runlog_records import Problems, decode_manifest, parse_stream

_STAMPED = re.compile(r"^\d{8}-\d{6}-")  # run ids RunWriter gives: <YYYYmmdd-HHMMSS>-<name>


def _frame(records: list[dict]) -> pd.DataFrame:
    """Records → DataFrame. A probe writes the same keys in the same order every time, so
    records are grouped by key signature and each group becomes one numeric block (an
    order of magnitude faster than from_records on 100k-step runs); a group with text
    values takes pandas' general path."""
    by_signature: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        by_signature[tuple(record)].append(record)
    blocks = []
    for signature, group in by_signature.items():
        columns = [key for key in signature if key != "kind"]
        pick = itemgetter(*columns)
        try:
            values = np.array([pick(r) for r in group], dtype=np.float64).reshape(len(group), -1)
        except ValueError:
            blocks.append(pd.DataFrame.from_records(group, exclude=["kind"]))
            continue
        block = pd.DataFrame(values, columns=columns)
        block["step"] = block["step"].astype(np.int64)
        blocks.append(block)
    if len(blocks) == 1:
        return blocks[0]
    return pd.concat(blocks, ignore_index=True, sort=False)


@dataclass
class Run:
    """A loaded run: the manifest and the three streams as DataFrames. `dropped` counts the
    lines of each file the reader could not use; `warnings` says why."""

    path: Path
    manifest: dict
    warnings: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    _scalar_records: list[dict] = field(default_factory=list, repr=False)
    _spectra_records: list[dict] = field(default_factory=list, repr=False)
    _event_records: list[dict] = field(default_factory=list, repr=False)

    @property
    def id(self) -> str:
        return self.manifest.get("id", self.path.name)

    @property
    def status(self) -> str:
        """The manifest's status; a "running" run whose writer is gone reads "killed"
        (riswb/runlog_disk.py: the writer's lock, else its PID)."""
        status = self.manifest.get("status", "unknown")
        if status == "running" and not writer_alive(self.path, self.manifest):
            return "killed"
        return status

    @cached_property
    def _by_kind(self) -> dict[str, pd.DataFrame]:
        grouped: dict[str, list[dict]] = defaultdict(list)
        for record in self._scalar_records:
            grouped[record["kind"]].append(record)
        frames = {}
        for kind, records in grouped.items():
            frame = _frame(records)
            frames[kind] = frame.sort_values("step", kind="stable").reset_index(drop=True)
        return frames

    def kinds(self) -> list[str]:
        return sorted(self._by_kind)

    def kind(self, name: str) -> pd.DataFrame:
        """Scalars of one kind: a `step` column and one column per key, sorted by step."""
        frame = self._by_kind.get(name)
        return frame.copy() if frame is not None else pd.DataFrame({"step": []})

    @cached_property
    def scalars(self) -> pd.DataFrame:
        frames = [frame.assign(kind=kind) for kind, frame in self._by_kind.items()]
        if not frames:
            return pd.DataFrame({"step": [], "kind": []})
        combined = pd.concat(frames, ignore_index=True, sort=False)
        ordered = ["step", "kind"] + [c for c in combined.columns if c not in ("step", "kind")]
        return combined[ordered]

    @cached_property
    def spectra(self) -> pd.DataFrame:
        if not self._spectra_records:
            return pd.DataFrame({"step": [], "name": [], "values": []})
        return pd.DataFrame.from_records(self._spectra_records)

    @cached_property
    def events(self) -> pd.DataFrame:
        if not self._event_records:
            return pd.DataFrame({"step": [], "event": [], "time": []})
        return pd.DataFrame.from_records(self._event_records)

    @property
    def event_records(self) -> list[dict]:
        """Every events.jsonl record in file order, as plain dicts (payloads differ by event,
        so a frame would pad each with NaN)."""
        return self._event_records

    @property
    def spectrum_records(self) -> list[dict]:
        """Every spectra.jsonl record in file order (`values` stays a list)."""
        return self._spectra_records

    def events_of(self, name: str) -> list[dict]:
        """The payloads of one event type, in order, as plain dicts."""
        return [record for record in self._event_records if record.get("event") == name]


def _read_manifest(root: Path, warnings: list[str]) -> dict:
    try:
        text = (root / MANIFEST).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        if not any((root / f"{stream}.jsonl").exists() for stream in STREAMS):
            raise RiswbError(f"{root} is not a riswb run directory (no manifest.json)") from None
        warnings.append("manifest.json is missing")
        return {"id": root.name, "status": "unknown"}
    except OSError as error:
        manifest, notes = None, [f"manifest.json is unreadable ({error.strerror or error})"]
    else:
        manifest, notes = decode_manifest(text)
    warnings.extend(notes)
    if manifest is None:
        warnings.append("status unknown: the run is marked corrupt")
        return {"id": root.name, "status": "corrupt"}
    error = manifest.get("error")
    if manifest.get("status") == "crashed" and error:
        warnings.append(f"crashed: {error.get('type')}: {error.get('message')}")
    return manifest


def read_run(path: str | os.PathLike) -> Run:
    """Load a run directory; tolerant of torn and corrupt lines, of a corrupt manifest, and of
    runs still in progress. A dead writer's manifest.json.tmp is removed on the way."""
    root = Path(path)
    if not root.is_dir():
        raise RiswbError(f"no run directory at {root}")
    warnings: list[str] = []
    manifest = _read_manifest(root, warnings)
    records, dropped = {}, {}
    for stream in STREAMS:
        problems = Problems(f"{stream}.jsonl")
        records[stream] = parse_stream(root / problems.name, stream, problems)
        dropped[problems.name] = problems.dropped
        message = problems.warning()
        if message:
            warnings.append(message)
    run = Run(
        path=root,
        manifest=manifest,
        warnings=warnings,
        dropped=dropped,
        _scalar_records=records["scalars"],
        _spectra_records=records["spectra"],
        _event_records=records["events"],
    )
    clean_leftovers(root, live=run.status == "running")
    return run


def _has_manifest(folder: Path) -> bool:
    try:
        return (folder / MANIFEST).is_file()
    except OSError:  # a folder we may not enter is not a run we can list
        return False


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[Path]:
    """Run directories under `runs_dir`, oldest first: riswb's timestamped ids in order, after
    any other folders (so a folder named e.g. "latest" never is the latest run). Dead
    writers' temporary manifests are removed on the way."""
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not root.is_dir():
        return []
    try:
        runs = [child for child in root.iterdir() if _has_manifest(child)]
    except OSError as error:
        raise RiswbError(f"cannot list runs under {root}: {error.strerror or error}") from None
    sweep_runs_dir(root)
    return sorted(runs, key=lambda run: (_STAMPED.match(run.name) is not None, run.name))


def resolve_run(reference: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> Path:
    """A run from "latest" (checked first: a folder of that name never shadows it), a path,
    or a run id or unique id prefix under `runs_dir`."""
    if str(reference) == "latest":
        runs = list_runs(runs_dir)
        if not runs:
            raise RiswbError("no runs yet (riswb overfit creates one)")
        return runs[-1]
    candidate = Path(reference)
    if candidate.is_dir():
        return candidate
    runs = list_runs(runs_dir)
    matches = [run for run in runs if run.name == str(reference)]
    if not matches:
        matches = [run for run in runs if run.name.startswith(str(reference))]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise RiswbError(f"run reference {reference!r} is ambiguous ({len(matches)} runs match)")
    raise RiswbError(f"no run directory at {reference}")
