"""The files of a run directory that are not records (docs/design.md §4): the manifest's
atomic rewrite, the writer's lock, and the leftovers a dead writer may leave.

Liveness. A writer holds `run.lock` with `fcntl.flock(LOCK_EX)` from before its first
manifest until `close`; the kernel drops the lock when the process dies, however it dies.
A reader that can take a shared lock on it knows the writer is gone, so a run still marked
"running" reads "killed" whatever happened to its PID since (reuse) and wherever it ran, on
filesystems whose locks reach every host (local disks; NFS with a working lock manager). A
run without a lock file (written before riswb had one, or on a filesystem without flock)
falls back to the PID check, on the writer's host only. A run of the reader's own process
is alive while its manifest says "running". Children forked without exec inherit the
lock: a DataLoader worker that outlives a killed trainer keeps the run "running" until it
exits too.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any, BinaryIO

try:
    import fcntl
except ImportError:  # Windows: PID fallback only
    fcntl = None

MANIFEST = "manifest.json"
MANIFEST_TMP = MANIFEST + ".tmp"  # riswb's one temporary name in a run directory
LOCK = "run.lock"
STREAMS = ("scalars", "spectra", "events")


def default_runs_dir() -> Path:
    return Path(os.environ.get("RISWB_RUNS_DIR") or "runs")


def write_manifest(folder: Path, payload: dict, *, in_place_fallback: bool = False) -> None:
    """Write `folder/manifest.json` atomically, through manifest.json.tmp and os.replace; the
    temporary file never outlives a failure. With `in_place_fallback` (a run's last word: a
    full disk has no room for a second copy), a failed atomic write is retried by
    overwriting the file in place, which reuses its blocks. Raises the atomic write's
    OSError when nothing worked."""
    text = json.dumps(payload, indent=2, allow_nan=True)
    path, tmp = folder / MANIFEST, folder / MANIFEST_TMP
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as atomic_error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if not in_place_fallback:
            raise
        try:
            with open(path, "r+", encoding="utf-8") as handle:
                handle.write(text)
                handle.truncate()
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            raise atomic_error from None


def hold_lock(folder: Path) -> BinaryIO | None:
    """Create and lock `folder/run.lock` for the writer's lifetime: the open file, or None
    (and no lock file, so readers use the PID) where locking is not possible. A file object
    rather than a bare descriptor, so that a writer dropped without `close` (collected)
    releases the lock as a dead process would."""
    if fcntl is None:
        return None
    path = folder / LOCK
    try:
        handle = open(path, "ab")
    except OSError:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return handle


def release_lock(folder: Path, handle: BinaryIO | None) -> None:
    """Remove the lock file and drop the lock (closing the file drops it)."""
    if handle is None:
        return
    with contextlib.suppress(OSError):
        (folder / LOCK).unlink()
    with contextlib.suppress(OSError):
        handle.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # someone else's live process; an impossible PID is nobody's
    return True


def _lock_free(folder: Path) -> bool | None:
    """True when nobody holds `run.lock`, False when a writer does, None when the lock
    file is missing or cannot be tested."""
    if fcntl is None:
        return None
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    finally:
        os.close(fd)  # also drops the shared lock when it was taken
    return True


def writer_alive(folder: Path, manifest: dict[str, Any]) -> bool:
    """Whether a process still writes this run (module docstring): the lock decides; without
    one, a run marked "running" whose PID is gone from this host is dead."""
    same_host = manifest.get("host") == socket.gethostname()
    if same_host and manifest.get("pid") == os.getpid():
        # Our own run: alive while it says so. Its lock is not tested: where flock is
        # emulated with POSIX locks (NFS), closing the test's descriptor would release it.
        return manifest.get("status") == "running"
    free = _lock_free(folder)
    if free is not None:
        return not free
    if manifest.get("status") != "running":
        return False
    pid = manifest.get("pid")
    if not same_host or type(pid) is not int:
        return True  # nothing to tell from here: trust the manifest
    return _pid_alive(pid)


def clean_leftovers(folder: Path, live: bool) -> None:
    """Remove the manifest.json.tmp of a run whose writer is gone (a live writer may be
    between writing it and renaming it)."""
    if not live:
        with contextlib.suppress(OSError):
            (folder / MANIFEST_TMP).unlink(missing_ok=True)


def sweep_runs_dir(root: Path) -> None:
    """clean_leftovers for every run under `root` that has a temporary manifest."""
    try:
        leftovers = [tmp.parent for tmp in root.glob(f"*/{MANIFEST_TMP}")]
    except OSError:
        return
    for folder in leftovers:
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            manifest = None
        if not isinstance(manifest, dict):
            manifest = {}
        clean_leftovers(folder, writer_alive(folder, manifest))
