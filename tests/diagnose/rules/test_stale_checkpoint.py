import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "stale-checkpoint"


def _only_first_best(spec):
    bests = [e for e in spec.events if e[1] == "checkpoint" and e[2]["kind"] == "best"]
    spec.events = [e for e in spec.events if e not in bests[1:]]
    return spec


def test_best_follows_validation(make_run):
    assert check(make_run(), ID) == []


def test_best_never_rewritten_is_an_error(make_run):
    [finding] = check(make_run(_only_first_best(healthy())), ID)
    assert finding.severity == "error"
    ev = finding.evidence
    assert ev["last_best_save"]["step"] == 50 and ev["best_eval"]["step"] == 150
    assert ev["missed_steps"] == [100, 150] and ev["metric"] == "val_loss"
    assert "best_val" in finding.fix


def test_missed_intermediate_save_warns(make_run):
    spec = healthy()
    spec.events = [e for e in spec.events
                   if not (e[1] == "checkpoint" and e[2]["kind"] == "best" and e[0] == 100)]
    assert severities(check(make_run(spec), ID)) == ["warning"]


def test_higher_is_better_metric(make_run):
    spec = healthy().drop_events("checkpoint")
    spec.update("eval", lambda s, r: {**r, "acc": s / 200})
    spec.event(50, "checkpoint", kind="best", metric="acc", value=0.25, mode="max")
    [finding] = check(make_run(spec), ID)
    assert finding.evidence["mode"] == "max" and finding.severity == "error"


def test_saved_value_differs_from_eval(make_run):
    spec = healthy()
    spec.events = [(s, n, {**p, "value": p["value"] * 0.5})
                   if n == "checkpoint" and p["kind"] == "best" else (s, n, p)
                   for s, n, p in spec.events]
    findings = check(make_run(spec), ID)
    assert any("EMA" in f.fix and f.evidence.get("mismatches") for f in findings)


def test_unchecked(make_run):
    with pytest.raises(Unchecked, match="checkpoint"):
        check(make_run(healthy().drop_events("checkpoint")), ID)
    spec = healthy().drop("eval")
    with pytest.raises(Unchecked, match="val_loss"):
        check(make_run(spec), ID)


@pytest.mark.parametrize("metric,mode", [("val_loss", "min"), ("rmse_phi_deg", "min"),
                                         ("val_acc", "max"), ("k_accuracy", "max"),
                                         ("heatmap_loss", "min")])
def test_metric_direction_from_name(metric, mode):
    from riswb.diagnose.rules.stale_checkpoint import _mode

    assert _mode([{"metric": metric, "value": 1.0}], metric) == mode


def test_improvements_below_the_loops_own_min_delta_are_not_missed_saves(make_run):
    """Early stopping's min_delta 0.1: the loop saves when a value beats its last save by
    0.1 or more; the small gains between are below that bar, not forgotten saves, and the
    final best.pt may trail the best value by less than it."""
    spec = healthy().drop_events("checkpoint").drop("eval")
    values = (1.0, 0.95, 0.88, 0.7, 0.65, 0.55, 0.5, 0.4, 0.38)  # saves: 1.0 .88 .7 .55 .4
    for i, value in enumerate(values):
        spec.add(20 * (i + 1), "eval", val_loss=value)
    for i, value in enumerate(values):
        if i in (0, 2, 3, 5, 7):
            spec.event(20 * (i + 1), "checkpoint", kind="best", metric="val_loss", value=value)
    assert check(make_run(spec), ID) == []


def test_an_improvement_as_large_as_a_saved_one_is_still_missed(make_run):
    spec = healthy().drop_events("checkpoint").drop("eval")
    for step, value in ((50, 1.0), (100, 0.9), (150, 0.8)):
        spec.add(step, "eval", val_loss=value)
    spec.event(50, "checkpoint", kind="best", metric="val_loss", value=1.0)
    spec.event(150, "checkpoint", kind="best", metric="val_loss", value=0.8)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning" and finding.evidence["missed_steps"] == [100]


def test_a_save_branch_that_stopped_is_not_read_as_a_min_delta(make_run):
    """Every improvement saved until the saves stopped: the margins shrank (0.5, 0.2, 0.1)
    but the loop never left a small one unsaved before saving again, so no bar excuses the
    unsaved later ones."""
    spec = healthy().drop_events("checkpoint").drop("eval")
    values = (1.0, 0.5, 0.3, 0.2, 0.19, 0.185, 0.18, 0.175, 0.171)
    for i, value in enumerate(values):
        spec.add(20 * (i + 1), "eval", val_loss=value)
        if i < 4:
            spec.event(20 * (i + 1), "checkpoint", kind="best", metric="val_loss", value=value)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["below_own_min_delta"] == 0
