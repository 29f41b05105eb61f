"""Shared by the CLI tests: the one-line error contract (exit 2, one `riswb: error:` line)."""

import pytest


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
