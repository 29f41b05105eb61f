"""The diagnosis commands through the real CLI: every command, option and exit code."""

import json
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from riswb.cli import app

runner = CliRunner()


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


@pytest.fixture
def runs(tmp_path, synthetic_run, monkeypatch):
    """A runs dir (also $RISWB_RUNS_DIR) with a healthy and a broken run."""
    root = tmp_path / "runs"
    healthy = synthetic_run(root, steps=800, name="a-healthy")
    broken = synthetic_run(root, steps=800, name="b-broken", healthy=False)
    monkeypatch.setenv("RISWB_RUNS_DIR", str(root))
    return root, healthy, broken


# --------------------------------------------------------------------------- report


def test_report_table_with_plots(runs):
    _, healthy, _ = runs
    result = invoke("report", healthy)
    assert result.exit_code == 0, result.output
    assert "riswb report" in result.output and healthy.name in result.output
    assert "Loss terms" in result.output and "plots:" in result.output
    pngs = sorted(p.name for p in (healthy / "plots").glob("*.png"))
    assert pngs == sorted(
        ["loss.png", "grad_norms.png", "param_update.png", "lr.png", "spectra.png", "nonfinite.png"]
    )


def test_report_json_parses_and_has_findings(runs):
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


def test_report_markdown(runs):
    _, _, broken = runs
    result = invoke("report", broken, "-f", "markdown", "--no-plots")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"# riswb report: {broken.name}")
    assert "## Findings" in result.output and "| term | weight |" in result.output


def test_report_resolves_id_prefix_latest_and_runs_dir(runs, monkeypatch):
    root, healthy, broken = runs
    by_id = invoke("report", healthy.name, "--no-plots", "--format", "json")
    assert json.loads(by_id.output)["summary"]["id"] == healthy.name
    latest = invoke("report", "latest", "--no-plots", "--format", "json")
    assert json.loads(latest.output)["summary"]["id"] == broken.name  # names sort by time
    monkeypatch.delenv("RISWB_RUNS_DIR")
    explicit = invoke("report", "latest", "--runs-dir", root, "--no-plots", "--format", "json")
    assert json.loads(explicit.output)["summary"]["id"] == broken.name


def test_report_on_a_torn_run_warns_and_works(tmp_path, synthetic_run):
    path = synthetic_run(tmp_path, steps=400, torn=True)
    result = invoke("report", path, "--no-plots")
    assert result.exit_code == 0, result.output
    assert "torn last line" in result.output


def test_report_killed_run(tmp_path, synthetic_run):
    path = synthetic_run(tmp_path, steps=300, status="killed")
    data = json.loads(invoke("report", path, "--no-plots", "--format", "json").output)
    assert data["summary"]["status"] == "killed"


def test_report_threshold_override(runs):
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
        (["report", "RUN", "--threshold", "no_such_threshold=1"], "NAME=VALUE"),
        (["report", "RUN", "--threshold", "min_loss_drop=abc"], "not a number"),
        (["report", "does-not-exist"], "no run directory"),
        (["report", "NOTARUN"], "not a riswb run directory"),
    ],
)
def test_report_usage_errors_exit_2(runs, tmp_path, args, needle, one_line_error):
    _, healthy, _ = runs
    not_a_run = tmp_path / "plain"
    not_a_run.mkdir()
    args = [str(healthy) if a == "RUN" else str(not_a_run) if a == "NOTARUN" else a for a in args]
    assert needle in one_line_error(invoke(*args))


def test_report_latest_without_runs_exit_2(tmp_path, monkeypatch, one_line_error):
    monkeypatch.setenv("RISWB_RUNS_DIR", str(tmp_path / "none"))
    assert "no runs yet" in one_line_error(invoke("report", "latest"))


# --------------------------------------------------------------------------- gate


def test_gate_passes_on_a_healthy_run(runs):
    _, healthy, _ = runs
    result = invoke("gate", healthy)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("PASS")
    assert "✓ params-move" in result.output and "✓ loss-drops" in result.output


def test_gate_fails_with_reasons(runs):
    _, _, broken = runs
    result = invoke("gate", broken)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("FAIL")
    assert "✗ params-move" in result.output and "✗ loss-drops" in result.output
    assert "params-not-moving" in result.output


def test_gate_json_and_junit(runs, tmp_path):
    _, _, broken = runs
    junit = tmp_path / "ci" / "gate.xml"
    result = invoke("gate", broken, "--format", "json", "--junit", junit)
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["passed"] is False and data["reasons"]
    assert {c["name"] for c in data["checks"]} == {"params-move", "loss-drops", "no-error-findings"}
    assert data["junit"] == str(junit)
    root = ET.parse(junit).getroot()
    assert int(root.get("failures")) >= 3
    cases = root.find("testsuite").findall("testcase")
    assert sum(c.find("failure") is not None for c in cases) == int(root.get("failures"))


