"""Run directories (docs/design.md §4): the append-only writer, and the reader's public names.

A run is a folder `<runs_dir>/<YYYYmmdd-HHMMSS>-<name>/` holding `manifest.json` (rewritten
atomically), three JSONL streams written one flushed line per record (`scalars.jsonl`,
`spectra.jsonl`, `events.jsonl`) and `run.lock`, held while the writer lives
(riswb/runlog_disk.py). Because every line is flushed as it is written, a run killed with
SIGKILL keeps everything up to its last record. NaN and ±Infinity survive the round trip.
The reader (riswb/runlog_read.py) drops and counts whatever it cannot use.

Logging never stops training. The first OSError the writer meets (a full disk, an I/O
error, a read-only remount) turns logging off: one `warnings.warn("riswb: logging stopped:
<reason>; training continues")`, a `log_error` event where the disk still takes one, and a
manifest that keeps the failure in `log_error` ({"reason", "errno", "step", "time"}) and in
`warnings`. Every later record is dropped silently; `close` still writes the final manifest
(in place if there is no room for a temporary copy) with the status the caller gives, so a
loop that finished reads "completed" and says its log is incomplete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from riswb.errors import RiswbError
from riswb.runlog_disk import (
    MANIFEST,
    STREAMS,
    _pid_alive,  # noqa: F401  (riswb/reference/checkpoints.py imports it from here)
    default_runs_dir,
    hold_lock,
    release_lock,
    sweep_runs_dir,
    write_manifest,
)
from riswb.runlog_read import Run, list_runs, read_run, resolve_run

__all__ = ["SCHEMA_VERSION", "Run", "RunWriter", "default_runs_dir", "list_runs", "read_run",
           "resolve_run"]

SCHEMA_VERSION = 1


_JSON_READY = frozenset({bool, int, float, str, type(None)})


def _plain(value: Any) -> Any:
    """Turn numpy/torch scalars and tuples into JSON-ready Python values."""
    if type(value) in _JSON_READY:  # the usual record value: no isinstance chain
        return value
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, dict):
        return {k if type(k) is str else str(k): v if type(v) in _JSON_READY else _plain(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays/scalars, torch tensors
        return _plain(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return str(value)


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


def describe_error(error: BaseException) -> dict[str, str]:
    """The manifest's `error` of a crashed run: the exception's type and message."""
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"
    return {"type": name, "message": str(error)[:2000]}


class RunWriter:
    """Creates a run directory and appends records to it; never overwrites a run, and never
    raises an OSError (module docstring)."""

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
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or "run").strip("-") or "run"
        self.path = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"  # until claimed
        self.failure: dict[str, Any] | None = None  # why logging stopped
        self.closed = False
        self._streams: dict[str, Any] = {}
        self._deferred: set[str] | None = None  # streams written inside `batched()`
        self._lock: BinaryIO | None = None
        self._step = 0  # of the last record, for the log_error event
        self._templates: dict[tuple[str, tuple[str, ...]], str] = {}  # see `scalar_rows`
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
        with self._guard(root):
            root.mkdir(parents=True, exist_ok=True)
            sweep_runs_dir(root)
            self.path = self._claim(root, self.path.name)
            self.manifest["id"] = self.path.name
            self._lock = hold_lock(self.path)  # before "running" is on disk (runlog_disk.py)
        self.write_manifest()
        for stream in STREAMS if self.failure is None else ():
            with self._guard(self.path / f"{stream}.jsonl"):
                self._streams[stream] = open(self.path / f"{stream}.jsonl", "a", encoding="utf-8")

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

    @contextlib.contextmanager
    def _guard(self, target: Path) -> Iterator[None]:
        """Run a write to `target`; its OSError stops logging instead of propagating."""
        try:
            yield
        except OSError as error:
            if self.failure is None:
                self._stop(error, target)

    def _stop(self, error: OSError, target: Path) -> None:
        name = errno.errorcode.get(error.errno or 0)
        reason = f"{error.strerror or error}{f' ({name})' if name else ''} writing {target}"
        self.failure = {"reason": reason, "errno": name, "step": self._step, "time": _now()}
        with contextlib.suppress(Warning):  # under -W error the warning must not raise either
            warnings.warn(f"riswb: logging stopped: {reason}; training continues",
                          RuntimeWarning, stacklevel=1)  # callers vary: point at the writer
        self._close_streams()
        self._append_alone({"step": self._step, "event": "log_error", "time": time.time(),
                            "reason": reason, "errno": name})
        self.manifest["log_error"] = self.failure
        self.manifest["warnings"].append(
            f"logging stopped at step {self._step}: {reason}; later records are missing")
        self._save_manifest(last=True)

    def _append_alone(self, record: dict) -> None:
        """Append one events.jsonl line through a descriptor of its own, after a newline: the
        failed stream's buffer may hold a torn line (the reader skips blank lines)."""
        data = ("\n" + json.dumps(record, allow_nan=True) + "\n").encode("utf-8")
        with contextlib.suppress(OSError):
            fd = os.open(self.path / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def _close_streams(self) -> None:
        streams, self._streams = self._streams, {}
        for stream, handle in streams.items():
            with self._guard(self.path / f"{stream}.jsonl"):  # closing flushes: it can fail
                handle.close()

    def _save_manifest(self, last: bool = False) -> None:
        """Rewrite manifest.json atomically; `last` (the failure's and close's final word)
        also tries in place when a full disk has no room for the temporary copy."""
        with self._guard(self.path / MANIFEST):
            write_manifest(self.path, self.manifest, in_place_fallback=last)

    def write_manifest(self) -> None:
        """Rewrite manifest.json (atomically); a no-op once logging has stopped."""
        if self.failure is None:
            self._save_manifest()

    def update_manifest(self, **fields: Any) -> None:
        self.manifest.update(_plain(fields))
        self.write_manifest()

    def warn(self, message: str) -> None:
        self.manifest["warnings"].append(message)
        self.write_manifest()

    def _append(self, stream: str, record: dict) -> None:
        if self.closed or self.failure is not None:
            return
        self._write_line(stream, json.dumps(_plain(record), allow_nan=True) + "\n",
                         record["step"])

    def _write_line(self, stream: str, line: str, step: int) -> None:
        self._step = step
        try:  # `_guard` inline: this runs for every record, a context manager per line costs
            handle = self._streams[stream]
            handle.write(line)
            if self._deferred is None:
                handle.flush()
            else:
                self._deferred.add(stream)
        except OSError as error:
            if self.failure is None:
                self._stop(error, self.path / f"{stream}.jsonl")

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
                if stream in self._streams:  # gone once closed or logging stopped
                    with self._guard(self.path / f"{stream}.jsonl"):
                        self._streams[stream].flush()

    def scalars(self, step: int, kind: str, values: dict[str, Any]) -> None:
        self._append("scalars", {"step": int(step), "kind": kind, **values})

    def scalar_rows(self, kind: str, keys: tuple[str, ...],
                    rows: Sequence[tuple[int, Sequence[Any]]]) -> None:
        """`scalars(step, kind, dict(zip(keys, values)))` for each (step, values) of `rows`,
        values being Python numbers (int, float, bool or None): the same lines, for a trace
        that writes one record per optimizer step. Encoding each record whole cost more
        than the rest of the probe: here one C-level `json.dumps` encodes every value of
        every row, its output is cut back into values at the separators (an encoded number
        holds no comma or bracket), and a template kept per (kind, keys) adds the keys."""
        if self.closed or self.failure is not None or not rows:
            return
        template = self._templates.get((kind, keys))
        if template is None:
            if len(self._templates) > 64:
                self._templates.clear()
            fields = "".join(", " + json.dumps(key).replace("%", "%%") + ": %s" for key in keys)
            template = self._templates[kind, keys] = (
                '{"step": %s, "kind": ' + json.dumps(kind).replace("%", "%%") + fields + "}\n")
        try:
            encoded = json.dumps([[int(step), *values] for step, values in rows],
                                 allow_nan=True)
            lines = [template % tuple(row.split(", ")) for row in encoded[2:-2].split("], [")]
        except TypeError:  # not plain numbers after all (or a string holding ", ")
            for step, values in rows:
                self.scalars(step, kind, dict(zip(keys, values, strict=True)))
            return
        self._write_line("scalars", "".join(lines), rows[-1][0])

    def spectrum(self, step: int, name: str, values, **extra: Any) -> None:
        self._append("spectra", {"step": int(step), "name": name, "values": values, **extra})

    def event(self, step: int, event: str, **payload: Any) -> None:
        self._append("events", {"step": int(step), "event": event, "time": time.time(), **payload})

    def close(self, status: str = "completed", error: BaseException | None = None) -> None:
        """Finish the run: `status` ("completed", "crashed", ...) and, for a crash, `error`
        ({"type", "message"} in the manifest; default: the exception being handled, so
        `close("crashed")` in an `except` block or `__exit__` records it). The final
        manifest is written even after logging stopped, since the disk may have room
        again; then the lock goes."""
        if self.closed:
            return
        if error is None and status == "crashed":
            error = sys.exc_info()[1]
        self.closed = True
        self._close_streams()
        self.manifest.update(status=status, ended_at=_now())
        if error is not None:
            self.manifest["error"] = describe_error(error)
        self._save_manifest(last=True)
        release_lock(self.path, self._lock)
        self._lock = None
