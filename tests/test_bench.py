"""The overhead benchmark runs end to end on a tiny loop and returns consistent data."""


from riswb.bench import format_table, run_bench
from riswb.probes import BUILTIN


def test_bench_tiny_returns_ratios():
    result = run_bench(width=16, depth=3, batch=8, steps=2, rounds=2, warmup=0, log_every=1)
    assert set(result.per_probe) == {m for m, _ in BUILTIN}
    assert result.plain_ms > 0 and result.total_ratio > 0
    assert all(len(v) == 2 for v in result.raw_ms.values())
    table = format_table(result)
    assert "default (all)" in table and "lr_trace" in table
    assert result.to_dict()["config"]["width"] == 16


def test_term_sampling_is_pinned_into_short_rounds():
    """After warm-up the probe has chosen N; rounds shorter than N still time samples,
    counted by the probe's own schedule (front-loaded steps included), their one-off cost
    amortized over the stated run length."""
    from riswb.bench import CALIBRATED
    from riswb.instrument.log_interval import FRONT as LOG_FRONT
    from riswb.probes.term_gradients import FRONT

    result = run_bench(width=16, depth=3, batch=8, steps=4, rounds=2, warmup=12,
                       per_probe=False, fail_fast=False, run_length=1000)
    assert result.config["term_grad_every"] >= 10  # chosen by the probe's own schedule
    assert result.config["steps"] == 8 and result.total_ratio > 0
    start = max(12, CALIBRATED, LOG_FRONT)  # warm-up, then until stride and interval settle
    timed = range(start, start + 8)  # pinned to 4: two samples
    expected = sum(1 for step in timed if step in FRONT or step % 4 == 0)
    assert result.config["term_grad_samples_timed"] == expected == 2
    assert result.config["run_length"] == 1000 and result.one_off_ms["default"] >= 0
    assert result.fail_fast_ratio is None and "one-off front-loaded" in format_table(result)


def test_fail_fast_variant_and_the_host_bound_model():
    result = run_bench(model="tiny", steps=2, rounds=1, warmup=2, per_probe=False)
    assert result.config["model"] == "tiny" and result.config["width"] == 16 * 4
    assert result.fail_fast_ratio > 0 and result.budget == 1.25
    assert "default+fail_fast" in format_table(result)


def test_blocks_time_the_default_probes_against_the_plain_loop():
    result = run_bench(model="tiny", steps=2, rounds=2, warmup=2, per_probe=False,
                       fail_fast=False, blocks=5)
    timed = result.blocks
    assert timed.steps == 5 and timed.rounds == 2
    assert timed.plain_ms > 0 and timed.probed_ms > 0 and timed.ratio > 0
    assert "in alternating blocks of 5 steps" in format_table(result)
    assert result.to_dict()["blocks"]["ratio"] == timed.ratio
