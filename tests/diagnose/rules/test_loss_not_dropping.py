import math

import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "loss-not-dropping"


def test_falling_loss_is_fine(make_run):
    assert check(make_run(), ID) == []


def _without_evaluations(spec):
    """The healthy spec's validation loss follows its healthy training loss: a test that
    rewrites the training loss drops it (an evaluation that improved makes a loss that does
    not fall a surrogate, info)."""
    return spec.drop("eval")


def test_flat_noisy_loss_is_an_error(make_run):
    spec = _without_evaluations(healthy()).update(
        "loss", lambda s, r: {**r, "total": 1.0 + 0.01 * ((s * 7) % 5)})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error"
    assert finding.evidence["relative_drop"] < 0.05
    assert finding.evidence["steps"] == [0, 199]
    assert "step-cadence" in finding.fix


def test_rising_loss_says_rose(make_run):
    spec = _without_evaluations(healthy()).update(
        "loss", lambda s, r: {**r, "total": 1.0 + s / 100})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "rose" in finding.title


def test_loss_exactly_zero_points_at_weights(make_run):
    spec = healthy().update("loss", lambda s, r: {**r, "total": 0.0})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "exactly 0" in finding.title
    assert "defaulted to 0" in finding.fix


def test_divergence_after_a_good_start_warns(make_run):
    spec = _without_evaluations(healthy()).update(
        "loss", lambda s, r: {**r, "total": 1.0 - s / 100 if s < 100 else 0.02 + (s - 100) / 120})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning" and finding.evidence["rebound_fraction"] > 0.5


def test_fast_early_drop_still_counts(make_run):
    # the loss halves within the first window, then plateaus
    spec = healthy().update("loss", lambda s, r: {**r, "total": 1.0 if s < 5 else 0.5})
    assert check(make_run(spec), ID) == []


def _spike_then_flat(first_ratio: float):
    """The first record 6× the rest (a blow-up, or a fast fall), then flat at 1.4, with the
    first optimizer step's ‖Δθ‖/‖θ‖ = `first_ratio`."""
    spec = _without_evaluations(healthy()).update("loss", lambda s, r: {
        **r, "total": 8.0 if s == 0 else 1.4 + 0.01 * ((s * 7) % 5)})
    return spec.update("param_update", lambda s, r: {
        **r, "ratio": first_ratio if r["opt_step"] == 1 else r["ratio"]})


def test_a_first_update_bigger_than_the_weights_is_no_start(make_run):
    # Adam at lr 0.3: the first records hold the blow-up, then the loss sits at chance
    [finding] = check(make_run(_spike_then_flat(3.2)), ID)
    assert finding.severity == "error" and "blew up" in finding.title
    assert finding.evidence["first_update_blew_up"]["update_ratio"] == 3.2
    assert "lr" in finding.fix


def test_a_fast_fall_from_ordinary_first_updates_still_counts(make_run):
    assert check(make_run(_spike_then_flat(0.01)), ID) == []


def test_frozen_validation_metrics_warn(make_run):
    # the evaluated weights never change: every metric repeats itself bit for bit
    spec = healthy().update("eval", lambda s, r: {**r, "val_loss": 0.731, "nmse": 0.5})
    findings = check(make_run(spec), ID)
    assert severities(findings) == ["warning"]
    assert findings[0].evidence["metric"] == "val_loss"


def test_a_saturated_metric_of_the_trained_model_itself_is_info(make_run):
    # the watched model ran every evaluation's forwards and its weights moved in between:
    # an accuracy on a small held-out set stopped moving, nothing is stale
    spec = healthy().update("eval", lambda s, r: {"val_acc": 0.9804})
    spec.update("mode", lambda s, r: {**r, "evals": 1, "evals_own": 1})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info" and "saturated" in finding.title
    # a separate copy was evaluated (evals_own short): stale weights are possible, it warns
    spec.update("mode", lambda s, r: {**r, "evals_own": 0})
    assert severities(check(make_run(spec), ID)) == ["warning"]


def test_a_noisy_loss_on_a_high_floor_falling_steadily_is_dropping(make_run):
    # a diffusion model's noise-prediction loss: a 6% fall not clear of a 3-record window's
    # noise, but falling through the whole series (Mann-Kendall z ≈ -3.4)
    values = [0.941, 0.866, 0.865, 0.826, 0.883, 0.863, 0.859, 0.842, 0.804, 0.858, 0.842,
              0.829, 0.77, 0.813, 0.811]
    spec = _without_evaluations(healthy(steps=len(values))).drop("loss")
    for step, value in enumerate(values):
        spec.add(step, "loss", nmse=value, ortho=0.0, gap=0.0, total=value)
    assert check(make_run(spec), ID) == []


