"""`riswb eval --run` on a steering-head run: the run's config rebuilds the model with its
head and physics stage (riswb/commands/physics.py), and the rows come back."""

import json

import pytest
import torch
from typer.testing import CliRunner

from riswb.cli import app
from riswb.commands.physics import load_run_model
from riswb.errors import RiswbError
from riswb.reference.config import TrainConfig
from riswb.reference.trainer import Trainer

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("steerrun")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RISWB_CACHE_DIR", str(root / "cache"))
        cfg = TrainConfig(name="tiny-steer", train_scenes=64, val_scenes=32, batch_size=32,
                          epochs=2, warmup_steps=1, ema_decay=0.5, device="cpu", seed=3,
                          head="steering", refine_steps=1)
        yield Trainer(cfg, runs_dir=root / "runs", probes=[]).run().path
    torch.set_num_threads(threads)


def test_the_run_reloads_with_its_head_and_physics_stage(run_dir):
    _, model, config = load_run_model(run_dir)
    assert config["head"] == "steering" and config["refine_steps"] == 1
    assert model.head == "steering" and model.refine_steps == 1 and model.refiner is not None


def test_eval_scores_the_refined_model(run_dir):
    res = runner.invoke(app, ["eval", "--run", str(run_dir), "--scenes", "4", "--snr", "20",
                              "--k", "true", "--estimators", "prior,aux,pred",
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = {r["estimator"]: r for r in json.loads(res.stdout)["rows"]}
    assert set(rows) == {"prior", "aux", "pred"}
    assert rows["pred"]["k_accuracy"] == 1.0
    assert all(v >= 0 for v in rows["pred"]["rmse"].values())


def test_refinement_with_the_factor_head_is_refused(tmp_path):
    cfg = TrainConfig(name="bad", train_scenes=32, val_scenes=16, epochs=1, device="cpu",
                      refine_steps=2)
    with pytest.raises(RiswbError, match="refine_steps needs head='steering'"):
        Trainer(cfg, runs_dir=tmp_path / "runs", probes=[])
