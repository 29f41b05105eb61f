import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from riswb.errors import RiswbError
from riswb.runlog import RunWriter, list_runs, read_run, resolve_run


def test_round_trip_keeps_nan_and_infinity(tmp_path):
    writer = RunWriter(tmp_path, "rt", config={"lr": 1e-3}, seed=7)
    writer.scalars(0, "loss", {"nmse": 1.0, "total": float("nan")})
    writer.scalars(1, "loss", {"nmse": float("inf"), "total": -float("inf")})
    writer.scalars(1, "lr", {"group/backbone": 1e-3})
    writer.spectrum(1, "R_pred", [3.0, 1.0, 0.0])
    writer.event(1, "weights_swapped", kind="ema", restored=False)
    writer.close()

    run = read_run(writer.path)
    assert run.manifest["status"] == "completed" and run.manifest["seed"] == 7
    loss = run.kind("loss")
    assert list(loss["step"]) == [0, 1]
    assert math.isnan(loss["total"][0]) and loss["nmse"][1] == math.inf
    assert loss["total"][1] == -math.inf
    assert set(run.scalars["kind"]) == {"loss", "lr"}
    assert run.spectra["values"][0] == [3.0, 1.0, 0.0]
    assert run.events_of("weights_swapped")[0]["restored"] is False
    assert run.warnings == []


@pytest.mark.parametrize("keys, rows", [
    (("opt_step", "group/a%s", "initial/a"),
     [(3, [3, 1e-3, 0.1]), (4, [4, math.nan, math.inf]), (5, [5, -math.inf, 5e-324])]),
    (("flag", "none", "n"), [(0, [True, None, -7]), (1, [False, 0.5, 2**70])]),
    (("text",), [(0, ["a, b"]), (1, ["c"])]),  # not numbers: written record by record
])
def test_scalar_rows_writes_the_lines_scalars_would(tmp_path, keys, rows):
    fast, plain = RunWriter(tmp_path, "fast"), RunWriter(tmp_path, "plain")
    fast.scalar_rows("k%d", keys, rows)
    for step, values in rows:
        plain.scalars(step, "k%d", dict(zip(keys, values, strict=True)))
    fast.close()
    plain.close()
    lines = [(w.path / "scalars.jsonl").read_text() for w in (fast, plain)]
    assert lines[0] == lines[1]
    assert len(lines[0].splitlines()) == len(rows)


def test_batched_block_reaches_the_file_at_its_end(tmp_path):
    """Inside `batched()` lines wait in the buffer; at the end of the block (also on an
    exception) every one of them is on disk, whole."""
    writer = RunWriter(tmp_path, "batch")
    path = writer.path / "scalars.jsonl"
    with pytest.raises(RuntimeError), writer.batched():
        writer.scalars(0, "loss", {"a": 1.0})
        with writer.batched():  # nested blocks flush once, at the outer end
            writer.scalars(1, "loss", {"a": 2.0})
        assert path.read_text() == ""
        raise RuntimeError("probe failed mid-flush")
    lines = path.read_text().splitlines()
    assert [json.loads(line)["a"] for line in lines] == [1.0, 2.0]
    writer.scalars(2, "loss", {"a": 3.0})  # outside a block: flushed per line again
    assert len(path.read_text().splitlines()) == 3
    writer.close()


def test_torn_last_line_is_dropped_and_reported(tmp_path):
    writer = RunWriter(tmp_path, "torn")
    for step in range(3):
        writer.scalars(step, "loss", {"total": 1.0 / (step + 1)})
    with open(writer.path / "scalars.jsonl", "a") as handle:
        handle.write('{"step": 3, "kind": "loss", "tot')
    run = read_run(writer.path)
    assert list(run.kind("loss")["step"]) == [0, 1, 2]
    assert any("torn last line" in w for w in run.warnings)


def test_never_overwrites_an_existing_run(tmp_path):
    paths = {RunWriter(tmp_path, "same").path for _ in range(3)}
    assert len(paths) == 3
    assert len(list_runs(tmp_path)) == 3


