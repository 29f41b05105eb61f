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


def test_one_bad_run_never_hides_the_good_ones(runs, invoke):
    """A manifest that is not JSON makes a "corrupt" row; a run whose diagnosis fails an
    "unreadable" row with the reason; a run with bad lines says how many. The good runs
    are all still listed, and the command exits 0."""
    root, healthy, broken = runs
    corrupt = root / "20990101-000000-corrupt"
    corrupt.mkdir()
    (corrupt / "manifest.json").write_text("{not json")
    (broken / "scalars.jsonl").open("a").write('5\n{"step": -1, "kind": "loss"}\n')
    rows = {r["id"]: r for r in json.loads(invoke("runs", "-f", "json").output)}
    assert rows[corrupt.name]["status"] == "corrupt"
    assert rows[healthy.name]["status"] == "completed" and rows[healthy.name]["errors"] == 0
    assert rows[broken.name]["dropped_lines"] == 2
    table = invoke("runs")
    assert table.exit_code == 0 and "3 run(s)" in table.output and "bad" in table.output


def test_a_run_that_breaks_the_diagnosis_is_a_row(runs, invoke, monkeypatch):
    root, healthy, broken = runs

    def fails(run):
        if run.path == broken:
            raise ZeroDivisionError("in a rule")
        return diagnose(run)

    from riswb.diagnose.rules import diagnose

    monkeypatch.setattr("riswb.commands.runs.diagnose", fails)
    result = invoke("runs", "-f", "json")
    assert result.exit_code == 0
    rows = {r["id"]: r for r in json.loads(result.output)}
    assert rows[broken.name] == {"id": broken.name, "path": str(broken), "status": "unreadable",
                                 "error": "ZeroDivisionError: in a rule"}
    assert rows[healthy.name]["status"] == "completed"


def test_runs_empty_and_errors(tmp_path, one_line_error, invoke):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("runs", "--runs-dir", empty)
    assert result.exit_code == 0 and "no runs" in result.output
    assert json.loads(invoke("runs", "--runs-dir", empty, "-f", "json").output) == []
    assert "no runs directory" in one_line_error(invoke("runs", "--runs-dir", tmp_path / "x"))
    assert "--format" in one_line_error(invoke("runs", "--runs-dir", empty, "-f", "csv"))
    assert "--limit" in one_line_error(invoke("runs", "--runs-dir", empty, "--limit", "-1"))
