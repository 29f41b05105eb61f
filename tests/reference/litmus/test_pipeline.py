"""The bare pipeline (riswb/reference/litmus/pipeline.py): copies step under a real Workbench
that sees the step's terms and inputs, and leave the trainer itself untouched."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from riswb.reference.litmus.pipeline import Pipeline, written_events
from riswb.reference.trainer import Trainer


def test_a_copy_steps_under_a_workbench_and_leaves_the_trainer_alone(config):
    trainer = Trainer(config())
    before = [p.detach().clone() for p in trainer.model.parameters()]
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    with tempfile.TemporaryDirectory() as scratch:
        pipe = Pipeline.of(trainer, Path(scratch), batch_size=4)
        assert len(pipe.batch) == 4 and int(pipe.batch.k.max()) == trainer.preset.k_max
        with pipe.copy() as (clone, seen):
            loss = clone.forward_loss(pipe.batch)
            assert clone.backward_and_step(loss)
            assert set(seen.terms) == set(trainer.weights) and seen.weights == trainer.weights
            assert {"y", "R_samp", "R_true"} <= set(seen.inputs)
            assert [g["lr"] for g in clone.optimizer.param_groups] != lrs  # its scheduler ran
            assert clone.wb.opt_step == 1 and written_events(clone.wb) == []
        assert clone.wb.closed and clone.wb.path.parent == Path(scratch)
    assert trainer.wb is None
    assert all(torch.equal(p, b) for p, b in zip(trainer.model.parameters(), before, strict=True))
    assert [g["lr"] for g in trainer.optimizer.param_groups] == lrs


def test_a_copy_starts_at_the_trainers_lr_and_beta_override(config):
    trainer = Trainer(config(beta_start=0.3))
    with tempfile.TemporaryDirectory() as scratch:
        pipe = Pipeline.of(trainer, Path(scratch))
        with pipe.copy(beta=0.0) as (clone, _):
            assert [g["lr"] for g in clone.optimizer.param_groups] == \
                [g["lr"] for g in trainer.optimizer.param_groups]
            assert clone.beta(0) == 0.0 and trainer.beta(0) == 0.3
