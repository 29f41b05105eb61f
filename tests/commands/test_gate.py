"""`riswb gate` through the real CLI: verdicts, JUnit, thresholds, exit codes."""

import json
import xml.etree.ElementTree as ET

import pytest


def test_gate_passes_on_a_healthy_run(runs, invoke):
    _, healthy, _ = runs
    result = invoke("gate", healthy)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("PASS")
    assert "✓ params-move" in result.output and "✓ loss-drops" in result.output


def test_gate_fails_with_reasons(runs, invoke):
    _, _, broken = runs
    result = invoke("gate", broken)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("FAIL")
    assert "✗ params-move" in result.output and "✗ loss-drops" in result.output
    assert "params-not-moving" in result.output


def test_gate_json_and_junit(runs, tmp_path, invoke):
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


def test_gate_junit_on_pass(runs, tmp_path, invoke):
    _, healthy, _ = runs
    junit = tmp_path / "pass.xml"
    result = invoke("gate", healthy, "--junit", junit)
    assert result.exit_code == 0 and f"junit: {junit}" in result.output.replace("\n", "")
    assert ET.parse(junit).getroot().get("failures") == "0"


def test_gate_thresholds(runs, invoke):
    _, healthy, _ = runs
    strict = invoke("gate", healthy, "--min-loss-drop", "0.999", "-f", "json")
    assert strict.exit_code == 1
    assert any(r.startswith("loss-drops") for r in json.loads(strict.output)["reasons"])
    lenient = invoke("gate", healthy, "--min-loss-drop", "0.5", "--min-moving", "0.9")
    assert lenient.exit_code == 0, lenient.output


def test_gate_min_moving_with_skipped_steps_and_out_of_range(tmp_path, synthetic_run, invoke):
    path = synthetic_run(tmp_path, steps=600, skipped_steps=True)
    assert invoke("gate", path, "--min-moving", "0.5").exit_code == 0
    assert invoke("gate", path, "--min-moving", "1.01").exit_code == 2


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--format", "markdown"], "--format"),
        (["--min-moving", "1.5"], "min_moving_fraction"),
        (["--min-loss-drop", "2"], "min_loss_drop"),
        (["--min-loss-drop", "-1"], "min_loss_drop"),
        (["--threshold", "bogus=1"], "unknown threshold"),
    ],
)
def test_gate_usage_errors_exit_2(runs, extra, needle, one_line_error, invoke):
    _, healthy, _ = runs
    assert needle in one_line_error(invoke("gate", healthy, *extra))


def test_gate_missing_run_exit_2(tmp_path, one_line_error, invoke):
    assert "no run directory" in one_line_error(invoke("gate", tmp_path / "nope"))


def test_gate_junit_unwritable_exit_2(runs, tmp_path, one_line_error, invoke):
    _, healthy, _ = runs
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    assert "JUnit" in one_line_error(invoke("gate", healthy, "--junit", blocker / "x.xml"))
