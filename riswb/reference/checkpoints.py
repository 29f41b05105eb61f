"""Checkpoint files that survive kills, full disks and bit rot.

Writing (`save_atomic`, `copy_atomic`): the bytes go to `.<name>.<pid>.tmp` and are fsynced;
the SHA-256 sidecar `<name>.sha256` is written the same way; both are renamed into place
(sidecar first) and the folder is fsynced, so a run killed or out of disk mid-save keeps its
previous checkpoint whole and a power cut cannot leave a renamed but empty file. The sidecar
also lists the hash of the file it replaces: a kill between the two renames leaves the old
checkpoint beside a sidecar that still accepts it. A failed write removes its temporary
files; those of a killed writer are removed by `clean_temporary` (the trainer calls it on
resume).

Reading (`read_verified`, `load`): a file whose hash the sidecar does not list is refused
with one RiswbError line; a file without a sidecar (written before checksums) is read
unverified. Loads use weights_only=True. Checkpoints stay plain `torch.save` files:
`torch.load(best.pt, weights_only=True)` works without riswb.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from riswb.errors import RiswbError
from riswb.runlog import _pid_alive

STATE_FILE = "state.pt"  # everything a resume restores
BEST_FILE = "best.pt"  # the weights that scored best
SIDECAR_SUFFIX = ".sha256"
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")  # riswb's own pattern: .<name>.<pid>.tmp


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def save_atomic(obj: Any, path: Path) -> Path:
    """torch.save `obj` to `path` durably, with its checksum (see the module docstring)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_atomic(buffer.getvalue(), path)


def copy_atomic(source: Path, path: Path) -> Path:
    """Copy a checkpoint, verified on read and written like `save_atomic`."""
    return write_atomic(read_verified(source), path)


def write_atomic(data: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
              "previous": (_listed(path) or (None,))[0]}
    written: list[Path] = []
    try:
        written.append(_write_synced(data, path))
        written.append(_write_synced(json.dumps(record).encode(), sidecar(path)))
        os.replace(written[1], sidecar(path))
        os.replace(written[0], path)
    finally:
        for tmp in written:  # only still there when a rename failed
            tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def read_verified(path: Path) -> bytes:
    """The bytes of checkpoint `path`; RiswbError when unreadable or not the ones written."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RiswbError(f"cannot read checkpoint {path}: {error.strerror or error}") from None
    if not sidecar(path).is_file():
        return data
    listed = _listed(path)
    if not listed:
        raise RiswbError(f"checksum file {sidecar(path)} is unreadable: the checkpoint "
                         "beside it cannot be verified")
    if hashlib.sha256(data).hexdigest() not in listed:
        raise RiswbError(f"checkpoint {path} is corrupt: its SHA-256 is not the one recorded "
                         f"in {sidecar(path).name} when it was written")
    return data


def load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """A verified checkpoint, loaded weights_only; RiswbError (one line) when it cannot be."""
    data = read_verified(path)
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many kinds on a malformed file; all mean "unusable"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RiswbError(f"cannot load checkpoint {path}: {type(error).__name__}: "
                         f"{reason}") from None


def clean_temporary(folder: Path) -> list[Path]:
    """Remove the temporary files that writers no longer alive left in `folder`."""
    removed = []
    for path in folder.glob(".*.tmp") if folder.is_dir() else ():
        match = _TEMPORARY.match(path.name)
        if match and not _pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _listed(path: Path) -> tuple[str, ...]:
    """The hashes the sidecar of `path` accepts (the current file's, then the one it
    replaced); empty when there is no readable sidecar."""
    try:
        record = json.loads(sidecar(path).read_text(encoding="utf-8"))
        hashes = (record["sha256"], record.get("previous"))
    except (OSError, ValueError, KeyError, TypeError):
        return ()
    return tuple(h for h in hashes if isinstance(h, str))


def _write_synced(data: bytes, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (POSIX; Windows cannot open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
