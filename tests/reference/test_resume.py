"""Resume checks and divergence of the reference Trainer on tiny configs.

A resume is refused (one RiswbError line) before any scene is generated or run directory
created when the config's trajectory differs from the run's or a checkpoint is corrupt;
`force_resume` lets the config differ. lr = 1e12 diverges into `Diverged` with the run
finalized as crashed and diagnosed as nonfinite-loss.
"""

import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from riswb.diagnose.rules import diagnose
from riswb.errors import RiswbError
from riswb.reference import checkpoints
from riswb.reference import trainer as trainer_module
from riswb.reference.config import TrainConfig
from riswb.reference.divergence import Diverged
from riswb.reference.trainer import Trainer
from riswb.runlog import read_run


def tiny(**overrides) -> TrainConfig:
    base = {"name": "tiny", "train_scenes": 32, "val_scenes": 16, "batch_size": 16,
            "epochs": 1, "warmup_steps": 1, "ema_decay": 0.5, "device": "cpu",
            "log_every": 1, "seed": 3}
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RISWB_CACHE_DIR", str(root / "cache"))
        yield root


@pytest.fixture(scope="module")
def finished(env):
    """A finished one-epoch run (its state.pt, best.pt and manifest)."""
    return Trainer(tiny(), runs_dir=env / "base", probes=[]).run().path


@pytest.fixture
def run(finished, tmp_path):
    """A private copy of the finished run, free to corrupt."""
    return shutil.copytree(finished, tmp_path / "copy")


@pytest.fixture
def nothing_may_start(monkeypatch, tmp_path):
    """Fails the test if scenes are generated; returns the (empty) runs dir to pass."""
    def generate(*args, **kwargs):
        raise AssertionError("scenes generated before the resume was checked")

    monkeypatch.setattr(trainer_module, "scene_dataset", generate)
    runs = tmp_path / "runs"
    yield runs
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize("change,needle", [
    ({"batch_size": 8}, "batch_size 16 → 8"),
    ({"seed": 4}, "seed 3 → 4"),
    ({"seed": 4, "lr": 2e-3}, "seed 3 → 4; lr 0.001 → 0.002"),
])
def test_a_changed_trajectory_is_refused_before_anything_starts(run, nothing_may_start,
                                                                 change, needle):
    with pytest.raises(RiswbError) as info:
        Trainer(tiny(epochs=2, **change), runs_dir=nothing_may_start, probes=[], resume=run)
    message = str(info.value)
    assert needle in message and "--force" in message and "\n" not in message


def test_fields_outside_the_trajectory_and_more_epochs_resume(finished, env):
    cfg = tiny(epochs=2, name="renamed", log_every=5, eval_every=1, threads=1)
    trainer = Trainer(cfg, runs_dir=env / "more", probes=[], resume=finished)
    assert trainer.epoch == 1 and trainer.resume_changes == []


def test_force_resumes_and_records_the_changes(finished, env):
    trainer = Trainer(tiny(epochs=2, batch_size=8), runs_dir=env / "forced", probes=[],
                      resume=finished, force_resume=True)
    result = trainer.run()
    config = read_run(result.path).manifest["config"]
    assert config["resume_changes"] == ["batch_size 16 → 8"]
    assert config["resumed_from"] == str(finished)
    # the new run's state.pt records the forced trajectory: resuming it with it is clean
    state = checkpoints.load(result.path / "checkpoints" / "state.pt")
    assert state["trajectory"]["batch_size"] == 8


def test_a_state_without_trajectory_is_checked_against_the_manifest(run, nothing_may_start):
    path = run / "checkpoints" / "state.pt"
    state = checkpoints.load(path)
    del state["trajectory"]  # as written before trajectories were stored
    checkpoints.save_atomic(state, path)
    with pytest.raises(RiswbError, match="seed 3 → 9"):
        Trainer(tiny(epochs=2, seed=9), runs_dir=nothing_may_start, probes=[], resume=run)


@pytest.mark.parametrize("name", ["state.pt", "best.pt"])
def test_a_bit_flipped_checkpoint_is_refused_before_anything_starts(run, nothing_may_start,
                                                                    name):
    path = run / "checkpoints" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(RiswbError, match=f"checkpoint .*{name} is corrupt") as info:
        Trainer(tiny(epochs=2), runs_dir=nothing_may_start, probes=[], resume=run,
                force_resume=True)  # corruption is never forced
    assert "\n" not in str(info.value)


def test_a_killed_writers_temporary_files_are_cleaned_on_resume(run, env):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    folder = run / "checkpoints"
    leftover = folder / f".state.pt.{int(gone.stdout)}.tmp"
    leftover.write_bytes(b"half a checkpoint")
    Trainer(tiny(epochs=2), runs_dir=env / "clean", probes=[], resume=run)
    assert not leftover.exists() and (folder / "state.pt").is_file()
    assert not list(folder.glob(f"*.{os.getpid()}.tmp"))


def test_lr_1e12_diverges_into_one_line_with_the_run_finalized(env):
    trainer = Trainer(tiny(lr=1e12, warmup_steps=0, epochs=2), runs_dir=env / "diverged",
                      probes=["loss_terms", "nonfinite"])
    with pytest.raises(Diverged) as info:
        trainer.run()
    message = str(info.value)
    assert message.startswith("training diverged at step 1: model outputs R_pred")
    assert "\n" not in message and str(trainer.wb.path) in message
    run = read_run(trainer.wb.path)
    assert run.status == "crashed" and run.manifest["crash_reason"] == message
    (event,) = run.events_of("diverged")
    assert event["step"] == 1 and event["kind"] == "model output" and "R_pred" in event["names"]
    assert not math.isfinite(run.kind("loss")["total"].iloc[-1])
    finding = next(f for f in diagnose(run).findings if f.id == "nonfinite-loss")
    assert finding.severity == "error" and finding.evidence["first_step"] == 1


class InfiniteGapAtStep2(Trainer):
    def compute_terms(self, out, batch):
        terms = super().compute_terms(out, batch)
        if self.wb.next_step == 2:
            terms["gap"] = terms["gap"] * math.inf
        return terms


def test_a_non_finite_loss_term_is_named(env):
    trainer = InfiniteGapAtStep2(tiny(epochs=2), runs_dir=env / "term", probes=["loss_terms"])
    with pytest.raises(Diverged, match="at step 2: loss term gap is non-finite"):
        trainer.run()
    assert read_run(trainer.wb.path).events_of("diverged")[0]["names"] == ["gap"]


def test_a_checkpoint_that_cannot_be_written_is_a_warning_not_the_end(env, monkeypatch):
    def full_disk(obj, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_atomic", full_disk)
    result = Trainer(tiny(epochs=2), runs_dir=env / "full", probes=[]).run()
    run = read_run(result.path)
    assert run.status == "completed" and len(result.history) == 2
    assert any("checkpoints not saved" in w for w in run.manifest["warnings"])
    assert torch.tensor(result.final["val_loss"]).isfinite()
