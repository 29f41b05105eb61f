import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "step-skipped"


def test_no_skips(make_run):
    assert check(make_run(), ID) == []


def test_gate_skips_are_an_error(make_run):
    spec = healthy()
    for step in range(5, 200, 10):
        spec.event(step, "step_skipped", reason="gate", count=1)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error"
    assert finding.evidence["skipped"] == 20 and finding.evidence["intended_steps"] == 191
    assert "gate" in finding.fix


def test_few_scaler_skips_are_info(make_run):
    spec = healthy().event(3, "step_skipped", reason="scaler", count=1)
    assert severities(check(make_run(spec), ID)) == ["info"]


def test_scaler_calibration_skips_are_info(make_run):
    # 8 skips of 200 (4%) at the start, then the scaler recovered: calibration
    spec = healthy().event(0, "step_skipped", reason="scaler", count=8)
    spec.update("nonfinite", lambda s, r: {**r, "attempts_nonfinite": 8,
                                           "attempts_skipped": 8} if s == 0 else r)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info" and finding.evidence["calibration_skips"] == 8
    assert severities(check(make_run(spec), ID, scaler_calibration_skips=0)) == ["warning"]


def test_scaler_skipping_to_the_end_is_an_error(make_run):
    # every attempt of the last interval skipped: not calibration
    spec = healthy()
    for step in range(0, 200, 10):
        spec.event(step, "step_skipped", reason="scaler", count=1)
    spec.update("nonfinite", lambda s, r: {**r, "attempts_nonfinite": 10,
                                           "attempts_skipped": 10} if s == 190 else r)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["calibration_skips"] == 0


def test_silent_empty_steps_between_moving_ones(make_run):
    spec = healthy().update("param_update",
                            lambda s, r: {**r, "frac_moving": 0.0} if s % 5 == 0 else r)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["reason"] == "silent"
    assert finding.evidence["empty_updates"] == 40


def test_zero_lr_steps_are_not_skips(make_run):
    spec = healthy().update("param_update",
                            lambda s, r: {**r, "frac_moving": 0.0} if s % 5 == 0 else r)
    spec.update("lr", lambda s, r: {**r, "group/backbone": 0.0, "group/heads": 0.0}
                if s % 5 == 0 else r)
    assert check(make_run(spec), ID) == []


def test_unchecked_without_data(make_run):
    with pytest.raises(Unchecked):
        check(make_run(healthy().drop("param_update")), ID)


def _closure_run(converged_from: int, progress_after: bool = False):
    """Every step by closure (LBFGS); steps from `converged_from` on change nothing."""
    spec = healthy().update("cadence", lambda s, r: {**r, "closure_steps": s + 1})
    spec.update("param_update",
                lambda s, r: {**r, "frac_moving": 0.0, "ratio": 0.0}
                if s >= converged_from and s % 3 == 0 else r)
    if not progress_after:  # the loss stopped falling where the steps went empty
        spec.update("loss", lambda s, r: r if s < converged_from else
                    {**r, "total": 1e-5, **{k: 1e-5 for k in r if k not in ("step", "total")}})
    return spec


def test_closure_optimizer_stopping_after_convergence_is_not_a_skip(make_run):
    assert check(make_run(_closure_run(150)), ID) == []


def test_closure_optimizer_empty_steps_before_further_progress_are_reported(make_run):
    [finding] = check(make_run(_closure_run(150, progress_after=True)), ID)
    assert finding.evidence["reason"] == "silent"


def test_empty_steps_without_closure_are_reported_even_if_converged(make_run):
    spec = _closure_run(150)
    spec.update("cadence", lambda s, r: {**r, "closure_steps": 0})
    [finding] = check(make_run(spec), ID)
    assert finding.evidence["reason"] == "silent"
