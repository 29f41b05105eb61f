import xml.etree.ElementTree as ET

import pytest

from riswb.diagnose.gate import gate, junit_xml, write_junit
from riswb.diagnose.rules import RULES, Thresholds
from riswb.errors import RiswbError
from riswb.runlog import RunWriter, read_run


def test_healthy_run_passes(tmp_path, synthetic_run):
    result = gate(read_run(synthetic_run(tmp_path, steps=1000)))
    assert result.passed, result.reasons
    assert result.reasons == []
    assert [c.name for c in result.checks] == ["params-move", "loss-drops", "no-error-findings"]
    assert all(c.passed for c in result.checks)


def test_frozen_params_fail(tmp_path, synthetic_run):
    result = gate(read_run(synthetic_run(tmp_path, steps=1000, frozen=True)))
    assert not result.passed
    assert any(r.startswith("params-move:") for r in result.reasons)
    moving = next(c for c in result.checks if c.name == "params-move")
    assert moving.value == 0.0


def test_flat_loss_fails(tmp_path, synthetic_run):
    result = gate(read_run(synthetic_run(tmp_path, steps=1000, flat_loss=True)))
    assert not result.passed
    assert any(r.startswith("loss-drops:") for r in result.reasons)


def test_error_finding_fails_even_when_loss_and_params_are_fine(tmp_path, synthetic_run):
    result = gate(read_run(synthetic_run(tmp_path, steps=1000, swap_unrestored=True)))
    checks = {c.name: c.passed for c in result.checks}
    assert checks["params-move"] and checks["loss-drops"]
    assert not checks["no-error-findings"] and not result.passed
    assert any(r.startswith("weights-swapped") for r in result.reasons)


def test_thresholds_are_honoured(tmp_path, synthetic_run):
    run = read_run(synthetic_run(tmp_path, steps=1000))
    assert not gate(run, Thresholds().overrides(min_loss_drop=0.99)).passed
    frozen = read_run(synthetic_run(tmp_path, steps=1000, name="frozen", frozen=True))
    lenient = Thresholds().overrides(min_moving_fraction=0.0)
    moving = next(c for c in gate(frozen, lenient).checks if c.name == "params-move")
    assert moving.passed and moving.threshold == 0.0


def test_nan_final_loss_fails(tmp_path, synthetic_run):
    result = gate(read_run(synthetic_run(tmp_path, steps=500, nan_loss_at=450)))
    drop = next(c for c in result.checks if c.name == "loss-drops")
    assert not drop.passed and "nan" in drop.detail


def test_no_records_fail_conservatively(tmp_path):
    writer = RunWriter(tmp_path, "empty")
    writer.close()
    result = gate(read_run(writer.path))
    assert not result.passed
    assert any("cannot tell" in r for r in result.reasons)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_loss_drop": 1.5},
        {"min_loss_drop": -0.1},
        {"min_moving_fraction": -0.1},
        {"min_moving_fraction": 2.0},
        {"min_loss_drop": float("nan")},
    ],
)
def test_bad_thresholds_are_usage_errors(kwargs):
    with pytest.raises(RiswbError, match=next(iter(kwargs))):
        Thresholds().overrides(**kwargs)


def test_junit_is_valid_and_counts_failures(tmp_path, synthetic_run):
    result = gate(read_run(synthetic_run(tmp_path, steps=1000, healthy=False)))
    path = write_junit(result, tmp_path / "reports" / "gate.xml")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases)
    failed = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failed) == int(root.get("failures"))
    errors = result.diagnosis.errors
    assert len(failed) == 3 + len(errors)  # all three gate checks fail, plus each error
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert int(suite.get("skipped")) == len(skipped) == len(result.diagnosis.unchecked)
    names = {c.get("name") for c in cases}
    assert {"params-move", "loss-drops", "no-error-findings", "params-not-moving"} <= names
    assert set(RULES) <= names  # every rule: a finding, unchecked, or clean


def test_junit_of_a_passing_run_has_no_failures(tmp_path, synthetic_run):
    result = gate(read_run(synthetic_run(tmp_path, steps=1000)))
    root = ET.fromstring(junit_xml(result).split("\n", 1)[1])
    assert root.get("failures") == "0"
    assert int(root.get("tests")) >= 3


def _adversarial_run(tmp_path, totals):
    """Loss calls alternating between a discriminator's and a generator's terms."""
    writer = RunWriter(tmp_path, "gan", argv=["test"])
    for step, total in enumerate(totals):
        terms = {"d_real": total / 2, "d_fake": total / 2} if step % 2 else {"g_adv": total}
        writer.scalars(step, "loss", {**terms, "total": total})
        writer.scalars(step, "param_update", {"ratio": 1e-3, "update_norm": 1e-3})
    writer.close()
    return read_run(writer.path)


def test_loss_drops_is_not_judged_when_objectives_alternate(tmp_path):
    # a GAN: the adversaries' summed loss need not fall (here it rises by 10%)
    check = gate(_adversarial_run(tmp_path, [0.9 + 0.001 * i for i in range(100)])).checks[1]
    assert check.name == "loss-drops" and check.passed
    assert check.detail.startswith("not judged: the loss alternates between 2 objectives")


def test_an_adversarial_run_ending_in_nan_still_fails(tmp_path):
    check = gate(_adversarial_run(tmp_path, [1.0] * 99 + [float("nan")])).checks[1]
    assert check.name == "loss-drops" and not check.passed
