"""`riswb litmus` through the real CLI: output, formats, exit codes."""

import json

import pytest

from riswb.reference.faults import FAULTS
from riswb.reference.litmus import CHECKS

SIGNATURE_FAULTS = [name for name, fault in FAULTS.items() if fault.litmus]


def test_litmus_table_passes_on_the_clean_pipeline(invoke):
    result = invoke("litmus")
    assert result.exit_code == 0, result.output
    for name in CHECKS:
        assert name in result.output
    assert "FAIL" not in result.output
    assert f"{len(CHECKS)}/{len(CHECKS)} checks passed" in result.output


@pytest.mark.skipif(not SIGNATURE_FAULTS, reason="no fault with a litmus signature yet")
def test_litmus_json_with_a_fault_exits_1_and_names_its_checks(invoke):
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
def test_litmus_table_with_a_fault_exits_1(invoke):
    result = invoke("litmus", "--inject", SIGNATURE_FAULTS[0])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "all failed, as expected" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("litmus", "--preset", "huge"), "preset"),
        (("litmus", "--inject", "no-such-fault"), "fault"),
        (("litmus", "--format", "yaml"), "format"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, needle, one_line_error, invoke):
    assert needle in one_line_error(invoke(*args))
