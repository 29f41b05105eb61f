"""The `riswb` command line: a thin Typer app over the library.

Every command lives in `riswb/commands/<area>.py` as a plain function with Typer
annotations; this file only names them and turns errors into exit codes (DESIGN §6):
0 passed, 1 a check failed, 2 bad usage or unusable input, always with a one-line reason.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

import typer

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


@app.callback()
def _main() -> None:
    """Training diagnostics and debugging workbench for PyTorch."""


# Command registrations: one line per command, grouped by area.
from riswb.commands import physics as _physics  # noqa: E402
register("eval", _physics.eval_command)
register("scene", _physics.scene_command)
from riswb.commands import diagnosis as _diagnosis  # noqa: E402
register("report", _diagnosis.report_command)
register("gate", _diagnosis.gate_command)
register("runs", _diagnosis.runs_command)
register("compare", _diagnosis.compare_command)
from riswb.commands import training as _training  # noqa: E402
register("overfit", _training.overfit_command)
register("train", _training.train_command)
register("litmus", _diagnosis.litmus_command)
register("bench", _diagnosis.bench_command)
from riswb.commands import faults as _faults  # noqa: E402
register("faults", _faults.faults_command)
