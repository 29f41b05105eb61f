"""`riswb litmus` and `riswb bench` through the real CLI: output, formats, exit codes."""

import json

import pytest
from typer.testing import CliRunner

from riswb.cli import app
from riswb.reference.faults import FAULTS
from riswb.reference.litmus import CHECKS

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


SIGNATURE_FAULTS = [name for name, fault in FAULTS.items() if fault.litmus]


def test_litmus_table_passes_on_the_clean_pipeline():
    result = invoke("litmus")
    assert result.exit_code == 0, result.output
    for name in CHECKS:
        assert name in result.output
    assert "FAIL" not in result.output
    assert f"{len(CHECKS)}/{len(CHECKS)} checks passed" in result.output


@pytest.mark.skipif(not SIGNATURE_FAULTS, reason="no fault with a litmus signature yet")
def test_litmus_json_with_a_fault_exits_1_and_names_its_checks():
    fault = SIGNATURE_FAULTS[0]
    result = invoke("litmus", "--inject", fault, "--format", "json", "--seed", "0")
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["passed"] is False and data["inject"] == fault
    assert set(FAULTS[fault].litmus) <= set(data["failed"])
    assert {c["name"] for c in data["checks"]} == set(CHECKS)
    for check in data["checks"]:
        assert {"name", "passed", "detail", "evidence"} <= set(check)


@pytest.mark.skipif(not SIGNATURE_FAULTS, reason="no fault with a litmus signature yet")
def test_litmus_table_with_a_fault_exits_1():
    result = invoke("litmus", "--inject", SIGNATURE_FAULTS[0])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "all failed, as expected" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("litmus", "--preset", "huge"), "preset"),
        (("litmus", "--inject", "no-such-fault"), "fault"),
        (("litmus", "--format", "yaml"), "format"),
        (("bench", "--steps", "0"), "--steps"),
        (("bench", "--model", "resnet"), "model"),
        (("bench", "--format", "xml"), "format"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, needle, one_line_error):
    assert needle in one_line_error(invoke(*args))


def test_bench_tiny_table_prints_ratios_for_both_models():
    result = invoke("bench", "--steps", "1", "--rounds", "1", "--warmup", "0")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "mlp ratio" in out and "reference ratio" in out
    assert "default (all)" in out and "term_gradients" in out and "×" in out
    assert "budget" in out


def test_bench_tiny_json():
    result = invoke("bench", "--steps", "1", "--rounds", "1", "--warmup", "0", "--model", "mlp",
                    "--no-per-probe", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["budget"] == 1.10 and set(data["models"]) == {"mlp"}
    mlp = data["models"]["mlp"]
    assert mlp["total_ratio"] > 0 and mlp["per_probe"] == {}
    assert mlp["config"]["model"] == "mlp"
