import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

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
    assert "eigh" in finding.fix and "GradScaler" in finding.fix


def test_unsanitized_nan_at_batch_zero(make_run):
    spec = healthy().update("nonfinite", lambda s, r: {**r, "grad_elems": 8} if s == 0 else r)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "first step" in finding.title


def test_rare_scaler_handled_overflow_is_info(make_run):
    spec = healthy().update("nonfinite", lambda s, r: {**r, "grad_elems": 3} if s == 50 else r)
    spec.event(50, "step_skipped", reason="scaler", count=1)
    run = make_run(spec)
    assert severities(check(run, ID, max_nonfinite_grad_fraction=0.05)) == ["info"]
    assert severities(check(run, ID)) == ["error"]  # 1 of 20 records: above 1%


def test_unchecked_without_counts(make_run):
    with pytest.raises(Unchecked):
        check(make_run(healthy().drop("nonfinite")), ID)
