"""`riswb runs` through the real CLI: table, JSON, --quick, --limit, unreadable runs."""

import json


def test_runs_table(runs, invoke):
    root, healthy, broken = runs
    result = invoke("runs")
    assert result.exit_code == 0, result.output
    assert healthy.name in result.output and broken.name in result.output
    assert "params-not-moving" in result.output and "2 run(s)" in result.output


def test_runs_json_counts(runs, invoke):
    root, healthy, broken = runs
    rows = json.loads(invoke("runs", "--runs-dir", root, "--format", "json").output)
    by_id = {r["id"]: r for r in rows}
    assert by_id[healthy.name]["errors"] == 0
    assert by_id[broken.name]["errors"] >= 1 and by_id[broken.name]["status"] == "completed"
    assert by_id[healthy.name]["steps"] == 791


def test_runs_quick_and_limit(runs, invoke):
    root, healthy, broken = runs
    rows = json.loads(invoke("runs", "--quick", "--limit", "1", "-f", "json").output)
    assert [r["id"] for r in rows] == [broken.name]
    assert "errors" not in rows[0]
    table = invoke("runs", "--quick", "-n", "5")
    assert table.exit_code == 0 and "diagnosis skipped" in table.output


def test_runs_lists_an_unreadable_run(runs, invoke):
    root, _, _ = runs
    bad = root / "20990101-000000-bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    rows = json.loads(invoke("runs", "-f", "json").output)
    assert {r["id"]: r["status"] for r in rows}[bad.name] == "unreadable"


def test_runs_empty_and_errors(tmp_path, one_line_error, invoke):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("runs", "--runs-dir", empty)
    assert result.exit_code == 0 and "no runs" in result.output
    assert json.loads(invoke("runs", "--runs-dir", empty, "-f", "json").output) == []
    assert "no runs directory" in one_line_error(invoke("runs", "--runs-dir", tmp_path / "x"))
    assert "--format" in one_line_error(invoke("runs", "--runs-dir", empty, "-f", "csv"))
    assert "--limit" in one_line_error(invoke("runs", "--runs-dir", empty, "--limit", "-1"))