def test_one_metric_constant_while_another_moves_is_not_frozen(make_run):
    # an accuracy at its ceiling while the validation loss still falls: the weights move
    spec = healthy().update("eval", lambda s, r: {**r, "val_acc": 1.0})
    assert check(make_run(spec), ID) == []


def test_a_lone_rate_at_its_bound_says_nothing(make_run):
    spec = healthy().update("eval", lambda s, r: {"val_acc": 1.0})
    assert check(make_run(spec), ID) == []
    frozen = healthy().update("eval", lambda s, r: {"val_acc": 0.62})
    assert severities(check(make_run(frozen), ID)) == ["warning"]


def test_too_short_is_unchecked(make_run):
    spec = healthy().update("loss", lambda s, r: r if s < 5 else None)
    with pytest.raises(Unchecked, match="5 finite loss records"):
        check(make_run(spec), ID)


def _noisy(values, seed: int = 0, scale: float = 0.1):
    """`values` with multiplicative minibatch noise, one loss record per step."""
    import numpy as np

    rng = np.random.default_rng(seed)
    spec = _without_evaluations(healthy(steps=len(values))).drop("loss")
    for step, value in enumerate(values):
        total = float(value * (1 + scale * rng.standard_normal()))
        spec.add(step, "loss", nmse=total, ortho=0.0, gap=0.0, total=total)
    return spec


@pytest.mark.parametrize("seed", range(5))
def test_noisy_fast_then_flat_loss_is_dropping(make_run, seed):
    # the fall happens within the first two records, then a noisy plateau for 300
    values = [2.3, 1.2] + [1.0] * 300
    assert check(make_run(_noisy(values, seed)), ID) == []


@pytest.mark.parametrize("seed", range(5))
def test_flat_noisy_loss_is_still_an_error(make_run, seed):
    assert severities(check(make_run(_noisy([1.0] * 300, seed)), ID)) == ["error"]


@pytest.mark.parametrize("seed", range(5))
def test_annealed_schedule_noise_is_not_a_rebound(make_run, seed):
    # one-cycle: slow start at a low lr, fast fall at the peak, a flat noisy tail as the
    # lr anneals; the tail's jitter is not divergence
    values = [1.1 - 0.02 * s for s in range(20)] + [0.7 - 0.01 * s for s in range(40)] + \
        [0.3] * 140
    assert check(make_run(_noisy(values, seed, scale=0.3)), ID) == []


def test_real_rebound_still_warns(make_run):
    values = [2.0 - 0.015 * s for s in range(100)] + [0.5 + 0.012 * s for s in range(100)]
    assert severities(check(make_run(_noisy(values, scale=0.02)), ID)) == ["warning"]


def test_short_run_at_chance_level_is_too_early_to_call(make_run):
    # the zoo's CNN logged every batch: 40 steps of OneCycle on 3 classes, CE near ln 3
    values = [1.1] * 40
    [finding] = check(make_run(_noisy(values, scale=0.02)), ID)
    assert finding.severity == "info" and finding.evidence["batches"] == 40
    assert "too early" in finding.title
    assert severities(check(make_run(_noisy(values, scale=0.02)), ID, min_loss_steps=40)) == \
        ["error"]


def test_a_resumed_run_at_its_floor_is_info_but_a_climb_after_resume_is_not(make_run):
    """A run resumed with first_step (README): it starts trained, a loss at its floor need
    not fall; one that climbs clear of its noise (optimizer state lost) is still an error."""
    flat = _without_evaluations(healthy()).update(
        "loss", lambda s, r: {**r, "total": 0.13 + 0.004 * ((s * 7) % 5)})
    flat.manifest["first_step"] = 1200
    [finding] = check(make_run(flat), ID)
    assert finding.severity == "info" and "resumed at step 1200" in finding.title
    assert finding.evidence["resumed_at_step"] == 1200
    climbing = _without_evaluations(healthy()).update(
        "loss", lambda s, r: {**r, "total": 0.13 + s / 400})
    climbing.manifest["first_step"] = 1200
    [finding] = check(make_run(climbing), ID)
    assert finding.severity == "error"


