import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "step-cadence"


def test_one_step_per_batch(make_run):
    assert check(make_run(), ID) == []


def test_one_step_per_epoch(make_run):
    spec = healthy(steps=500).update(
        "cadence", lambda s, r: {**r, "optimizer_step": s // 100, "backward": s // 100})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error"
    ev = finding.evidence
    assert ev["loss_calls"] == 491 and ev["optimizer_steps"] == 4 and ev["ratio"] < 0.01
    assert ev["off_cadence_ranges"]
    assert "indentation" in finding.fix and "backward ran 4 times" in finding.title


def test_accumulation_intent_is_respected(make_run):
    spec = healthy().update("cadence", lambda s, r: {**r, "optimizer_step": (s + 1) // 4})
    run_without = make_run(spec)
    assert severities(check(run_without, ID)) == ["error"]
    spec.manifest["intent"] = {"accumulation": 4}
    assert check(make_run(spec), ID) == []


def test_two_steps_per_batch(make_run):
    spec = healthy().update("cadence", lambda s, r: {**r, "optimizer_step": 3 * (s + 1)})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "second step()" in finding.fix


def test_slightly_off_warns(make_run):
    spec = healthy().update("cadence", lambda s, r: {**r, "optimizer_step": int(0.7 * (s + 1))})
    assert severities(check(make_run(spec), ID)) == ["warning"]


def test_unchecked(make_run):
    with pytest.raises(Unchecked):
        check(make_run(healthy().drop("cadence")), ID)
    short = healthy().update("cadence", lambda s, r: r if s == 0 else None)
    with pytest.raises(Unchecked, match="loss calls"):
        check(make_run(short), ID)
