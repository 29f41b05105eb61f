"""The reference Trainer on tiny configs: run directory, EMA swap, resume, scheduler cadence.

Probes are off (probes=[]) where the test is about the loop itself: the loop must not
depend on them, and they cost most of a tiny run's time.
"""

import math

import pytest
import torch

from riswb.errors import RiswbError
from riswb.instrument.hooks import Event
from riswb.reference import checkpoints
from riswb.reference.config import TrainConfig
from riswb.reference.losses import loss_terms, weighted_total
from riswb.reference.model import CovarianceNet
from riswb.reference.trainer import Trainer
from riswb.runlog import read_run

EPOCHS = 4


class Interrupted(Exception):
    pass


def tiny(**overrides) -> TrainConfig:
    base = {"name": "tiny", "train_scenes": 64, "val_scenes": 32, "batch_size": 32,
            "epochs": EPOCHS, "warmup_steps": 3, "ema_decay": 0.8, "device": "cpu",
            "log_every": 1, "seed": 7}
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RISWB_CACHE_DIR", str(root / "cache"))
        yield root


def _recorder(losses):
    def progress(kind, info):
        if kind == "step":
            losses.append(float(info["loss"].detach()))
    return progress


@pytest.fixture(scope="module")
def straight(env):
    """EPOCHS epochs in one go."""
    losses = []
    trainer = Trainer(tiny(), runs_dir=env / "runs", probes=[], progress=_recorder(losses))
    result = trainer.run()
    return trainer, result, losses


def _params(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def test_short_run_writes_a_complete_run_dir(straight):
    trainer, result, _ = straight
    path = result.path
    for name in ("manifest.json", "scalars.jsonl", "events.jsonl"):
        assert (path / name).is_file(), name
    run = read_run(path)
    assert run.manifest["status"] == "completed"
    assert run.manifest["config"]["epochs"] == EPOCHS
    assert len(run.kind("eval")) == EPOCHS
    for name in ("best.pt", "last.pt", "state.pt"):
        obj = torch.load(path / "checkpoints" / name, weights_only=True)  # no pickle needed
        assert obj
    state = checkpoints.load(path / "checkpoints" / "state.pt")
    assert state["epoch"] == EPOCHS and state["ema"]["count"] == result.steps
    model = CovarianceNet(trainer.preset)
    model.load_state_dict(torch.load(path / "checkpoints" / "last.pt", weights_only=True))
    assert result.steps == EPOCHS * 2 and len(result.history) == EPOCHS


def test_best_pt_holds_exactly_the_weights_that_were_scored(straight):
    trainer, result, _ = straight
    model = CovarianceNet(trainer.preset)
    model.load_state_dict(torch.load(result.path / "checkpoints" / "best.pt", weights_only=True))
    model.eval()
    val = trainer.val_set
    with torch.no_grad():
        value = float(weighted_total(loss_terms(model(val.y), val, trainer.preset),
                                     trainer.weights))
    best = min(h["val_loss"] for h in result.history)
    assert value == pytest.approx(best, rel=1e-5)
    assert trainer.best_value == best


def test_the_loss_drops_on_a_short_run(straight):
    _, result, losses = straight
    assert len(losses) == EPOCHS * 2 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-2:]) < 0.95 * sum(losses[:2])
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]


