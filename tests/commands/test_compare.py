"""`riswb compare` through the real CLI: table with an overlay plot, JSON, errors."""

import json

import pytest


def test_compare_table_and_plot(runs, tmp_path, invoke):
    _, healthy, broken = runs
    plot = tmp_path / "cmp" / "overlay.png"
    result = invoke("compare", healthy, broken, "--plot", plot)
    assert result.exit_code == 0, result.output
    assert "final loss/total" in result.output and "new" in result.output
    assert plot.read_bytes()[:4] == b"\x89PNG" and plot.stat().st_size > 10_000


def test_compare_json_by_id(runs, invoke):
    _, healthy, broken = runs
    result = invoke("compare", healthy.name, broken.name, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["run_a"] == healthy.name and data["plot"] is None
    assert {f["change"] for f in data["findings"]} == {"new"}


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--format", "markdown"], "--format"),
        (["--plot", "out.svg"], ".png"),
        (["--threshold", "x=1"], "unknown threshold"),
    ],
)
def test_compare_usage_errors_exit_2(runs, extra, needle, one_line_error, invoke):
    _, healthy, broken = runs
    assert needle in one_line_error(invoke("compare", healthy, broken, *extra))


def test_compare_missing_run_exit_2(runs, tmp_path, one_line_error, invoke):
    _, healthy, _ = runs
    assert "no run directory" in one_line_error(invoke("compare", healthy, tmp_path / "nope"))
