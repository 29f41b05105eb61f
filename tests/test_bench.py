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
