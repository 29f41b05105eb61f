"""`riswb report` through the real CLI: formats, run resolution, thresholds, errors."""

import json

import pytest


def test_report_table_with_plots(runs, invoke):
    _, healthy, _ = runs
    result = invoke("report", healthy)
    assert result.exit_code == 0, result.output
    assert "riswb report" in result.output and healthy.name in result.output
    assert "Loss terms" in result.output and "plots:" in result.output
    pngs = sorted(p.name for p in (healthy / "plots").glob("*.png"))
    assert pngs == sorted(
        ["loss.png", "grad_norms.png", "param_update.png", "lr.png", "spectra.png", "nonfinite.png"]
    )


def test_report_json_parses_and_has_findings(runs, invoke):
    _, _, broken = runs
    result = invoke("report", broken, "--format", "json", "--no-plots")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert isinstance(data["findings"], list) and data["findings"]
    for finding in data["findings"]:
        assert {"id", "severity", "title", "evidence", "fix"} <= set(finding)
    assert "params-not-moving" in {f["id"] for f in data["findings"]}
    assert isinstance(data["unchecked"], dict)
    assert data["summary"]["id"] == broken.name and data["plots"] == {}
    assert not (broken / "plots").exists()  # --no-plots


def test_report_markdown(runs, invoke):
    _, _, broken = runs
    result = invoke("report", broken, "-f", "markdown", "--no-plots")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"# riswb report: {broken.name}")
    assert "## Findings" in result.output and "| term | weight |" in result.output


def test_report_resolves_id_prefix_latest_and_runs_dir(runs, monkeypatch, invoke):
    root, healthy, broken = runs
    by_id = invoke("report", healthy.name, "--no-plots", "--format", "json")
    assert json.loads(by_id.output)["summary"]["id"] == healthy.name
    latest = invoke("report", "latest", "--no-plots", "--format", "json")
    assert json.loads(latest.output)["summary"]["id"] == broken.name  # names sort by time
    monkeypatch.delenv("RISWB_RUNS_DIR")
    explicit = invoke("report", "latest", "--runs-dir", root, "--no-plots", "--format", "json")
    assert json.loads(explicit.output)["summary"]["id"] == broken.name


def test_report_on_a_torn_run_warns_and_works(tmp_path, synthetic_run, invoke):
    path = synthetic_run(tmp_path, steps=400, torn=True)
    result = invoke("report", path, "--no-plots")
    assert result.exit_code == 0, result.output
    assert "torn last line" in result.output


def test_report_killed_run(tmp_path, synthetic_run, invoke):
    path = synthetic_run(tmp_path, steps=300, status="killed")
    data = json.loads(invoke("report", path, "--no-plots", "--format", "json").output)
    assert data["summary"]["status"] == "killed"


def test_report_threshold_override(runs, invoke):
    _, healthy, _ = runs
    default = json.loads(invoke("report", healthy, "--no-plots", "-f", "json").output)
    strict = invoke(
        "report", healthy, "--no-plots", "-f", "json", "--threshold", "min_loss_drop=0.999"
    )
    assert strict.exit_code == 0, strict.output
    ids = {f["id"] for f in json.loads(strict.output)["findings"]}
    assert "loss-not-dropping" in ids
    assert "loss-not-dropping" not in {f["id"] for f in default["findings"]}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["report", "RUN", "--format", "yaml"], "--format"),
        (["report", "RUN", "--threshold", "no_such_threshold=1"], "unknown threshold"),
        (["report", "RUN", "--threshold", "min_loss_drop"], "NAME=VALUE"),
        (["report", "RUN", "--threshold", "min_loss_drop=abc"], "not a number"),
        (["report", "RUN", "--threshold", "min_loss_drop=nan"], "finite number in [0, 1]"),
        (["report", "RUN", "--threshold", "min_loss_drop=-0.1"], "finite number in [0, 1]"),
        (["report", "does-not-exist"], "no run directory"),
        (["report", "NOTARUN"], "not a riswb run directory"),
    ],
)
def test_report_usage_errors_exit_2(runs, tmp_path, args, needle, one_line_error, invoke):
    _, healthy, _ = runs
    not_a_run = tmp_path / "plain"
    not_a_run.mkdir()
    args = [str(healthy) if a == "RUN" else str(not_a_run) if a == "NOTARUN" else a for a in args]
    assert needle in one_line_error(invoke(*args))


def test_report_latest_without_runs_exit_2(tmp_path, monkeypatch, one_line_error, invoke):
    monkeypatch.setenv("RISWB_RUNS_DIR", str(tmp_path / "none"))
    assert "no runs yet" in one_line_error(invoke("report", "latest"))
