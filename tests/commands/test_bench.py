"""`riswb bench` through the real CLI: tiny measurements, formats, exit codes."""

import json

import pytest


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("bench", "--steps", "0"), "--steps"),
        (("bench", "--model", "resnet"), "model"),
        (("bench", "--format", "xml"), "format"),
        (("bench", "--blocks", "0"), "--blocks"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, needle, one_line_error, invoke):
    assert needle in one_line_error(invoke(*args))


def test_bench_tiny_table_prints_ratios_for_both_models(invoke):
    result = invoke("bench", "--steps", "1", "--rounds", "1", "--warmup", "0")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "mlp ratio" in out and "reference ratio" in out
    assert "default (all)" in out and "term_gradients" in out and "×" in out
    assert "budget" in out


def test_bench_tiny_json(invoke):
    result = invoke("bench", "--steps", "1", "--rounds", "1", "--warmup", "0", "--model", "mlp",
                    "--no-per-probe", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["budget"] == 1.10 and set(data["models"]) == {"mlp"}
    mlp = data["models"]["mlp"]
    assert mlp["total_ratio"] > 0 and mlp["per_probe"] == {}
    assert mlp["config"]["model"] == "mlp"


def test_bench_blocks_line(invoke):
    result = invoke("bench", "--steps", "1", "--rounds", "1", "--warmup", "0", "--model", "tiny",
                    "--no-per-probe", "--blocks", "3")
    assert result.exit_code == 0, result.output
    assert "tiny in alternating blocks of 3 steps (1 pairs" in result.output
