"""run_litmus / run_checks (riswb/reference/litmus/__init__.py): every check passes on the
clean pipeline, each fault's signature fails, unknown inputs are usage errors."""

from __future__ import annotations

import json

import pytest

from riswb.errors import RiswbError
from riswb.reference import litmus
from riswb.reference.faults import FAULTS


@pytest.fixture(scope="module")
def clean() -> litmus.LitmusResult:
    return litmus.run_litmus("small", seed=0)


@pytest.mark.parametrize("name", list(litmus.CHECKS))
def test_each_check_passes_on_the_clean_pipeline(clean, name):
    result = clean[name]
    assert result.passed, f"{name}: {result.detail}"
    assert result.detail and "\n" not in result.detail
    assert isinstance(result.evidence, dict)


def test_result_shape_and_json(clean):
    assert clean.passed and clean.failed == [] and clean.inject is None
    assert [c.name for c in clean.checks] == list(litmus.CHECKS)
    data = json.loads(json.dumps(clean.to_dict(), allow_nan=False))
    assert data["passed"] is True and len(data["checks"]) == len(litmus.CHECKS)
    assert clean.seconds < 120  # generous for a loaded CI box


def test_unknown_inputs_are_usage_errors():
    with pytest.raises(RiswbError, match="preset"):
        litmus.run_litmus("huge")
    with pytest.raises(RiswbError, match="fault"):
        litmus.run_litmus("small", inject="no-such-fault")
    with pytest.raises(RiswbError, match="check"):
        litmus.run_checks(object(), ["no-such-check"])


@pytest.mark.parametrize("fault", [n for n, f in FAULTS.items() if f.litmus])
def test_fault_signatures_fail_their_checks(fault):
    result = litmus.run_litmus("small", inject=fault)
    assert result.expected_failures == FAULTS[fault].litmus
    missed = set(FAULTS[fault].litmus) - set(result.failed)
    assert not missed, {n: result[n].detail for n in missed}
