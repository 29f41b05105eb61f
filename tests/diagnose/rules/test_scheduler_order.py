import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "scheduler-order"


def test_right_order(make_run):
    assert check(make_run(), ID) == []


def test_event_is_reported(make_run):
    spec = healthy().event(0, "scheduler_order", scheduler_step=1, opt_step=0)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning" and finding.evidence["first_step"] == 0
    assert "_step_count" in finding.fix


def test_scheduler_running_ahead_in_cadence(make_run):
    spec = healthy().update("cadence", lambda s, r: {**r, "optimizer_step": (s + 2) // 2,
                                                     "step_attempts": (s + 2) // 2})
    findings = check(make_run(spec), ID)
    assert severities(findings) == ["warning"]
    assert findings[0].evidence["excess"] == 95


def test_unchecked_without_events_or_cadence(make_run):
    with pytest.raises(Unchecked):
        check(make_run(healthy().drop("cadence")), ID)
