"""The `riswb` command line: a thin Typer app over the library.

Every command lives in `riswb/commands/<name>.py` (one module per command family) as a
plain function with Typer annotations (shared options: riswb/commands/options.py); this
file only names them and turns errors into exit codes (docs/design.md §6): 0 passed, 1 a
check failed, 2 bad usage or unusable input, always with a one-line reason on stderr —
whether the command body raised it (`exits_cleanly`) or Click refused the command line
(`OneLineErrors`).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from riswb import __version__
from riswb.errors import RiswbError


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def fail(reason: str) -> NoReturn:
    """Print `riswb: error: <reason>` as one line on stderr and exit 2."""
    print(f"riswb: error: {_one_line(reason)}", file=sys.stderr)
    sys.exit(2)


# Click's base exception, whichever Click Typer runs on (recent Typer vendors its own).
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class OneLineErrors(TyperGroup):
    """Click's usage errors (a missing argument, an unknown option, a value Click cannot
    convert) as the same one line: Click would print a usage block, Typer a box."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            # Not standalone, Typer returns the exit code instead of exiting, and lets Click's
            # exceptions through to here.
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _CLICK_ERROR as error:
            fail(error.format_message())
        except typer.Abort:
            print("riswb: aborted", file=sys.stderr)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="riswb",
    help="Training diagnostics and debugging workbench for PyTorch.",
    cls=OneLineErrors,
    invoke_without_command=True,  # a bare `riswb` prints the help (the callback)
    pretty_exceptions_enable=False,
    add_completion=True,
)


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
                fail(str(error))
            fail(f"{type(error).__name__}: {error} (RISWB_DEBUG=1 shows the traceback)")

    return wrapper


def register(name: str, command: Callable) -> None:
    app.command(name)(exits_cleanly(command))


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"riswb {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Training diagnostics and debugging workbench for PyTorch."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


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
        watch,
    )

    for name, command in (
        ("overfit", training.overfit_command),
        ("train", training.train_command),
        ("report", report.report_command),
        ("gate", gate.gate_command),
        ("litmus", litmus.litmus_command),
        ("runs", runs.runs_command),
        ("compare", compare.compare_command),
        ("watch", watch.watch_command),
        ("export", export.export_command),
        ("bench", bench.bench_command),
        ("faults", faults.faults_command),
        ("eval", physics.eval_command),
        ("scene", physics.scene_command),
    ):
        register(name, command)


_register_all()
