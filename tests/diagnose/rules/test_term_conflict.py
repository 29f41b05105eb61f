import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy

ID = "term-conflict"


def test_no_conflict(make_run):
    assert check(make_run(), ID) == []


def test_opposed_terms(make_run):
    spec = healthy().update("term_cosine", lambda s, r: {**r, "nmse|gap": -0.97})
    spec.update("term_grad", lambda s, r: {**r, "gap": r["nmse"] * 1.2})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning"
    worst = finding.evidence["conflicts"][0]
    assert worst["pair"] == ["nmse", "gap"] and worst["fraction_below"] == 1.0
    assert worst["cancel"] is True and "cancel" in finding.title


def test_a_conflict_gone_in_the_second_half_is_info(make_run):
    # the first 60% of the run conflicts (most samples), the last 40% does not
    steps = healthy().steps
    spec = healthy().update("term_cosine", lambda s, r: {
        **r, "nmse|gap": -0.97 if s < 0.6 * steps else 0.4})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info" and "early in the run" in finding.title
    assert finding.evidence["conflicts"][0]["resolved"]["later_median_cosine"] == 0.4


def test_unchecked_without_cosines(make_run):
    with pytest.raises(Unchecked):
        check(make_run(healthy().drop("term_cosine", "term_cosine_out")), ID)


def test_moderate_opposition_is_competition_not_conflict(make_run):
    # a GAN discriminator's real and fake terms sit near -0.6
    spec = healthy().update("term_cosine", lambda s, r: {**r, "nmse|gap": -0.63})
    assert check(make_run(spec), ID) == []


def test_conflict_at_the_outputs_with_escaped_names(make_run):
    # term names holding '|' and '\' (pair keys escaped: docs/internals.md §3)
    spec = healthy().drop("term_cosine", "term_grad")
    spec.drop("term_cosine_out")
    for step in range(0, 60, 10):
        spec.add(step, "term_cosine_out", **{"a\\|b|c\\\\d": -0.99})
    [finding] = check(make_run(spec), ID)
    worst = finding.evidence["conflicts"][0]
    assert worst["pair"] == ["a|b", "c\\d"] and worst["view"] == "outputs"


def _alternating(spec):
    """Loss calls alternate between two objectives (a GAN's D on odd steps, G on even)."""
    def one_objective(step, record):
        keep = ("nmse", "gap") if step % 2 else tuple(t for t in record if t not in
                                                        ("nmse", "gap", "total"))
        return {k: v for k, v in record.items() if k in keep or k == "total"}
    return spec.update("loss", one_objective)


def test_conflict_inside_an_adversarial_run_is_info(make_run):
    # a critic's real and fake terms anti-align by design (WGAN: -0.97)
    spec = _alternating(healthy().update("term_cosine", lambda s, r: {**r, "nmse|gap": -0.97}))
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info" and len(finding.evidence["objectives"]) == 2
    assert "alternates between 2 objectives" in finding.title


def test_a_much_weaker_opposing_term_is_info(make_run):
    # an entropy bonus against the policy loss: opposed, but 50x weaker
    spec = healthy().update("term_cosine", lambda s, r: {**r, "nmse|gap": -0.99})
    spec.update("term_grad", lambda s, r: {**r, "gap": r["nmse"] / 50})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info" and "50× weaker" in finding.title
    assert "update follows 'nmse'" in finding.title