def test_a_surrogate_loss_is_info_when_an_evaluation_metric_clearly_improved(make_run):
    """REINFORCE with normalized advantages and an entropy bonus: the loss rises as the
    policy sharpens while the evaluated return climbs. A metric whose name says nothing
    about its direction is not read."""
    rising = healthy().update("loss", lambda s, r: {**r, "total": -0.08 + s / 2500})
    rising.drop("eval")
    for step in range(25, 200, 25):
        rising.add(step, "eval", avg_return=-0.6 + step / 150, widgets=step)
    [finding] = check(make_run(rising), ID)
    assert finding.severity == "info" and "'avg_return' improved" in finding.title
    assert finding.evidence["evaluation_improved"]["metric"] == "avg_return"
    unknown = healthy().update("loss", lambda s, r: {**r, "total": -0.08 + s / 2500})
    unknown.drop("eval")
    for step in range(25, 200, 25):
        unknown.add(step, "eval", widgets=step)
    assert severities(check(make_run(unknown), ID)) == ["error"]


def _sparsity_weight(sign: float, growth: float):
    """Reconstruction plus an L1 code penalty at weight sign·0.01: after step 60 the code's
    L1 grows by `growth` over the run and the reconstruction climbs back from its best."""
    spec = _without_evaluations(healthy()).drop("loss", "loss_weight")
    spec.add(0, "loss_weight", recon=1.0, l1=sign * 0.01)
    for step in range(200):
        late = max(0, step - 60) / 140
        recon = 0.5 * math.exp(-step / 15) + 0.03 + 0.07 * late
        l1 = 0.2 * (1 + (growth - 1) * late)
        spec.add(step, "loss", recon=recon, l1=l1, total=recon + sign * 0.01 * l1)
    return spec


def test_a_total_bought_by_a_runaway_negatively_weighted_term_warns(make_run):
    """A sparsity penalty written as −λ: the code's L1 is maximized, the total falls
    without bound while the reconstruction gets worse."""
    [finding] = check(make_run(_sparsity_weight(-1.0, 1500)), ID)
    assert finding.severity == "warning" and "only because 'l1'" in finding.title
    assert finding.evidence["grown"]["l1"]["weight"] == -0.01


def test_a_bounded_negatively_weighted_term_or_a_positive_weight_is_not_it(make_run):
    assert check(make_run(_sparsity_weight(-1.0, 3)), ID) == []  # a bounded bonus
    titles = [f.title for f in check(make_run(_sparsity_weight(+1.0, 1500)), ID)]
    assert not any("only because" in t for t in titles)  # a penalty that grows: not this


def test_a_rebound_while_the_evaluation_is_at_its_best_is_a_surrogate(make_run):
    """The healthy spec's validation loss keeps improving to the end: a training loss that
    climbs back meanwhile is a surrogate's (REINFORCE), not a divergence."""
    spec = _without_evaluations(healthy()).update(
        "loss", lambda s, r: {**r, "total": 1.0 - s / 100 if s < 100 else 0.02 + (s - 100) / 120})
    for step in range(20, 200, 20):
        spec.add(step, "eval", val_loss=1.0 / step)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info" and finding.evidence["evaluation_improved"]["at_best"]


def test_a_noisy_evaluation_metric_is_no_evidence_of_learning(make_run):
    """An accuracy at chance, scattered by its small validation set, on a loop that learns
    nothing: its first value may sit below its last by chance."""
    import numpy as np

    rng = np.random.default_rng(0)
    for seed in range(20):
        spec = _without_evaluations(healthy()).update(
            "loss", lambda s, r: {**r, "total": 1.0 + 0.01 * ((s * 7) % 5)})
        for step in range(20, 200, 20):
            spec.add(step, "eval", val_acc=float(0.25 + 0.02 * rng.standard_normal()))
        assert severities(check(make_run(spec), ID)) == ["error"], seed
def test_a_negatively_weighted_term_that_levels_off_is_not_running_away(make_run):
    """A normalizing flow's −log|det J|: the log-determinant grows from 0 to its optimum and
    stays there while the prior's NLL rises to meet it; the total converges."""
    spec = _without_evaluations(healthy()).drop("loss", "loss_weight")
    spec.add(0, "loss_weight", prior_nll=1.0, logdet=-1.0)
    for step in range(200):
        settled = min(step, 80) / 80
        prior_nll, logdet = 3.7 + 2.0 * settled, 0.1 + 18.3 * settled
        spec.add(step, "loss", prior_nll=prior_nll, logdet=logdet, total=prior_nll - logdet)
    assert check(make_run(spec), ID) == []
