"""Shared by the litmus tests: a small litmus-sized config and one check run on a trainer
built from it (a broken Trainer subclass, never a mocked check)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from riswb.reference import litmus
from riswb.reference.config import TrainConfig
from riswb.reference.trainer import Trainer


def litmus_config(**overrides) -> TrainConfig:
    base = dict(name="litmus-test", preset="small", train_scenes=litmus.SCENES, val_scenes=0,
                seed=0, batch_size=litmus.BATCH, device="cpu")
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture
def config() -> Callable[..., TrainConfig]:
    return litmus_config


@pytest.fixture
def check() -> Callable[..., litmus.CheckResult]:
    def run(trainer_cls: type[Trainer], name: str, **cfg) -> litmus.CheckResult:
        torch.manual_seed(0)
        (result,) = litmus.run_checks(trainer_cls(litmus_config(**cfg)), [name])
        return result

    return run
