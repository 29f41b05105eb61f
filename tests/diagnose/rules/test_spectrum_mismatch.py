import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy

ID = "spectrum-mismatch"


def test_matching_spectrum(make_run):
    assert check(make_run(), ID) == []


def test_unnormalized_scale_is_an_error(make_run):
    spec = healthy().update("spectrum", lambda s, r: {**r, "scale_ratio": 3e-4})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["last_eval"]["step"] == 150
    assert "trace-normalize" in finding.fix.lower()


def test_flat_spectrum_without_gap_warns(make_run):
    spec = healthy().update("spectrum", lambda s, r: {**r, "eff_rank_pred": 15.0,
                                                      "gap_pred": 0.01})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning"
    assert len(finding.evidence["problems"]) == 2 and "flat" in finding.title


def test_collapsed_spectrum(make_run):
    spec = healthy().update("spectrum", lambda s, r: {**r, "eff_rank_pred": 1.0})
    assert "collapsed" in check(make_run(spec), ID)[0].title


def test_falls_back_on_spectra_jsonl(make_run):
    spec = healthy().drop("spectrum")
    assert check(make_run(spec), ID) == []
    spec.spectra = [(s, n, [v * 1e-4 for v in vals]) if n == "R_pred" else (s, n, vals)
                    for s, n, vals in spec.spectra]
    assert check(make_run(spec), ID)[0].severity == "error"


def test_unchecked_without_spectra(make_run):
    spec = healthy().drop("spectrum")
    spec.spectra = []
    with pytest.raises(Unchecked, match="R_pred"):
        check(make_run(spec), ID)
