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


@pytest.mark.parametrize(
    "args, needle",
    [
        (["gate"], "Missing argument"),
        (["report"], "Missing argument"),
        (["gate", "x", "--bogus"], "No such option: --bogus"),
        (["runs", "--format"], "requires an argument"),
        (["runs", "--limit", "nan"], "--limit"),
        (["runs", "--limit", "1.5"], "--limit"),
        (["runs", "--limit", "-3"], "--limit"),
        (["gate", "x", "--min-moving", "inf"], "min_moving_fraction"),
        (["gate", "x", "--min-loss-drop", "nan"], "min_loss_drop"),
        (["gate", "x", "--min-loss-drop", "zero"], "--min-loss-drop"),
        (["nosuch"], "No such command"),
        (["runs", "--formt", "json"], "No such option"),
    ],
)
def test_usage_errors_are_one_line(args, needle, invoke, one_line_error, tmp_path, monkeypatch):
    """Click's own usage errors get the CLI's one line too: no usage block, no box."""
    monkeypatch.setenv("RISWB_RUNS_DIR", str(tmp_path))
    assert needle in one_line_error(invoke(*args))


def test_usage_errors_are_one_line_from_the_real_entry_point(tmp_path):
    """`python -m riswb` in a subprocess: stderr is exactly one line, the exit code 2."""
    import subprocess
    import sys

    for args in (["gate"], ["runs", "--limit", "x"], ["report", "r", "--nope"]):
        done = subprocess.run([sys.executable, "-m", "riswb", *args], capture_output=True,
                              text=True, cwd=tmp_path)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.startswith("riswb: error: ") and done.stderr.count("\n") == 1


def test_bare_riswb_prints_the_help(invoke):
    result = invoke()
    assert result.exit_code == 0 and "Usage: riswb" in result.output and "gate" in result.output


def test_run_arguments_complete_to_latest_and_run_ids(tmp_path, monkeypatch):
    import typer

    from riswb.cli import app
    from riswb.commands.options import complete_run
    from riswb.runlog import RunWriter

    old, new = RunWriter(tmp_path, "a").path.name, RunWriter(tmp_path, "b").path.name
    ctx = typer.Context(typer.main.get_command(app))
    ctx.params["runs_dir"] = tmp_path
    assert complete_run(ctx, "") == ["latest", new, old]
    assert complete_run(ctx, "la") == ["latest"]
    assert complete_run(ctx, old[:-1]) == [new, old] and complete_run(ctx, old) == [old]
    monkeypatch.setenv("RISWB_RUNS_DIR", str(tmp_path / "missing"))
    assert complete_run(typer.Context(ctx.command), "") == ["latest"]


def test_shell_completion_is_installed(invoke):
    assert "--install-completion" in invoke("--help").output
