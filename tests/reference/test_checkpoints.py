"""Checkpoint files: checksummed, durable, verified on load, temporary files cleaned."""

import json
import os
import subprocess
import sys

import pytest
import torch

from riswb.errors import RiswbError
from riswb.reference import checkpoints


def _flip_a_bit(path, offset=None):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.fixture
def saved(tmp_path):
    obj = {"w": torch.arange(1000, dtype=torch.float32), "epoch": 3}
    return obj, checkpoints.save_atomic(obj, tmp_path / "ck" / "state.pt")


def test_round_trip_with_a_sidecar_and_no_temporary_left(saved):
    obj, path = saved
    loaded = checkpoints.load(path)
    assert torch.equal(loaded["w"], obj["w"]) and loaded["epoch"] == 3
    record = json.loads(checkpoints.sidecar(path).read_text())
    assert record["file"] == "state.pt" and len(record["sha256"]) == 64
    assert record["previous"] is None
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.pt", "state.pt.sha256"]
    assert torch.load(path, weights_only=True)["epoch"] == 3  # still a plain torch file


def test_a_flipped_bit_is_refused_in_one_line(saved):
    _, path = saved
    _flip_a_bit(path)
    with pytest.raises(RiswbError, match="is corrupt: its SHA-256") as info:
        checkpoints.load(path)
    assert "\n" not in str(info.value)


def test_an_unreadable_sidecar_is_refused(saved):
    _, path = saved
    checkpoints.sidecar(path).write_text("{not json")
    with pytest.raises(RiswbError, match="unreadable"):
        checkpoints.read_verified(path)


def test_a_checkpoint_without_sidecar_loads_unverified_but_garbage_is_one_line(saved, tmp_path):
    _, path = saved
    checkpoints.sidecar(path).unlink()  # written before checksums existed
    assert checkpoints.load(path)["epoch"] == 3
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(RiswbError, match="cannot load checkpoint .*junk.pt") as info:
        checkpoints.load(junk)
    assert "\n" not in str(info.value)


def test_a_kill_between_the_renames_keeps_the_old_file_acceptable(saved, monkeypatch):
    obj, path = saved
    real_replace = os.replace

    def killed_before_the_payload(src, dst):
        if str(dst) == str(path):
            raise KeyboardInterrupt  # the process dies after renaming the sidecar
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_before_the_payload)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_atomic({"w": obj["w"] * 2, "epoch": 4}, path)
    monkeypatch.setattr(os, "replace", real_replace)
    assert checkpoints.load(path)["epoch"] == 3  # the old file, accepted as "previous"
    assert not list(path.parent.glob("*.tmp"))  # the failed write cleaned up after itself
    checkpoints.save_atomic({"w": obj["w"], "epoch": 5}, path)
    assert checkpoints.load(path)["epoch"] == 5


def test_a_full_disk_leaves_the_previous_checkpoint_and_no_temporary(saved, monkeypatch):
    _, path = saved

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        checkpoints.save_atomic({"epoch": 9}, path)
    monkeypatch.undo()
    assert checkpoints.load(path)["epoch"] == 3
    assert not list(path.parent.glob(".*"))


def test_clean_temporary_removes_only_dead_writers_files(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    leftovers = [tmp_path / f".state.pt.{dead_pid}.tmp",
                 tmp_path / f".best.pt.sha256.{dead_pid}.tmp"]
    alive = tmp_path / f".last.pt.{os.getpid()}.tmp"  # a writer still at work
    foreign = [tmp_path / "notes.tmp", tmp_path / f".x.{dead_pid}.tmp.bak"]
    for path in [*leftovers, alive, *foreign]:
        path.write_bytes(b"x")
    removed = checkpoints.clean_temporary(tmp_path)
    assert sorted(removed) == sorted(leftovers)
    assert alive.exists() and all(p.exists() for p in foreign)
    assert checkpoints.clean_temporary(tmp_path / "missing") == []
