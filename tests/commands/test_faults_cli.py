"""`riswb faults` (table, json) and `riswb overfit --inject` through the real CLI."""

import json

from typer.testing import CliRunner

from riswb.cli import app
from riswb.reference.faults import FAULTS

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_faults_json_lists_every_fault():
    result = invoke("faults", "--format", "json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [f["name"] for f in listed] == list(FAULTS)
    for entry in listed:
        assert {"name", "description", "expects", "failure", "litmus"} <= set(entry)
        assert entry["expects"] or entry["litmus"]
    by_name = {f["name"]: f for f in listed}
    assert by_name["step-per-epoch"]["expects"] == ["step-cadence"]
    assert "phase-invariance" in by_name["phase-dependent-eigvec-loss"]["litmus"]


def test_faults_table_names_each_fault():
    result = invoke("faults")
    assert result.exit_code == 0, result.output
    for name in FAULTS:
        assert name in result.output
    assert "optimizer-coverage" in result.output


def test_faults_bad_format_is_usage_error():
    result = invoke("faults", "--format", "xml")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.strip().startswith("riswb: error:")


def test_overfit_inject_fault_fails_the_gate(tmp_path):
    result = invoke("overfit", "--samples", 64, "--epochs", 4, "--device", "cpu",
                    "--inject", "heads-not-in-optimizer", "--runs-dir", tmp_path,
                    "--format", "json")
    assert result.exit_code == 1, result.output
    verdict = json.loads(result.stdout)
    assert verdict["gate"]["passed"] is False
    assert "optimizer-coverage" in {f["id"] for f in verdict["gate"]["findings"]}
    assert "overfit-heads-not-in-optimizer" in verdict["run"]


def test_overfit_inject_unknown_fault_is_usage_error(tmp_path):
    result = invoke("overfit", "--samples", 64, "--epochs", 1, "--device", "cpu",
                    "--inject", "no-such-fault", "--runs-dir", tmp_path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "unknown fault 'no-such-fault'" in result.output
    assert not list(tmp_path.iterdir())  # no run directory was started
