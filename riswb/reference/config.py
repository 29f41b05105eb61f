"""The reference trainer's configuration: one dataclass, loadable from TOML.

Every field has a default that trains the small preset; a TOML file overrides any subset
(`[loss.weights]` overrides individual loss-term weights). Unknown keys are an error, not
a silent no-op: a weight that never reaches the loss was a month-long bug once
(docs/failures.md #8).
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from riswb.errors import RiswbError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# numeric settings with a lower bound, checked in order (message: "<name> must be >= <n>")
_AT_LEAST = (
    ("epochs", 1), ("batch_size", 1), ("train_scenes", 1), ("val_scenes", 0),
    ("weight_decay", 0), ("warmup_steps", 0), ("beta_ramp_epochs", 0), ("log_every", 1),
    ("eval_every", 1),
)

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
    lr: float = 1e-3
    head_lr: float | None = None  # None: same as lr
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    warmup_start: float = 0.1  # fraction of lr at step 0; must be > 0
    lr_floor: float = 0.05  # fraction of lr at the end of the cosine
    ema_decay: float = 0.98  # 0 disables the EMA
    swa_start_epoch: int | None = None  # epoch from which an SWA average is kept
    clip_norm: float | None = 5.0  # None (or 0 in TOML): no clipping
    sanitize: bool = True
    beta_start: float = 0.0  # R_blend = (1 - β)·R_pred + β·R_samp.detach()
    beta_end: float = 0.0
    beta_ramp_epochs: int = 10
    weights: dict[str, float] = field(default_factory=dict)
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16 (fp16 needs CUDA and uses a GradScaler)
    # CPU threads for torch (0: torch's default). One by default: batched eigh of the small
    # complex covariances slows down badly with more OpenMP threads on a loaded machine.
    threads: int = 1
    log_every: int = 10
    eval_every: int = 1
    inject: str | None = None  # a fault from riswb.reference.faults (for the diagnosis zoo)

    def __post_init__(self) -> None:
        problems = _type_problems(self)
        if problems:  # comparisons below would raise TypeError on a string or a table
            raise RiswbError("bad training config: " + "; ".join(problems))
        for name, least in _AT_LEAST:
            if getattr(self, name) < least:
                problems.append(f"{name} must be >= {least} (got {getattr(self, name)})")
        if self.lr <= 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be auto, cpu or cuda (got {self.device!r})")
        if self.amp not in ("none", "bf16", "fp16"):
            problems.append(f"amp must be none, bf16 or fp16 (got {self.amp!r})")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"ema_decay must be in [0, 1) (got {self.ema_decay})")
        if self.head_lr is not None and self.head_lr <= 0:
            problems.append(f"head_lr must be > 0 (got {self.head_lr})")
        if not 0.0 < self.warmup_start <= 1.0:  # docs/failures.md #2: a warm-up from 0 never starts
            problems.append(f"warmup_start must be in (0, 1] (got {self.warmup_start})")
        if not 0.0 <= self.lr_floor <= 1.0:
            problems.append(f"lr_floor must be in [0, 1] (got {self.lr_floor})")
        if self.swa_start_epoch is not None and self.swa_start_epoch < 0:
            problems.append(f"swa_start_epoch must be >= 0 (got {self.swa_start_epoch})")
        if self.clip_norm == 0:  # TOML has no null: clip_norm = 0 turns clipping off
            self.clip_norm = None
        if self.clip_norm is not None and self.clip_norm < 0:
            problems.append(f"clip_norm must be > 0, or 0 for no clipping (got {self.clip_norm})")
        for name in ("beta_start", "beta_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1] (got {getattr(self, name)})")
        if isinstance(self.threads, int) and self.threads < 0:
            problems.append(f"threads must be >= 0 (got {self.threads})")
        if isinstance(self.snr_db, list):
            if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
                problems.append(f"snr_db must be a number or [lo, hi] with lo <= hi "
                                f"(got {self.snr_db})")
        if not all(math.isfinite(v) for v in self.weights.values()) or any(
                v < 0 for v in self.weights.values()):
            problems.append(f"loss weights must be finite and >= 0 (got {self.weights})")
        if problems:
            raise RiswbError("bad training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_toml(self) -> str:
        """This config as TOML that `from_toml` reads back to an equal config (None values
        are left out: they are the defaults of the fields that accept None)."""
        lines, weights = [], {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "weights":
                weights = value
            elif f.name == "clip_norm" and value is None:
                lines.append("clip_norm = 0  # no clipping")
            elif value is not None:
                lines.append(f"{f.name} = {_toml_value(value)}")
        if weights:
            lines += ["", "[loss.weights]"]
            lines += [f"{_toml_key(k)} = {_toml_value(float(v))}" for k, v in weights.items()]
        return "\n".join(lines) + "\n"

    def replace(self, **overrides: Any) -> TrainConfig:
        merged = {**self.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}
        return TrainConfig(**merged)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        loss = data.pop("loss", None)
        if loss is not None:
            if not isinstance(loss, dict) or set(loss) - {"weights"}:
                extra = sorted(set(loss) - {"weights"}) if isinstance(loss, dict) else [loss]
                raise RiswbError(f"unknown config key(s) in [loss]: {', '.join(map(str, extra))} "
                                 "(only [loss.weights] is read)")
            if not isinstance(loss.get("weights", {}), dict):
                raise RiswbError("[loss.weights] must be a table of term = weight")
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


# ----------------------------------------------------------------- helpers
_NUMBER = (int, float)
_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {  # field -> (accepted types, None allowed)
    "name": ((str,), False), "preset": ((str,), False), "device": ((str,), False),
    "amp": ((str,), False), "inject": ((str,), True),
    "train_scenes": ((int,), False), "val_scenes": ((int,), False), "seed": ((int,), False),
    "epochs": ((int,), False), "batch_size": ((int,), False), "warmup_steps": ((int,), False),
    "beta_ramp_epochs": ((int,), False), "log_every": ((int,), False),
    "eval_every": ((int,), False), "swa_start_epoch": ((int,), True),
    "lr": (_NUMBER, False), "head_lr": (_NUMBER, True), "weight_decay": (_NUMBER, False),
    "warmup_start": (_NUMBER, False), "lr_floor": (_NUMBER, False),
    "ema_decay": (_NUMBER, False), "clip_norm": (_NUMBER, True), "beta_start": (_NUMBER, False),
    "beta_end": (_NUMBER, False), "sanitize": ((bool,), False),
}


def _type_problems(cfg: TrainConfig) -> list[str]:
    """Wrong types, named (bool is not accepted where a number is meant)."""
    problems = []
    for name, (types, nullable) in _TYPES.items():
        value = getattr(cfg, name)
        if value is None and nullable:
            continue
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            kind = " or ".join(t.__name__ for t in types) + (" or absent" if nullable else "")
            problems.append(f"{name} must be {kind} (got {value!r})")
    snr = cfg.snr_db
    if snr is not None and not (
            (isinstance(snr, _NUMBER) and not isinstance(snr, bool))
            or (isinstance(snr, (list, tuple))
                and all(isinstance(v, _NUMBER) and not isinstance(v, bool) for v in snr))):
        problems.append(f"snr_db must be a number, [lo, hi] or absent (got {snr!r})")
    if isinstance(snr, tuple):
        cfg.snr_db = list(snr)
    if not isinstance(cfg.weights, dict) or not all(
            isinstance(v, _NUMBER) and not isinstance(v, bool) for v in cfg.weights.values()):
        problems.append(f"weights must map term names to numbers (got {cfg.weights!r})")
    return problems


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