def test_gate_junit_on_pass(runs, tmp_path):
    _, healthy, _ = runs
    junit = tmp_path / "pass.xml"
    result = invoke("gate", healthy, "--junit", junit)
    assert result.exit_code == 0 and f"junit: {junit}" in result.output.replace("\n", "")
    assert ET.parse(junit).getroot().get("failures") == "0"


def test_gate_thresholds(runs):
    _, healthy, _ = runs
    strict = invoke("gate", healthy, "--min-loss-drop", "0.999", "-f", "json")
    assert strict.exit_code == 1
    assert any(r.startswith("loss-drops") for r in json.loads(strict.output)["reasons"])
    lenient = invoke("gate", healthy, "--min-loss-drop", "0.5", "--min-moving", "0.9")
    assert lenient.exit_code == 0, lenient.output


def test_gate_min_moving_with_skipped_steps_and_out_of_range(tmp_path, synthetic_run):
    path = synthetic_run(tmp_path, steps=600, skipped_steps=True)
    assert invoke("gate", path, "--min-moving", "0.5").exit_code == 0
    assert invoke("gate", path, "--min-moving", "1.01").exit_code == 2


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--format", "markdown"], "--format"),
        (["--min-moving", "1.5"], "--min-moving"),
        (["--min-loss-drop", "2"], "--min-loss-drop"),
        (["--threshold", "bogus=1"], "NAME=VALUE"),
    ],
)
def test_gate_usage_errors_exit_2(runs, extra, needle, one_line_error):
    _, healthy, _ = runs
    assert needle in one_line_error(invoke("gate", healthy, *extra))


def test_gate_missing_run_exit_2(tmp_path, one_line_error):
    assert "no run directory" in one_line_error(invoke("gate", tmp_path / "nope"))


def test_gate_junit_unwritable_exit_2(runs, tmp_path, one_line_error):
    _, healthy, _ = runs
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert "JUnit" in one_line_error(invoke("gate", healthy, "--junit", blocker / "x.xml"))


# --------------------------------------------------------------------------- runs


def test_runs_table(runs):
    root, healthy, broken = runs
    result = invoke("runs")
    assert result.exit_code == 0, result.output
    assert healthy.name in result.output and broken.name in result.output
    assert "params-not-moving" in result.output and "2 run(s)" in result.output


def test_runs_json_counts(runs):
    root, healthy, broken = runs
    rows = json.loads(invoke("runs", "--runs-dir", root, "--format", "json").output)
    by_id = {r["id"]: r for r in rows}
    assert by_id[healthy.name]["errors"] == 0
    assert by_id[broken.name]["errors"] >= 1 and by_id[broken.name]["status"] == "completed"
    assert by_id[healthy.name]["steps"] == 791


def test_runs_quick_and_limit(runs):
    root, healthy, broken = runs
    rows = json.loads(invoke("runs", "--quick", "--limit", "1", "-f", "json").output)
    assert [r["id"] for r in rows] == [broken.name]
    assert "errors" not in rows[0]
    table = invoke("runs", "--quick", "-n", "5")
    assert table.exit_code == 0 and "diagnosis skipped" in table.output


def test_runs_lists_an_unreadable_run(runs):
    root, _, _ = runs
    bad = root / "20990101-000000-bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    rows = json.loads(invoke("runs", "-f", "json").output)
    assert {r["id"]: r["status"] for r in rows}[bad.name] == "unreadable"


def test_runs_empty_and_errors(tmp_path, one_line_error):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("runs", "--runs-dir", empty)
    assert result.exit_code == 0 and "no runs" in result.output
    assert json.loads(invoke("runs", "--runs-dir", empty, "-f", "json").output) == []
    assert "no runs directory" in one_line_error(invoke("runs", "--runs-dir", tmp_path / "x"))
    assert "--format" in one_line_error(invoke("runs", "--runs-dir", empty, "-f", "csv"))
    assert "--limit" in one_line_error(invoke("runs", "--runs-dir", empty, "--limit", "-1"))


# --------------------------------------------------------------------------- compare


def test_compare_table_and_plot(runs, tmp_path):
    _, healthy, broken = runs
    plot = tmp_path / "cmp" / "overlay.png"
    result = invoke("compare", healthy, broken, "--plot", plot)
    assert result.exit_code == 0, result.output
    assert "final loss/total" in result.output and "new" in result.output
    assert plot.read_bytes()[:4] == b"\x89PNG" and plot.stat().st_size > 10_000


def test_compare_json_by_id(runs):
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
        (["--threshold", "x=1"], "NAME=VALUE"),
    ],
)
def test_compare_usage_errors_exit_2(runs, extra, needle, one_line_error):
    _, healthy, broken = runs
    assert needle in one_line_error(invoke("compare", healthy, broken, *extra))


def test_compare_missing_run_exit_2(runs, tmp_path, one_line_error):
    _, healthy, _ = runs
    assert "no run directory" in one_line_error(invoke("compare", healthy, tmp_path / "nope"))


def test_help_lists_the_commands():
    result = invoke("--help")
    for name in ("report", "gate", "runs", "compare"):
        assert name in result.output
