"""The app itself: --version, --help, and strict JSON from every `--format json` command."""

import pytest

from riswb import __version__


def test_version_prints_the_version_and_exits_0(invoke):
    result = invoke("--version")
    assert result.exit_code == 0, result.output
    assert result.output == f"riswb {__version__}\n"


def test_help_lists_the_commands(invoke):
    result = invoke("--help")
    for name in ("report", "gate", "runs", "compare", "litmus", "bench"):
        assert name in result.output


@pytest.fixture
def nan_runs(tmp_path, synthetic_run, monkeypatch):
    """Two runs whose loss turns NaN: non-finite numbers in every diagnosis output."""
    root = tmp_path / "runs"
    a = synthetic_run(root, steps=300, name="a", nan_loss_at=200)
    b = synthetic_run(root, steps=300, name="b", nan_loss_at=250, healthy=False)
    monkeypatch.setenv("RISWB_RUNS_DIR", str(root))
    return a, b


@pytest.mark.parametrize(
    "args",
    [
        ["report", "A", "--no-plots"],
        ["gate", "A"],
        ["runs"],
        ["compare", "A", "B"],
        ["litmus"],
        ["bench", "--steps", "1", "--rounds", "1", "--warmup", "0", "--model", "mlp",
         "--no-per-probe"],
    ],
    ids=lambda args: args[0],
)
def test_every_json_output_is_strict_json(nan_runs, invoke, strict_loads, args):
    a, b = nan_runs
    args = [a if x == "A" else b if x == "B" else x for x in args]
    result = invoke(*args, "--format", "json")
    assert result.exit_code in (0, 1), result.output
    data = strict_loads(result.output)  # no bare NaN/Infinity tokens
    if args[0] in ("report", "runs", "compare"):
        assert "NaN" in result.output  # the NaN loss, spelled as a string
    assert data is not None
