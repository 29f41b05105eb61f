"""Shared by the CLI tests: `invoke` (the real CLI), the one-line error contract (exit 2,
one `riswb: error:` line), strict JSON parsing, and a runs dir with two runs."""

import json

import pytest
from typer.testing import CliRunner

from riswb.cli import app


@pytest.fixture
def invoke():
    """invoke(*args) -> the CliRunner result of `riswb ARGS` (each arg str()-ed)."""
    runner = CliRunner()
    return lambda *args, **kwargs: runner.invoke(app, [str(a) for a in args], **kwargs)


@pytest.fixture
def strict_loads():
    """json.loads that rejects the bare NaN/Infinity tokens plain json.dumps writes."""
    return lambda text: json.loads(
        text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))
    )


@pytest.fixture
def one_line_error():
    """Assert a CliRunner result is the one-line usage error; return that line."""

    def check(result):
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("riswb: error:"), result.output
        return lines[0]

    return check


@pytest.fixture
def runs(tmp_path, synthetic_run, monkeypatch):
    """A runs dir (also $RISWB_RUNS_DIR) with a healthy and a broken run."""
    root = tmp_path / "runs"
    healthy = synthetic_run(root, steps=800, name="a-healthy")
    broken = synthetic_run(root, steps=800, name="b-broken", healthy=False)
    monkeypatch.setenv("RISWB_RUNS_DIR", str(root))
    return root, healthy, broken
