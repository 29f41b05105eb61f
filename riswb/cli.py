"""The `riswb` command line: a thin Typer app over the library.

Every command lives in `riswb/commands/<name>.py` (one module per command family) as a
plain function with Typer annotations (shared options: riswb/commands/options.py); this
file only names them and turns errors into exit codes (docs/design.md §6): 0 passed, 1 a
check failed, 2 bad usage or unusable input, always with a one-line reason.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from riswb import __version__
from riswb.errors import RiswbError

app = typer.Typer(
    name="riswb",
    help="Training diagnostics and debugging workbench for PyTorch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def exits_cleanly(command: Callable) -> Callable:
    """Turn any failure of `command` into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as error:  # the CLI contract: no traceback unless asked for
            if os.environ.get("RISWB_DEBUG") == "1":
                raise
            if isinstance(error, RiswbError):
                reason = str(error)
            else:
                reason = f"{type(error).__name__}: {error} (RISWB_DEBUG=1 shows the traceback)"
            print(f"riswb: error: {_one_line(reason)}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper


def register(name: str, command: Callable) -> None:
    app.command(name)(exits_cleanly(command))


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"riswb {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Training diagnostics and debugging workbench for PyTorch."""


# Command registrations, in the order `riswb --help` lists them.
def _register_all() -> None:
    from riswb.commands import (
        bench,
        compare,
        export,
        faults,
        gate,
        litmus,
        physics,
        report,
        runs,
        training,
    )

    for name, command in (
        ("overfit", training.overfit_command),
        ("train", training.train_command),
        ("report", report.report_command),
        ("gate", gate.gate_command),
        ("litmus", litmus.litmus_command),
        ("runs", runs.runs_command),
        ("compare", compare.compare_command),
        ("export", export.export_command),
        ("bench", bench.bench_command),
        ("faults", faults.faults_command),
        ("eval", physics.eval_command),
        ("scene", physics.scene_command),
    ):
        register(name, command)


_register_all()
