import math

import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import as_reference, check, healthy

ID = "nonfinite-loss"


def test_finite_loss_is_fine(make_run):
    assert check(make_run(), ID) == []


def test_nan_loss_names_the_first_term(make_run):
    def poison(step, rec):
        if step >= 120:
            rec.update(total=math.nan, gap=math.inf)
        return rec

    [finding] = check(make_run(healthy().update("loss", poison)), ID)
    assert finding.severity == "error"
    ev = finding.evidence
    assert ev["first_step"] == 120 and ev["nonfinite_ranges"] == [[120, 199]]
    assert ev["terms_at_first"] == ["gap"] and ev["terms"] == {"gap": 80}
    assert "gap" in finding.title
    assert finding.to_dict()["evidence"]["nonfinite_records"] == 80


def test_flag_in_nonfinite_kind_counts(make_run):
    spec = healthy().update("nonfinite", lambda s, r: {**r, "loss": 1} if s == 50 else r)
    [finding] = check(make_run(spec), ID)
    assert finding.evidence["first_step"] == 50


def test_huge_finite_loss_warns(make_run):
    spec = healthy().update("loss", lambda s, r: {**r, "total": 1.7e25} if s == 3 else r)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning" and finding.evidence["at_step"] == 3
    assert "trace-normalized" not in finding.fix and "scale" in finding.fix
    [finding] = check(make_run(as_reference(spec)), ID)
    assert "trace-normalized" in finding.fix


def test_unchecked_without_loss(make_run):
    with pytest.raises(Unchecked):
        check(make_run(healthy().drop("loss", "nonfinite")), ID)
