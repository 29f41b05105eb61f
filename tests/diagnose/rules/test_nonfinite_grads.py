import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import as_reference, check, healthy, severities

ID = "nonfinite-grads"


def test_finite_grads(make_run):
    assert check(make_run(), ID) == []


def test_sanitized_nan_grads_name_the_term(make_run):
    spec = healthy().update("nonfinite", lambda s, r: {**r, "grad_elems": 64, "params": 2,
                                                       "sanitized": 64} if s >= 100 else r)
    spec.update("term_nonfinite", lambda s, r: {**r, "gap": 64} if s >= 100 else r)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "sanitization" in finding.title
    ev = finding.evidence
    assert ev["first_step"] == 100 and ev["nonfinite_ranges"] == [[100, 190]]
    assert ev["terms"]["gap"]["first_step"] == 100 and ev["sanitized_elems"] == 640
    assert "eigh" not in finding.fix and "GradScaler" in finding.fix  # generic advice
    [finding] = check(make_run(as_reference(spec)), ID)
    assert "eigh" in finding.fix  # the reference pipeline's own history


def test_unsanitized_nan_at_batch_zero(make_run):
    spec = healthy().update("nonfinite", lambda s, r: {**r, "grad_elems": 8} if s == 0 else r)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "first step" in finding.title


def _nan_after(updates):
    """Non-finite gradients from step 100 on, after param_update ratios `updates(step)`."""
    spec = healthy().update("nonfinite", lambda s, r: {**r, "grad_elems": 8} if s >= 100 else r)
    return spec.update("param_update", lambda s, r: {**r, "ratio": updates(s)})


def test_nan_after_the_updates_diverged_names_the_lr(make_run):
    spec = _nan_after(lambda s: 0.01 * 1.1 ** s if s < 100 else float("nan"))
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "diverged" in finding.title
    assert finding.evidence["diverged"]["peak_at_step"] == 99
    assert "learning rate is too high" in finding.fix


def test_nan_after_steady_updates_blames_the_op(make_run):
    spec = _nan_after(lambda s: 0.01)
    [finding] = check(make_run(spec), ID)
    assert "diverged" not in finding.title and "square root" in finding.fix


def _scaler_overflow(steps, count: int = 1):
    """Non-finite gradients on `count` attempts at each of `steps`, all skipped by a scaler."""
    spec = healthy().update("nonfinite", lambda s, r: {
        **r, "grad_elems": 3 * count, "attempts_nonfinite": count,
        "attempts_skipped": count} if s in steps else r)
    for step in steps:
        spec.event(step, "step_skipped", reason="scaler", count=count)
    return spec


def test_scaler_calibration_is_info(make_run):
    # a scale set too high: the first attempts overflow and are skipped, then it recovers
    run = make_run(_scaler_overflow({0}, count=3))
    [finding] = check(run, ID)
    assert finding.severity == "info" and finding.evidence["attempts_nonfinite"] == 3
    assert severities(check(run, ID, scaler_calibration_skips=0)) == ["error"]  # 3 of 200


def test_rare_scaler_handled_overflow_is_info(make_run):
    run = make_run(_scaler_overflow({50}))
    assert severities(check(run, ID, scaler_calibration_skips=0,
                            max_nonfinite_grad_fraction=0.01)) == ["info"]  # 1 of 200


def test_nan_on_every_attempt_is_an_error_even_under_a_scaler(make_run):
    run = make_run(_scaler_overflow(set(range(0, 200, 10)), count=10))
    [finding] = check(run, ID)
    assert finding.severity == "error" and finding.evidence["attempts_nonfinite"] == 200


def test_nan_sanitized_by_the_loop_itself_is_an_error(make_run):
    # the loop's own nan_to_num_: grad_step saw the elements, no wb.sanitize_ call
    spec = healthy().update("nonfinite", lambda s, r: {
        **r, "grad_elems": 5, "sanitized": 5, "attempts_nonfinite": 10} if s >= 20 else r)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "sanitization" in finding.title


def test_unchecked_without_counts(make_run):
    with pytest.raises(Unchecked):
        check(make_run(healthy().drop("nonfinite")), ID)
