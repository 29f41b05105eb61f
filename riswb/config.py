"""The reference trainer's configuration: one dataclass, loadable from TOML.

Every field has a default that trains the small preset; a TOML file overrides any subset
(`[loss.weights]` overrides individual loss-term weights). Unknown keys are an error, not
a silent no-op: a weight that never reaches the loss was a month-long bug once
(FAILURES.md 8).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from riswb.errors import RiswbError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class TrainConfig:
    name: str = "train"
    preset: str = "small"
    train_scenes: int = 512
    val_scenes: int = 128  # 0: validate on the training scenes (the overfit test)
    seed: int = 0
    snr_db: float | list[float] | None = None  # None: the preset's default; [lo, hi]: a range
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    head_lr: float | None = None  # None: same as lr
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    warmup_start: float = 0.1  # fraction of lr at step 0; must be > 0
    lr_floor: float = 0.05  # fraction of lr at the end of the cosine
    ema_decay: float = 0.98  # 0 disables the EMA
    swa_start_epoch: int | None = None  # epoch from which an SWA average is kept
    clip_norm: float | None = 5.0
    sanitize: bool = True
    beta_start: float = 0.0  # R_blend = (1 - β)·R_pred + β·R_samp.detach()
    beta_end: float = 0.0
    beta_ramp_epochs: int = 10
    weights: dict[str, float] = field(default_factory=dict)
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16 (fp16 needs CUDA and uses a GradScaler)
    log_every: int = 10
    eval_every: int = 1
    inject: str | None = None  # a fault from riswb.faults (for the diagnosis zoo)

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.train_scenes < 1:
            problems.append(f"train_scenes must be >= 1 (got {self.train_scenes})")
        if self.val_scenes < 0:
            problems.append(f"val_scenes must be >= 0 (got {self.val_scenes})")
        if self.lr <= 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be auto, cpu or cuda (got {self.device!r})")
        if self.amp not in ("none", "bf16", "fp16"):
            problems.append(f"amp must be none, bf16 or fp16 (got {self.amp!r})")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"ema_decay must be in [0, 1) (got {self.ema_decay})")
        if problems:
            raise RiswbError("bad training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **overrides: Any) -> TrainConfig:
        merged = {**self.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}
        return TrainConfig(**merged)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        loss = data.pop("loss", None)
        if loss is not None:
            data["weights"] = {**data.get("weights", {}), **dict(loss.get("weights", {}))}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RiswbError(f"unknown config key(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise RiswbError(f"no config file at {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise RiswbError(f"{path} is not valid TOML: {error}") from None
        return cls.from_dict(data)
