import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, lr_at, severities

ID = "lr-stalled"


def test_warmup_then_cosine(make_run):
    assert check(make_run(), ID) == []


def test_lr_zero_in_one_group(make_run):
    spec = healthy().update("lr", lambda s, r: {**r, "group/heads": 0.0 if s < 150 else 1e-3})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error"
    heads = finding.evidence["groups"]["heads"]
    assert heads["zero_ranges"] == [[0, 149]] and heads["zero_fraction"] == 0.75
    assert "backbone" not in finding.evidence["groups"]
    assert "step/warmup_steps" in finding.fix


def test_lr_relative_to_recorded_initial(make_run):
    spec = healthy().update("lr", lambda s, r: {**r, "group/heads": 1e-6,
                                                "initial/heads": 1e-3})
    assert severities(check(make_run(spec), ID)) == ["error"]


def test_endless_warmup_warns(make_run):
    spec = healthy().update("lr", lambda s, r: {**r, "group/backbone": 1e-3 * (s + 1) / 200})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning"
    assert finding.evidence["groups"]["backbone"]["peak_reached_at_step"] >= 180
    assert "per epoch" in finding.fix


def test_warmup_from_zero_is_info(make_run):
    spec = healthy().update("lr", lambda s, r: {**r, "group/backbone": 0.0 if s < 3
                                                else lr_at(s, 200)})
    assert severities(check(make_run(spec), ID)) == ["info"]


def test_unchecked(make_run):
    with pytest.raises(Unchecked):
        check(make_run(healthy().drop("lr")), ID)