def test_manifest_is_written_at_start_and_end(tmp_path):
    writer = RunWriter(tmp_path, "m")
    started = json.loads((writer.path / "manifest.json").read_text())
    assert started["status"] == "running" and started["schema_version"] == 1
    assert {"riswb", "python"} <= set(started["versions"])
    writer.close("crashed")
    assert read_run(writer.path).status == "crashed"


def test_sigkilled_writer_leaves_a_readable_run(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from riswb.runlog import RunWriter
        w = RunWriter({str(tmp_path)!r}, "killed")
        for step in range(5):
            w.scalars(step, "loss", {{"total": float(step)}})
        print(w.path, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    path = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run = read_run(path)
    assert list(run.kind("loss")["total"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert run.status == "killed"


def test_bad_paths_raise_one_line_errors(tmp_path):
    with pytest.raises(RiswbError, match="no run directory"):
        read_run(tmp_path / "missing")
    with pytest.raises(RiswbError, match="not a riswb run directory"):
        read_run(tmp_path)


def test_resolve_run_by_id_prefix_and_latest(tmp_path):
    first = RunWriter(tmp_path, "a").path
    second = RunWriter(tmp_path, "b").path
    assert resolve_run("latest", tmp_path) == second
    assert resolve_run(first.name, tmp_path) == first
    with pytest.raises(RiswbError):
        resolve_run("nope", tmp_path)


def _child_writer(tmp_path):
    """A RunWriter in another process, alive until the caller kills it: (process, run path)."""
    script = textwrap.dedent(
        f"""
        import time
        from riswb.runlog import RunWriter
        w = RunWriter({str(tmp_path)!r}, "child")
        print(w.path, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_a_dead_run_reads_killed_whatever_its_pid_and_host_became(tmp_path):
    """The writer's lock decides (riswb/runlog_disk.py): a live writer in another process
    reads "running"; once it is killed, the run reads "killed" even when its PID now names
    a live process (reuse) or its host is another machine."""
    proc, path = _child_writer(tmp_path)
    assert read_run(path).status == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest_path = os.path.join(path, "manifest.json")
    manifest = json.loads(open(manifest_path).read())
    for pid, host in ((os.getppid(), manifest["host"]), (proc.pid, "another-host")):
        manifest.update(pid=pid, host=host)
        with open(manifest_path, "w") as handle:
            json.dump(manifest, handle)
        assert read_run(path).status == "killed"


def test_without_a_lock_file_the_pid_decides(tmp_path):
    """Runs written before the lock (or where flock is unsupported) fall back to the PID."""
    proc, path = _child_writer(tmp_path)
    os.unlink(os.path.join(path, "run.lock"))
    assert read_run(path).status == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_run(path).status == "killed"


def test_a_crash_stores_the_exception(tmp_path):
    writer = RunWriter(tmp_path, "explicit")
    writer.close("crashed", error=KeyError("lr"))
    assert read_run(writer.path).manifest["error"] == {"type": "KeyError", "message": "'lr'"}

    writer = RunWriter(tmp_path, "handled")
    try:
        raise ValueError("loss went NaN")
    except ValueError:
        writer.close("crashed")  # the exception being handled, as Workbench.__exit__ does
    run = read_run(writer.path)
    assert run.status == "crashed"
    assert run.manifest["error"] == {"type": "ValueError", "message": "loss went NaN"}
    assert "crashed: ValueError: loss went NaN" in run.warnings


def test_a_crashed_workbench_loop_records_its_exception(tmp_path):
    import torch

    import riswb

    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="data loader died"), \
            riswb.Workbench(model, opt, runs_dir=tmp_path, name="crash") as wb:
        wb.loss({"mse": model(torch.ones(2, 3)).square().mean()}).backward()
        raise RuntimeError("data loader died")
    run = read_run(wb.path)
    assert run.status == "crashed"
    assert run.manifest["error"] == {"type": "RuntimeError", "message": "data loader died"}
    assert not (wb.path / "run.lock").exists()
