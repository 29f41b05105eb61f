"""`riswb eval --run RUN`: a trained run's verified best.pt adds the rows aux and pred."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from riswb.cli import app
from riswb.commands.physics import load_run_model, predict
from riswb.reference.config import TrainConfig
from riswb.reference.physics.scenes import simulate_scenes
from riswb.reference.trainer import Trainer

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run (probes off: only its checkpoints matter here)."""
    root = tmp_path_factory.mktemp("evalrun")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/test_trainer.py
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RISWB_CACHE_DIR", str(root / "cache"))
        mp.setenv("RISWB_RUNS_DIR", str(root / "runs"))
        cfg = TrainConfig(name="tiny", train_scenes=64, val_scenes=32, batch_size=32, epochs=2,
                          warmup_steps=1, ema_decay=0.5, device="cpu", seed=3)
        path = Trainer(cfg, runs_dir=root / "runs", probes=[]).run().path
        yield path
    torch.set_num_threads(threads)


def _eval(*args):
    return runner.invoke(app, ["eval", *args])


def _rows(out):
    return {r["estimator"]: r for r in out["rows"]}


def test_json_adds_aux_and_pred_rows_with_k_given_to_every_row(run_dir):
    res = _eval("--run", str(run_dir), "--scenes", "6", "--snr", "10", "--k", "true",
                "--estimators", "prior,aux,pred,true", "--format", "json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["run"] == str(run_dir) and out["scenes"] == 6 and out["snr_db"] == 10.0
    assert out["seed"] == 5  # the run's seed + 2: neither its training nor its validation set
    assert out["checkpoint"] == "checkpoints/best.pt"
    assert [r["estimator"] for r in out["rows"]] == ["prior", "aux", "pred", "true"]
    for row in out["rows"]:
        assert set(row["rmse"]) == {"phi_deg", "theta_deg", "r_m"}
        assert row["k_accuracy"] == 1.0  # --k true reaches R_pred's MUSIC too
    assert all(v > 0 for v in out["crb"]["mean"].values())


def test_default_rows_with_a_run_include_the_model(run_dir):
    res = _eval("--run", str(run_dir), "--scenes", "2", "--snr", "20", "--k", "est",
                "--format", "json")
    assert res.exit_code == 0, res.output
    assert [r["estimator"] for r in json.loads(res.stdout)["rows"]] == [
        "prior", "random", "samp", "bartlett", "dml", "sparse", "aux", "pred", "true"]


def test_pred_row_is_the_checkpoint_on_the_same_scenes(run_dir):
    """Oracle: the pred row's K accuracy with K estimated is the k head's, recomputed by
    hand from best.pt on the same scenes."""
    res = _eval("--run", str(run_dir), "--scenes", "6", "--snr", "0", "--seed", "11",
                "--k", "est", "--estimators", "pred", "--format", "json")
    out = json.loads(res.stdout)
    spec, model, _ = load_run_model(run_dir)
    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    batch = simulate_scenes(spec, 6, seed=11, snr_db=0.0)
    _, k_pred, aux = predict(model, batch)
    assert aux.shape == (6, spec.k_max, 3)
    assert _rows(out)["pred"]["k_accuracy"] == pytest.approx(
        float((k_pred == batch.k).float().mean()))


def test_table_and_latest(run_dir):
    res = _eval("--run", "latest", "--scenes", "4", "--snr", "20", "--estimators",
                "samp,pred,true")
    assert res.exit_code == 0, res.output
    for word in ("R_pred", "R_samp", "floor", "√CRB", "GOSPA", run_dir.name):
        assert word in res.stdout


def test_a_corrupt_checkpoint_is_refused(run_dir, tmp_path):
    """best.pt goes through the verified loader: a flipped byte is one line, exit 2."""
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    best = copy / "checkpoints" / "best.pt"
    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 0xFF
    best.write_bytes(bytes(data))
    res = _eval("--run", str(copy), "--scenes", "2", "--estimators", "pred")
    assert res.exit_code == 2 and "is corrupt" in res.output


@pytest.mark.parametrize("args,reason", [
    (["--run", "no-such-run"], "no run directory"),
    (["--run", "latest", "--seed", "3"], "draws the run's training or validation scenes"),
    (["--run", "latest", "--preset", "paper"], "does not match the run's preset small"),
    (["--run", "latest", "--scenes", "0"], "--scenes must be positive"),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, args, reason):
    res = _eval(*args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0]


def test_run_without_best_pt_is_exit_2(run_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text((run_dir / "manifest.json").read_text())
    res = _eval("--run", str(broken))
    assert res.exit_code == 2 and "has no checkpoints/best.pt" in res.output
