"""`riswb watch`: a finished run renders once and exits 0; a run in progress is followed
until its manifest says it ended; Ctrl-C exits 0 quietly."""

from __future__ import annotations

import io
import threading
import time

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from riswb.cli import exits_cleanly
from riswb.commands import watch as watch_module
from riswb.commands.watch import watch, watch_command
from riswb.diagnose.rules import Thresholds
from riswb.runlog import RunWriter, read_run

app = typer.Typer()  # `watch` alone, as riswb.cli registers it
app.command("watch")(exits_cleanly(watch_command))


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def live_run(tmp_path):
    """A run this process is still writing (30 loss records); `.close()` ends it."""
    writer = RunWriter(tmp_path, "live")
    for step in range(0, 300, 10):
        writer.scalars(step, "loss", {"mse": 1.0 / (step + 1), "total": 1.0 / (step + 1)})
    yield writer
    writer.close()


def test_finished_run_renders_once_and_exits(tmp_path, synthetic_run):
    run = synthetic_run(tmp_path, steps=300, healthy=False)
    result = invoke(run, "--interval", "0.05")
    assert result.exit_code == 0, result.output
    assert result.output.count("riswb report") == 1
    assert "params-not-moving" in result.output and "riswb watch:" not in result.output


def test_run_in_progress_is_followed_until_it_ends(live_run):
    timer = threading.Timer(0.6, live_run.close)
    started = time.monotonic()
    timer.start()
    try:
        result = invoke(live_run.path, "--interval", "0.05")
    finally:
        timer.join()
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 0.6
    assert result.output.count("running, 291 steps logged") == 1  # once per new step count
    assert result.output.count("riswb report") == 1
    assert "completed" in result.output


def test_a_killed_run_is_over(tmp_path, synthetic_run):
    result = invoke(synthetic_run(tmp_path, steps=200, status="killed"), "-i", "5")
    assert result.exit_code == 0 and "killed" in result.output


def test_live_view_on_a_terminal(live_run):
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        if len(naps) == 2:
            live_run.close()

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    watch(live_run.path, interval=0.5, thresholds=Thresholds(), console=console, sleep=sleep)
    assert naps == [0.5, 0.5]
    text = out.getvalue()
    assert "watching " in text and "Ctrl-C to stop" in text  # the live frames
    assert text.count("riswb report") >= 3  # two live frames, then the final report


def test_ctrl_c_exits_zero_quietly(live_run, monkeypatch):
    reads = []

    def read_then_interrupt(path):  # Ctrl-C lands while the second frame is read
        reads.append(path)
        if len(reads) == 2:
            raise KeyboardInterrupt
        return read_run(path)

    monkeypatch.setattr(watch_module, "read_run", read_then_interrupt)
    result = invoke(live_run.path, "--interval", "0.01")
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "riswb report" not in result.output and len(reads) == 2


@pytest.mark.parametrize("interval", ["0", "-1"])
def test_interval_must_be_positive(tmp_path, synthetic_run, interval):
    result = invoke(synthetic_run(tmp_path, steps=50), "--interval", interval)
    assert result.exit_code == 2 and "--interval" in result.output
