import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "dead-params"


def test_no_dead_params(make_run):
    assert check(make_run(), ID) == []


def test_dead_heads_are_named_with_since_step(make_run):
    spec = healthy().event(10, "dead_params", names=["heads.k.weight", "heads.k.bias"], steps=10)
    spec.update("dead", lambda s, r: {**r, "n_dead": 2, "frac_dead_elems": 0.4} if s >= 10 else r)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error"
    ev = finding.evidence
    assert ev["params"]["names"] == ["heads.k.bias", "heads.k.weight"]
    assert ev["dead_since_step"] == {"heads.k.bias": 10, "heads.k.weight": 10}
    assert ev["frac_dead_elems"] == 0.4 and ev["steps"] == [10, 190]
    assert "key mismatch" in finding.fix or "dict-key mismatch" in finding.fix


def test_tiny_dead_share_is_a_warning(make_run):
    spec = healthy().event(10, "dead_params", names=["heads.bias"], steps=10)
    spec.update("dead", lambda s, r: {**r, "n_dead": 1, "frac_dead_elems": 0.001})
    assert severities(check(make_run(spec), ID)) == ["warning"]


def test_a_weight_dead_beside_its_live_bias_is_an_error_pointing_at_a_gate(make_run):
    """A classifier weight whose gradient a hook masks to zero: a tiny share of the model,
    but its module's output reaches the loss (the bias learns), so nothing of it is lost
    to a dropped head: the gradient is stopped at the tensor itself."""
    spec = healthy().event(10, "dead_params", names=["head.weight"], steps=10,
                           gated=["head.weight"])
    spec.update("dead", lambda s, r: {**r, "n_dead": 1, "frac_dead_elems": 0.001})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["gated"] == ["head.weight"]
    assert finding.fix.startswith("head.weight: the rest of its module gets gradients")
    assert "register_hook" in finding.fix


def test_module_with_zero_grad_norm(make_run):
    spec = healthy().drop("dead").update("grad_norm", lambda s, r: {**r, "module/heads": 0.0})
    [finding] = check(make_run(spec), ID)
    assert finding.evidence["modules_with_zero_grad_norm"][0]["module"] == "heads"


def test_partial_dead_module_warns(make_run):
    spec = healthy().update("dead", lambda s, r: {**r, "frac_dead_elems": 0.05,
                                                   "dead_frac/heads": 0.28})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning" and "heads" in finding.title
    assert "clamp" in finding.fix


def test_revived_params_are_info(make_run):
    spec = healthy().event(10, "dead_params", names=["heads.k.weight"], steps=10)
    spec.event(60, "dead_params", names=[], steps=10)
    assert severities(check(make_run(spec), ID)) == ["info"]


def test_unchecked_without_any_source(make_run):
    spec = healthy().drop("dead").update("grad_norm", lambda s, r: {"total": r["total"]})
    with pytest.raises(Unchecked):
        check(make_run(spec), ID)
