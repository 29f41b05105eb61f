"""`riswb overfit` and `riswb train` through the CLI (CliRunner): exit codes and output."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from riswb.cli import app

runner = CliRunner()


TINY = """
name = "tiny"
train_scenes = 64
val_scenes = 32
batch_size = 32
epochs = 2
warmup_steps = 1
ema_decay = 0.5
lr = 2e-3
device = "cpu"
log_every = 1
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RISWB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cli-cache"))
    monkeypatch.delenv("RISWB_DEBUG", raising=False)


def _runs(path):
    return sorted(p for p in path.iterdir() if (p / "manifest.json").is_file())


def test_overfit_prints_the_verdict_and_exits_0(tmp_path):
    res = runner.invoke(app, ["overfit", "--samples", "64", "--epochs", "3",
                              "--runs-dir", str(tmp_path), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "verdict" in res.stdout and "PASSED" in res.stdout
    assert "params-move" in res.stdout and "loss-drops" in res.stdout
    (run,) = _runs(tmp_path)
    assert (run / "checkpoints" / "best.pt").is_file()


def _no_bare_constant(name: str):
    raise AssertionError(f"bare {name} in --format json output (not strict JSON)")


def test_overfit_json_parses(tmp_path):
    res = runner.invoke(app, ["overfit", "--samples", "64", "--epochs", "3",
                              "--runs-dir", str(tmp_path), "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout, parse_constant=_no_bare_constant)
    assert out["gate"]["passed"] is True
    assert len(out["loss_terms"]) == 12 and "nmse" in out["final"]
    assert out["run"] == str(_runs(tmp_path)[0])


@pytest.mark.parametrize("args,reason", [
    (["overfit", "--samples", "0"], "--samples must be an integer >= 1 (got 0)"),
    (["overfit", "--samples", "2.5"], "--samples must be an integer >= 1 (got '2.5')"),
    (["overfit", "--samples", "many"], "--samples must be an integer >= 1 (got 'many')"),
    (["overfit", "--samples", "8", "--format", "yaml"], "unknown --format 'yaml'"),
    (["overfit", "--samples", "8", "--epochs", "-1"], "--epochs must be an integer >= 1"),
    (["overfit", "--samples", "8", "--epochs", "0"], "--epochs must be an integer >= 1"),
    (["overfit", "--samples", "8", "--epochs", "1e3"], "--epochs must be an integer >= 1"),
    (["overfit", "--samples", "8", "--seed", "-1"], "--seed must be an integer in [0, "),
    (["overfit", "--samples", "8", "--seed", "nan"], "--seed must be an integer in [0, "),
    (["train", "--config", "does-not-exist.toml"], "no config file"),
])
def test_bad_usage_is_one_line_and_exit_2(tmp_path, args, reason):
    res = runner.invoke(app, [*args, "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0] and "Traceback" not in res.output
    assert not _runs(tmp_path)


def test_train_with_a_bad_config_key_is_exit_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(TINY + "epoch = 3\n")
    res = runner.invoke(app, ["train", "--config", str(cfg), "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2 and "unknown config key(s): epoch" in res.output


def test_train_then_resume(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["train", "--config", str(cfg), "--runs-dir", str(runs),
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    first = json.loads(res.stdout)
    assert first["final"]["epoch"] == 1
    (run,) = _runs(runs)
    for name in ("best.pt", "last.pt", "state.pt"):
        assert (run / "checkpoints" / name).is_file()

    res = runner.invoke(app, ["train", "--config", str(cfg), "--runs-dir", str(runs),
                              "--resume", str(run)])
    assert res.exit_code == 2 and "already finished its 2 epoch(s)" in res.output

    # resume the finished run with more epochs: it continues from epoch 2 (3 more)
    cfg.write_text(TINY.replace("epochs = 2", "epochs = 5"))
    res = runner.invoke(app, ["train", "--config", str(cfg), "--runs-dir", str(runs),
                              "--resume", "latest"])
    assert res.exit_code == 0, res.output
    assert "PASSED" in res.stdout
    resumed = _runs(runs)[-1]
    assert resumed != run
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert manifest["config"]["resumed_from"] == str(run)
    assert (resumed / "checkpoints" / "best.pt").is_file()

    res = runner.invoke(app, ["train", "--config", str(cfg), "--runs-dir", str(runs),
                              "--resume", "no-such-run"])
    assert res.exit_code == 2 and "no run directory" in res.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished TINY run, trained once for the tests that copy it."""
    root = tmp_path_factory.mktemp("trained")
    cfg = root / "tiny.toml"
    cfg.write_text(TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RISWB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cli-cache"))
        res = runner.invoke(app, ["train", "--config", str(cfg), "--runs-dir", str(root / "runs"),
                                  "--format", "json"])
    assert res.exit_code == 0, res.output
    return _runs(root / "runs")[0]


def _tiny_run(tmp_path, trained):
    """(a config file, a runs dir, a private copy of the trained run in it)."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    run = shutil.copytree(trained, tmp_path / "runs" / trained.name)
    return cfg, tmp_path / "runs", run


def _one_error_line(res):
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("riswb: error:"), res.output
    return lines[0]


def test_resume_with_another_batch_size_or_seed_is_refused_unless_forced(tmp_path, trained):
    cfg, runs, run = _tiny_run(tmp_path, trained)
    for change, needle in (("batch_size = 16", "batch_size 32 → 16"), ("seed = 1", "seed 0 → 1")):
        cfg.write_text(TINY.replace("epochs = 2", "epochs = 3") + change + "\n"
                       if change.startswith("seed") else
                       TINY.replace("epochs = 2", "epochs = 3").replace("batch_size = 32", change))
        res = runner.invoke(app, ["train", "--config", str(cfg), "--runs-dir", str(runs),
                                  "--resume", str(run), "--format", "json"])
        line = _one_error_line(res)
        assert needle in line and "--force" in line
        assert _runs(runs) == [run]  # no new run directory
    res = runner.invoke(app, ["train", "--config", str(cfg), "--runs-dir", str(runs),
                              "--resume", str(run), "--force", "--format", "json"])
    assert res.exit_code in (0, 1), res.output  # it trained; the gate judges the new seed
    resumed = _runs(runs)[-1]
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert manifest["config"]["resume_changes"] == ["seed 0 → 1"]


def test_a_bit_flipped_checkpoint_is_refused_before_a_run_dir_exists(tmp_path, trained):
    cfg, runs, run = _tiny_run(tmp_path, trained)
    cfg.write_text(TINY.replace("epochs = 2", "epochs = 3"))
    state = run / "checkpoints" / "state.pt"
    data = bytearray(state.read_bytes())
    data[100] ^= 0x04
    state.write_bytes(bytes(data))
    res = runner.invoke(app, ["train", "--config", str(cfg), "--runs-dir", str(runs),
                              "--resume", str(run)])
    assert "state.pt is corrupt" in _one_error_line(res)
    assert _runs(runs) == [run]


def test_force_without_resume_is_usage_error(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    res = runner.invoke(app, ["train", "--config", str(cfg), "--runs-dir", str(tmp_path),
                              "--force"])
    assert "--force only applies to --resume" in _one_error_line(res)


def test_divergence_is_one_line_and_the_run_is_kept(tmp_path):
    cfg = tmp_path / "diverge.toml"
    cfg.write_text(TINY.replace("lr = 2e-3", "lr = 1e12").replace("warmup_steps = 1",
                                                                  "warmup_steps = 0"))
    res = runner.invoke(app, ["train", "--config", str(cfg), "--runs-dir", str(tmp_path),
                              "--format", "json"])
    line = _one_error_line(res)
    assert "training diverged at step 1: model outputs R_pred" in line
    (run,) = _runs(tmp_path)
    assert str(run) in line
    res = runner.invoke(app, ["report", str(run), "--format", "json", "--no-plots"])
    assert res.exit_code == 0, res.output
    findings = json.loads(res.stdout)["findings"]
    assert findings[0]["id"] == "nonfinite-loss" and findings[0]["severity"] == "error"


def test_fail_fast_stops_a_stalled_warmup_before_half_the_run(tmp_path):
    res = runner.invoke(app, ["overfit", "--samples", "128", "--inject", "warmup-from-zero",
                              "--fail-fast", "--runs-dir", str(tmp_path), "--device", "cpu"])
    assert res.exit_code == 1, res.output
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("riswb: fail-fast: lr-stalled (error) at step ")
    step = int(line.split("at step ")[1].split(":")[0])
    (run,) = _runs(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    total = manifest["config"]["epochs"] * 4  # 128 samples in batches of 32
    assert step < total / 2
    assert manifest["status"] == "crashed"


def test_fail_fast_lets_a_clean_run_finish(tmp_path):
    res = runner.invoke(app, ["overfit", "--samples", "64", "--epochs", "3", "--fail-fast",
                              "--runs-dir", str(tmp_path), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "fail-fast" not in res.stderr
