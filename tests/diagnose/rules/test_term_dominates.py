import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy

ID = "term-dominates"


def test_balanced_terms(make_run):
    assert check(make_run(), ID) == []


def test_dominant_term_named_with_ratio(make_run):
    spec = healthy().update("term_grad", lambda s, r: {**r, "gap": r["gap"] * 1e4})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning" and finding.evidence["term"] == "gap"
    assert finding.evidence["ratio_to_second"] > 1000
    assert set(finding.evidence["drowned_terms"]) == {"nmse", "ortho"}
    assert finding.evidence["top_on_fraction_of_steps"] == 1.0


def test_dwarfed_term_that_is_minimized_is_not_drowned(make_run):
    # a regularizer driven to ~0 has a tiny gradient because it is satisfied
    spec = healthy().update("term_grad", lambda s, r: {**r, "gap": r["gap"] * 1e4})
    spec.update("loss", lambda s, r: {**r, "nmse": r["nmse"] * 10.0 ** (-s / 20),
                                      "ortho": r["ortho"] * 10.0 ** (-s / 20)})
    assert check(make_run(spec), ID) == []


def test_threshold_override(make_run):
    run = make_run()
    assert check(run, ID, dominance_ratio=1.5)  # nmse's norm is ~2× the next


def test_needs_two_live_terms(make_run):
    spec = healthy().update("term_grad", lambda s, r: {"nmse": r["nmse"], "gap": 0.0})
    with pytest.raises(Unchecked):
        check(make_run(spec), ID)
