"""Logging never stops training (riswb/runlog.py): a full disk, a failing manifest rewrite or
an unwritable runs dir turn logging off with one warning, and the run still ends readable."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

import riswb
from riswb.runlog import RunWriter, read_run
from riswb.runlog_disk import MANIFEST_TMP

STOPPED = "riswb: logging stopped:"


def _train(runs_dir, steps=300):
    """A real Workbench loop, every probe on, logging every step; returns (wb, steps run)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(64, 6), torch.randn(64, 2)
    done = 0
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="full", log_every=1) as wb:
        for step in range(steps):
            loss = wb.loss({"mse": (model(x) - y).square().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if step % 10 == 9:
                wb.evaluate({"val_loss": loss.item()})
    return wb, done


def _stopped(caught):
    return [str(w.message) for w in caught if str(w.message).startswith(STOPPED)]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: a disk that really fills up (needs root; skipped elsewhere, where
    test_file_size_limit_in_a_child_process covers the same path)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_full_disk_under_a_real_loop(tiny_disk, invoke_report):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wb, done = _train(tiny_disk)
    assert done == 300
    [message] = _stopped(caught)
    assert "No space left on device (ENOSPC)" in message and message.endswith("training continues")
    run = read_run(wb.path)
    assert run.status == "completed"
    assert run.manifest["log_error"]["errno"] == "ENOSPC"
    assert any(w.startswith("logging stopped at step") for w in run.manifest["warnings"])
    assert len(run.kind("loss")) > 0  # what was logged before the disk filled
    assert not (wb.path / MANIFEST_TMP).exists()
    assert "logging stopped" in invoke_report(wb.path)


@pytest.fixture
def invoke_report():
    from typer.testing import CliRunner

    from riswb.cli import app

    def run(path):
        result = CliRunner().invoke(app, ["report", str(path), "--no-plots"])
        assert result.exit_code == 0, result.output
        return result.output

    return run


def test_file_size_limit_in_a_child_process(tmp_path):
    """RLIMIT_FSIZE makes every write past 16 KiB fail with EFBIG at the OS boundary (Python
    ignores SIGXFSZ), on any POSIX machine and without root."""
    resource = pytest.importorskip("resource")
    del resource
    script = textwrap.dedent(
        f"""
        import json, resource, sys, warnings
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_runlog_disk_full import _stopped, _train
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, resource.RLIM_INFINITY))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wb, done = _train({str(tmp_path)!r}, steps=100)
        print(json.dumps({{"path": str(wb.path), "done": done, "stopped": _stopped(caught)}}))
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout.splitlines()[-1])
    assert out["done"] == 100 and len(out["stopped"]) == 1 and "EFBIG" in out["stopped"][0]
    run = read_run(out["path"])
    assert run.status == "completed" and run.manifest["log_error"]["errno"] == "EFBIG"
    assert not (run.path / MANIFEST_TMP).exists()


def test_failed_manifest_rewrite_leaves_no_tmp(tmp_path, recwarn):
    """The temporary manifest cannot be written (here a link to /dev/full: ENOSPC): the writer
    warns once, removes the temporary file, and the manifest is rewritten in place."""
    writer = RunWriter(tmp_path, "manifest")
    writer.scalars(0, "loss", {"total": 1.0})
    (writer.path / MANIFEST_TMP).symlink_to("/dev/full")
    writer.update_manifest(loss_terms=["total"])
    writer.scalars(1, "loss", {"total": 0.5})  # dropped: logging is off
    writer.close()
    assert len([w for w in recwarn if str(w.message).startswith(STOPPED)]) == 1
    assert not (writer.path / MANIFEST_TMP).exists()
    run = read_run(writer.path)
    assert run.status == "completed" and run.manifest["loss_terms"] == ["total"]
    assert "manifest.json" in run.manifest["log_error"]["reason"]
    assert list(run.kind("loss")["step"]) == [0]
    assert [e["event"] for e in run.event_records] == ["log_error"]


def test_batched_flush_failure_stops_logging_once(tmp_path, recwarn):
    """A stream whose file turns into a full disk mid-run (its descriptor swapped for
    /dev/full): the batched flush fails, one warning, later records are dropped quietly."""
    writer = RunWriter(tmp_path, "batched")
    writer.scalars(0, "loss", {"total": 1.0})
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, writer._streams["scalars"].fileno())
    os.close(full)
    for _ in range(3):
        with writer.batched():
            writer.scalars(1, "loss", {"total": 0.5})
            writer.event(1, "checkpoint", kind="best")
    writer.close()
    assert len([w for w in recwarn if str(w.message).startswith(STOPPED)]) == 1
    run = read_run(writer.path)
    assert run.status == "completed" and run.manifest["log_error"]["errno"] == "ENOSPC"
    events = [e["event"] for e in run.event_records]
    assert events[-1] == "log_error" and events.count("checkpoint") <= 1  # flushed before?


def test_unwritable_runs_dir_does_not_stop_training(tmp_path, recwarn):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    wb, done = _train(blocker, steps=5)
    assert done == 5 and not wb.path.exists()
    [message] = [str(w.message) for w in recwarn if str(w.message).startswith(STOPPED)]
    assert str(blocker) in message


def test_warning_escalated_to_an_error_still_does_not_raise(tmp_path):
    writer = RunWriter(tmp_path, "strict")
    (writer.path / MANIFEST_TMP).symlink_to("/dev/full")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        writer.update_manifest(seed=1)
        writer.close()
    assert read_run(writer.path).manifest["log_error"]["errno"] == "ENOSPC"
