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


def test_mild_constant_trim_is_info(make_run):
    spec = healthy().update("clip", lambda s, r: {**r, "norm": 1.15, "ratio": 0.87, "clipped": 1})
    assert [f.severity for f in check(make_run(spec), ID)] == ["info"]


def test_torch_clip_observed_at_step_is_weighted_by_steps(make_run):
    # no wb.clip_grad_norm_ call: grad_step saw torch's own clip_grad_norm_(params, 1e-4)
    spec = healthy().drop("clip")
    for step in range(9, 200, 10):
        spec.add(step, "clip", norm=1.2, max_norm=1e-4, ratio=1e-4 / 1.2, clipped=1.0,
                 calls=10, observed=1, opt_step=step + 1)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["clip_steps"] == 200
    assert finding.evidence["observed_at_step"] and "observed at optimizer.step" in finding.title


def _optimizers(*described):
    return [{"class": f"torch.optim.{name.lower()}.{name}", "state": [], "scale_invariant": inv}
            for name, inv in described]


def test_saturated_clipping_under_adam_is_info(make_run):
    # Adam's update m/(√v+ε) is unchanged by a steady gradient rescale: no lr is lost
    spec = healthy().update("clip", lambda s, r: {**r, "norm": 20.0, "ratio": 0.05, "clipped": 1})
    spec.manifest["optimizers"] = _optimizers(("AdamW", True))
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info" and finding.evidence["optimizers"] == ["AdamW"]
    assert "AdamW" in finding.title and "max_norm" in finding.fix


def test_saturated_clipping_under_sgd_or_a_mix_still_warns(make_run):
    for described in (_optimizers(("SGD", False)), _optimizers(("AdamW", True), ("SGD", False))):
        spec = healthy().update("clip", lambda s, r: {**r, "norm": 20.0, "ratio": 0.05,
                                                      "clipped": 1})
        spec.manifest["optimizers"] = described
        assert [f.severity for f in check(make_run(spec), ID)] == ["warning"]


def test_severe_clipping_under_adam_is_still_an_error(make_run):
    # a ratio of 2e-4 pushes the clipped gradient toward Adam's ε: the update does shrink
    spec = healthy().update("clip", lambda s, r: {**r, "norm": 5e3, "ratio": 2e-4, "clipped": 1})
    spec.manifest["optimizers"] = _optimizers(("Adam", True))
    assert check(make_run(spec), ID)[0].severity == "error"
