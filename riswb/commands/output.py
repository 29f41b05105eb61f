"""Where command output goes: a rich console for tables, strict JSON for `--format json`."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console

from riswb.jsonsafe import dumps


def console() -> Console:
    """A console for tables: the terminal's width, or 120 columns when piped."""
    return Console(width=None if sys.stdout.isatty() else 120, highlight=False)


def echo_json(value: Any) -> None:
    """Print `value` as strict JSON (non-finite numbers as "NaN", "Infinity", "-Infinity")."""
    typer.echo(dumps(value))
