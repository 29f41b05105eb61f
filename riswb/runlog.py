"""Run directories (docs/design.md §4): an append-only writer and a tolerant reader.

A run is a folder `<runs_dir>/<YYYYmmdd-HHMMSS>-<name>/` holding `manifest.json` (atomic,
rewritten at start and end), and three JSONL streams written one flushed line per record:
`scalars.jsonl`, `spectra.jsonl`, `events.jsonl`. Because every line is flushed as it is
written, a run killed with SIGKILL keeps everything up to its last record; the reader drops
a torn last line and says so in `Run.warnings`. NaN and ±Infinity survive the round trip
(Python's json writes and reads `NaN`/`Infinity`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from riswb.errors import RiswbError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
STREAMS = ("scalars", "spectra", "events")


def default_runs_dir() -> Path:
    return Path(os.environ.get("RISWB_RUNS_DIR") or "runs")


def _plain(value: Any) -> Any:
    """Turn numpy/torch scalars and tuples into JSON-ready Python values."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays/scalars, torch tensors
        return _plain(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, allow_nan=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    from riswb import __version__

    versions = {"riswb": __version__, "python": platform.python_version()}
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch"] = torch.__version__
    return versions


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


class RunWriter:
    """Creates a run directory and appends records to it; never overwrites a run."""

    def __init__(
        self,
        runs_dir: str | os.PathLike | None = None,
        name: str | None = None,
        *,
        config: dict | None = None,
        seed: int | None = None,
        argv: list[str] | None = None,
        **manifest_fields: Any,
    ):
        root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        root.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or "run").strip("-") or "run"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.path = self._claim(root, f"{stamp}-{slug}")
        self.manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "id": self.path.name,
            "status": "running",
            "argv": list(sys.argv if argv is None else argv),
            "config": _plain(config or {}),
            "seed": seed,
            "versions": _versions(),
            "git_sha": _git_sha(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "probes": [],
            "warnings": [],
            "started_at": _now(),
            "ended_at": None,
        }
        self.manifest.update(_plain(manifest_fields))
        self.write_manifest()
        self._streams = {
            stream: open(self.path / f"{stream}.jsonl", "a", encoding="utf-8")
            for stream in STREAMS
        }
        self._deferred: set[str] | None = None  # streams written inside `batched()`
        self.closed = False

    @staticmethod
    def _claim(root: Path, base: str) -> Path:
        """mkdir without exist_ok is atomic: two writers never share a directory."""
        for attempt in range(1000):
            candidate = root / (base if attempt == 0 else f"{base}-{attempt}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return candidate
        raise RiswbError(f"could not create a fresh run directory under {root}")

    def write_manifest(self) -> None:
        _write_json_atomic(self.path / MANIFEST, self.manifest)

    def update_manifest(self, **fields: Any) -> None:
        self.manifest.update(_plain(fields))
        self.write_manifest()

    def warn(self, message: str) -> None:
        self.manifest["warnings"].append(message)
        self.write_manifest()

    def _append(self, stream: str, record: dict) -> None:
        if self.closed:
            return
        handle = self._streams[stream]
        handle.write(json.dumps(_plain(record), allow_nan=True) + "\n")
        if self._deferred is None:
            handle.flush()
        else:
            self._deferred.add(stream)

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Flush the lines appended inside the block once per stream at its end, instead
        of once per line: a probe flush writes ~30 records, and each OS-level flush is a
        system call. Lines still reach the file whole (a kill mid-block can tear only the
        last, which readers drop), and nothing waits past the block."""
        if self._deferred is not None:  # nested: the outer block flushes
            yield
            return
        self._deferred = set()
        try:
            yield
        finally:
            deferred, self._deferred = self._deferred, None
            for stream in deferred:
                if not self.closed:
                    self._streams[stream].flush()

    def scalars(self, step: int, kind: str, values: dict[str, Any]) -> None:
        self._append("scalars", {"step": int(step), "kind": kind, **values})

    def spectrum(self, step: int, name: str, values, **extra: Any) -> None:
        self._append("spectra", {"step": int(step), "name": name, "values": values, **extra})

    def event(self, step: int, event: str, **payload: Any) -> None:
        self._append("events", {"step": int(step), "event": event, "time": time.time(), **payload})

    def close(self, status: str = "completed") -> None:
        if self.closed:
            return
        for handle in self._streams.values():
            handle.close()
        self.closed = True
        self.update_manifest(status=status, ended_at=_now())


def _parse_lines(path: Path, warnings: list[str]) -> list[dict]:
    """Parse a JSONL file; drop undecodable lines (a torn last line is the usual one)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return []
    try:  # fast path: one C-level parse of the whole file
        return json.loads("[" + ",".join(lines) + "]")
    except json.JSONDecodeError:
        pass
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            where = "torn last line" if number == len(lines) else f"line {number}"
            warnings.append(f"{path.name}: dropped {where} (not valid JSON)")
    return records


def _frame(records: list[dict]) -> pd.DataFrame:
    """Records → DataFrame. A probe writes the same keys in the same order every time, so
    records are grouped by key signature and each group becomes one numeric block (an
    order of magnitude faster than from_records on 100k-step runs); anything that is not
    numeric falls back to pandas' general path."""
    by_signature: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        by_signature[tuple(record)].append(record)
    blocks = []
    for signature, group in by_signature.items():
        columns = [key for key in signature if key != "kind"]
        pick = itemgetter(*columns)
        try:
            values = np.array([pick(r) for r in group], dtype=np.float64).reshape(len(group), -1)
        except (TypeError, ValueError):
            blocks.append(pd.DataFrame.from_records(group))
            continue
        block = pd.DataFrame(values, columns=columns)
        block["kind"] = group[0].get("kind", "")
        block["step"] = block["step"].astype(np.int64)
        blocks.append(block)
    if len(blocks) == 1:
        return blocks[0]
    return pd.concat(blocks, ignore_index=True, sort=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Run:
    """A loaded run: the manifest and the three streams as DataFrames."""

    path: Path
    manifest: dict
    warnings: list[str] = field(default_factory=list)
    _scalar_records: list[dict] = field(default_factory=list, repr=False)
    _spectra_records: list[dict] = field(default_factory=list, repr=False)
    _event_records: list[dict] = field(default_factory=list, repr=False)

    @property
    def id(self) -> str:
        return self.manifest.get("id", self.path.name)

    @property
    def status(self) -> str:
        """The manifest's status; a "running" run whose process is gone reads "killed"."""
        status = self.manifest.get("status", "unknown")
        pid = self.manifest.get("pid")
        same_host = self.manifest.get("host") == socket.gethostname()
        if status == "running" and same_host and isinstance(pid, int) and not _pid_alive(pid):
            return "killed"
        return status

    @cached_property
    def _by_kind(self) -> dict[str, pd.DataFrame]:
        grouped: dict[str, list[dict]] = defaultdict(list)
        for record in self._scalar_records:
            grouped[record.get("kind", "")].append(record)
        frames = {}
        for kind, records in grouped.items():
            frame = _frame(records).drop(columns="kind")
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


def read_run(path: str | os.PathLike) -> Run:
    """Load a run directory; tolerant of torn lines and of runs still in progress."""
    root = Path(path)
    if not root.is_dir():
        raise RiswbError(f"no run directory at {root}")
    warnings: list[str] = []
    manifest_path = root / MANIFEST
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise RiswbError(f"{manifest_path} is not valid JSON: {error}") from None
    elif any((root / f"{stream}.jsonl").exists() for stream in STREAMS):
        manifest = {"id": root.name, "status": "unknown"}
        warnings.append("manifest.json is missing")
    else:
        raise RiswbError(f"{root} is not a riswb run directory (no manifest.json)")
    return Run(
        path=root,
        manifest=manifest,
        warnings=warnings,
        _scalar_records=_parse_lines(root / "scalars.jsonl", warnings),
        _spectra_records=_parse_lines(root / "spectra.jsonl", warnings),
        _event_records=_parse_lines(root / "events.jsonl", warnings),
    )


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[Path]:
    """Run directories under `runs_dir`, oldest first (names start with a timestamp)."""
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / MANIFEST).is_file())


def resolve_run(reference: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> Path:
    """A run from a path, a run id under `runs_dir`, or "latest"."""
    candidate = Path(reference)
    if candidate.is_dir():
        return candidate
    runs = list_runs(runs_dir)
    if str(reference) == "latest":
        if not runs:
            raise RiswbError("no runs yet (riswb overfit creates one)")
        return runs[-1]
    matches = [run for run in runs if run.name == str(reference)]
    if not matches:
        matches = [run for run in runs if run.name.startswith(str(reference))]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise RiswbError(f"run reference {reference!r} is ambiguous ({len(matches)} runs match)")
    raise RiswbError(f"no run directory at {reference}")

