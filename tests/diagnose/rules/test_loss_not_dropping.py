import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "loss-not-dropping"


def test_falling_loss_is_fine(make_run):
    assert check(make_run(), ID) == []


def test_flat_noisy_loss_is_an_error(make_run):
    spec = healthy().update("loss", lambda s, r: {**r, "total": 1.0 + 0.01 * ((s * 7) % 5)})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error"
    assert finding.evidence["relative_drop"] < 0.05
    assert finding.evidence["steps"] == [0, 199]
    assert "step-cadence" in finding.fix


def test_rising_loss_says_rose(make_run):
    spec = healthy().update("loss", lambda s, r: {**r, "total": 1.0 + s / 100})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "rose" in finding.title


def test_loss_exactly_zero_points_at_weights(make_run):
    spec = healthy().update("loss", lambda s, r: {**r, "total": 0.0})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "exactly 0" in finding.title
    assert "defaulted to 0" in finding.fix


def test_divergence_after_a_good_start_warns(make_run):
    spec = healthy().update(
        "loss", lambda s, r: {**r, "total": 1.0 - s / 100 if s < 100 else 0.02 + (s - 100) / 120})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning" and finding.evidence["rebound_fraction"] > 0.5


def test_fast_early_drop_still_counts(make_run):
    # the loss halves within the first window, then plateaus
    spec = healthy().update("loss", lambda s, r: {**r, "total": 1.0 if s < 5 else 0.5})
    assert check(make_run(spec), ID) == []


def test_frozen_validation_metric_warns(make_run):
    spec = healthy().update("eval", lambda s, r: {**r, "val_loss": 0.731})
    findings = check(make_run(spec), ID)
    assert severities(findings) == ["warning"]
    assert findings[0].evidence["metric"] == "val_loss"


def test_too_short_is_unchecked(make_run):
    spec = healthy().update("loss", lambda s, r: r if s < 5 else None)
    with pytest.raises(Unchecked, match="5 finite loss records"):
        check(make_run(spec), ID)
