"""`riswb overfit` and `riswb train` through the CLI (CliRunner): exit codes and output."""

import json

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
    (["overfit", "--samples", "0"], "--samples must be >= 1"),
    (["overfit", "--samples", "8", "--format", "yaml"], "unknown --format 'yaml'"),
    (["overfit", "--samples", "8", "--epochs", "-1"], "epochs must be >= 1"),
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