def test_resume_continues_the_same_trajectory(straight, env):
    ref, ref_result, ref_losses = straight
    losses = []

    def interrupt(kind, info):
        _recorder(losses)(kind, info)
        if kind == "epoch" and info["epoch"] == EPOCHS // 2 - 1:
            raise Interrupted  # killed right after the mid-run checkpoint

    first = Trainer(tiny(), runs_dir=env / "runs-resume", probes=[], progress=interrupt)
    with pytest.raises(Interrupted):
        first.run()
    assert read_run(first.wb.path).manifest["status"] == "crashed"

    second = Trainer(tiny(), runs_dir=env / "runs-resume", probes=[], resume=first.wb.path,
                     progress=_recorder(losses))
    assert second.epoch == EPOCHS // 2
    result = second.run()
    assert result.path != first.wb.path
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses),
                               rtol=1e-6, atol=1e-7)
    final, expected = _params(second), _params(ref)
    for name in expected:
        torch.testing.assert_close(final[name], expected[name], rtol=1e-6, atol=1e-7)
    for a, b in zip(second.ema.shadow, ref.ema.shadow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert second.scheduler.last_epoch == ref.scheduler.last_epoch
    assert [h["val_loss"] for h in result.history] == pytest.approx(
        [h["val_loss"] for h in ref_result.history], rel=1e-5)
    # the resumed run's directory is complete on its own, best.pt included
    assert (result.path / "checkpoints" / "best.pt").is_file()
    assert read_run(result.path).manifest["config"]["resumed_from"] == str(first.wb.path)
    # ... and continues its predecessor's step axis: the two runs' evaluations sit at the
    # steps of the uninterrupted run's, and the totals agree
    resumed = read_run(result.path)
    assert resumed.manifest["first_step"] == (EPOCHS // 2) * second.steps_per_epoch
    eval_steps = [*read_run(first.wb.path).kind("eval")["step"], *resumed.kind("eval")["step"]]
    assert eval_steps == list(read_run(ref_result.path).kind("eval")["step"])
    assert result.steps == ref_result.steps


def test_resume_without_state_is_a_riswb_error(env, tmp_path):
    with pytest.raises(RiswbError, match="no state.pt"):
        Trainer(tiny(), runs_dir=env / "runs", probes=[], resume=tmp_path)


def test_ema_swap_during_evaluation_leaves_training_weights_bit_for_bit(env):
    trainer = Trainer(tiny(epochs=1), runs_dir=env / "runs-swap", probes=[])
    with trainer.instrument() as wb:
        trainer.train_epoch()
        before = _params(trainer)
        events = []
        emit = wb.emit

        def spy(event, **payload):
            events.append((event, payload.get("kind")))
            if event is Event.WEIGHTS_SWAP_IN:  # the averaged weights are live right now
                for p, s in zip(trainer.ema.params, trainer.ema.shadow, strict=True):
                    assert torch.equal(p, s)
            emit(event, **payload)

        wb.emit = spy
        metrics = trainer.evaluate()
        wb.emit = emit
        after = _params(trainer)
        assert all(torch.equal(before[n], after[n]) for n in before)
        assert (Event.WEIGHTS_SWAP_IN, "ema") in events
        assert (Event.WEIGHTS_SWAP_OUT, "ema") in events
        on_training_weights = trainer.validate()
        assert metrics["val_loss"] != on_training_weights["val_loss"]  # EMA really scored


class SkipEveryOtherStep(Trainer):
    """An optimizer step gate that skips every other step (as a GradScaler overflow does)."""

    def optimizer_step(self) -> bool:
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls % 2 == 0:
            return False
        return super().optimizer_step()


def test_scheduler_and_ema_step_only_after_real_optimizer_steps(env):
    trainer = SkipEveryOtherStep(tiny(epochs=1, batch_size=16), runs_dir=env / "runs-skip",
                                 probes=[])
    with trainer.instrument():
        trainer.train_epoch()
    assert trainer.calls == 4
    assert trainer.scheduler.last_epoch == 2
    assert trainer.ema.count == 2
    steps = {int(s["step"]) for s in trainer.optimizer.state_dict()["state"].values()}
    assert steps == {2}


def test_unknown_loss_weight_is_a_riswb_error(env):
    with pytest.raises(RiswbError, match="unknown loss term.*nmsee"):
        Trainer(tiny(weights={"nmsee": 1.0}), runs_dir=env / "runs", probes=[])


def test_param_groups_cover_every_trainable_parameter_once(straight):
    trainer, _, _ = straight
    grouped = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert len(grouped) == len(trainable) == len({id(p) for p in grouped})
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["backbone", "heads"]
    assert all(g["lr"] > 0 for g in trainer.optimizer.param_groups)
