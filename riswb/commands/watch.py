"""`riswb watch RUN [--interval S]`: the report of a run in progress, redrawn every S seconds.

On a terminal the rich report is redrawn in place (rich.live.Live) until the run ends: its
manifest status is no longer "running", or its process is gone (the reader then says
"killed"). The final report is then printed once, as `riswb report RUN` prints it (without
plots), and the command exits 0 whatever the findings: `riswb gate` is the one that judges.
Piped, it prints one status line each time the run advances, then the final report. Ctrl-C
exits 0 without a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from riswb.commands.options import RunArgument, RunsDirOption, ThresholdOption
from riswb.commands.output import console as make_console
from riswb.diagnose.render import render_table, renderables
from riswb.diagnose.report import build_report, summarize
from riswb.diagnose.rules import Thresholds
from riswb.errors import RiswbError
from riswb.runlog import Run, read_run, resolve_run

DEFAULT_INTERVAL = 2.0


def _live_view(loaded: Run, thresholds: Thresholds, interval: float) -> Group:
    banner = Text(
        f"watching {loaded.id} ({loaded.status}), redrawn every {interval:g}s at "
        f"{time.strftime('%H:%M:%S')} — Ctrl-C to stop",
        style="dim",
    )
    return Group(banner, *renderables(build_report(loaded, thresholds)))


def watch(
    path: Path,
    *,
    interval: float,
    thresholds: Thresholds,
    console: Console,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Follow the run at `path` until it ends, then print its final report."""
    loaded = read_run(path)
    if console.is_terminal:
        with Live(console=console, auto_refresh=False, transient=True) as live:
            while loaded.status == "running":
                live.update(_live_view(loaded, thresholds, interval), refresh=True)
                sleep(interval)
                loaded = read_run(path)
    else:
        last_steps: int | None = -1  # so that the first status line is always printed
        while loaded.status == "running":
            steps = summarize(loaded).steps
            if steps != last_steps:
                console.print(f"riswb watch: {loaded.id} running, {steps or 0} steps logged")
                last_steps = steps
            sleep(interval)
            loaded = read_run(path)
    render_table(build_report(loaded, thresholds), console)


def watch_command(
    run: RunArgument,
    interval: Annotated[
        float, typer.Option("--interval", "-i", help="Seconds between redraws.")
    ] = DEFAULT_INTERVAL,
    runs_dir: RunsDirOption = None,
    threshold: ThresholdOption = None,
) -> None:
    """Follow a run in progress: its report, redrawn until the run ends; then the final one."""
    if not interval > 0:
        raise RiswbError(f"--interval must be > 0 seconds, got {interval}")
    thresholds = Thresholds.parse(threshold)
    path = resolve_run(run, runs_dir)
    try:
        watch(path, interval=interval, thresholds=thresholds, console=make_console())
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
