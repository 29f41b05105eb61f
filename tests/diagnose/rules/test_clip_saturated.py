import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy

ID = "clip-saturated"


def test_occasional_clipping(make_run):
    assert check(make_run(), ID) == []


def test_clipping_every_step(make_run):
    spec = healthy().update("clip", lambda s, r: {**r, "norm": 20.0, "ratio": 0.05, "clipped": 1})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning"
    assert finding.evidence["clipped_fraction"] == 1.0 and finding.evidence["median_ratio"] == 0.05
    assert "20×" in finding.title


def test_severe_clipping_is_an_error(make_run):
    spec = healthy().update("clip", lambda s, r: {**r, "norm": 5e3, "ratio": 2e-4, "clipped": 1})
    assert check(make_run(spec), ID)[0].severity == "error"


def test_unchecked_without_clip_records(make_run):
    with pytest.raises(Unchecked, match="clip"):
        check(make_run(healthy().drop("clip")), ID)
