"""The reference trainer's configuration: one dataclass, loadable from TOML.

Every field has a default that trains the small preset; a TOML file overrides any subset
(`[loss.weights]` overrides individual loss-term weights). Unknown keys are an error, not
a silent no-op: a weight that never reaches the loss was a month-long bug once
(docs/failures.md #8). Every value is checked against one table (RULES: type, finiteness,
range), and each bad one is named in a single-line RiswbError; `riswb overfit` checks its
numeric options against the same rules (riswb/commands/training.py). TRAJECTORY_FIELDS are
the fields a resumed run must share with its checkpoint (riswb/reference/resume.py).
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


# What a number in the config may be: `kind` ("int", "real", "bool", "str", "choice",
# "snr", "weights"), bounds (`lo`/`hi`, open or closed), whether it may be absent. One table
# validates the TOML file, the Python constructor and the CLI options alike (check_field).
@dataclass(frozen=True)
class Rule:
    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    nullable: bool = False
    choices: tuple[str, ...] = ()
    note: str = ""  # what a special value means, e.g. "0: no clipping"

    def describe(self) -> str:
        if self.kind in _SHAPES:
            text = _SHAPES[self.kind]
        elif self.kind == "choice":
            text = "one of " + ", ".join(self.choices)
        else:
            text = {"int": "an integer", "real": "a finite number", "bool": "true or false",
                    "str": "a string"}[self.kind] + self._range()
        if self.note:
            text += f" ({self.note})"
        return text + (", or absent" if self.nullable else "")

    def _range(self) -> str:
        if self.lo is not None and self.hi is not None:
            return (f" in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}"
                    f"{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f" {'>' if self.lo_open else '>='} {_num(self.lo)}"
        return ""

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "snr":  # a number or [lo, hi] with lo <= hi
            if isinstance(value, (list, tuple)):
                return (len(value) == 2 and all(_real(v) for v in value)
                        and value[0] <= value[1])
            return _real(value)
        if self.kind == "weights":
            return isinstance(value, dict) and all(
                isinstance(k, str) and _real(v) and v >= 0 for k, v in value.items())
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind in ("bool", "str"):
            return isinstance(value, bool if self.kind == "bool" else str)
        if not (_integer(value) if self.kind == "int" else _real(value)):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)


_SHAPES = {"snr": "a finite number or [lo, hi] with lo <= hi",
           "weights": "a table of term names to finite numbers >= 0"}
_SEED_MAX = 2**32 - 1  # batch orders seed a generator with seed·100003 + epoch: keep it int64
_FRACTION = {"lo": 0.0, "hi": 1.0}

RULES: dict[str, Rule] = {
    "name": Rule("str"),
    "preset": Rule("str"),
    "train_scenes": Rule("int", lo=1),
    "resample_scenes": Rule("bool"),
    "val_scenes": Rule("int", lo=0, note="0: validate on the training scenes"),
    "seed": Rule("int", lo=0, hi=_SEED_MAX),
    "snr_db": Rule("snr", nullable=True),
    "epochs": Rule("int", lo=1),
    "batch_size": Rule("int", lo=1),
    "lr": Rule("real", lo=0, lo_open=True),
    "head_lr": Rule("real", lo=0, lo_open=True, nullable=True),
    "weight_decay": Rule("real", lo=0),
    "warmup_steps": Rule("int", lo=0),
    # docs/failures.md #2: a warm-up from 0 never starts
    "warmup_start": Rule("real", lo=0, hi=1, lo_open=True),
    "lr_floor": Rule("real", **_FRACTION),
    "ema_decay": Rule("real", lo=0, hi=1, hi_open=True, note="0: no EMA"),
    "swa_start_epoch": Rule("int", lo=0, nullable=True),
    "clip_norm": Rule("real", lo=0, nullable=True, note="0: no clipping"),
    "sanitize": Rule("bool"),
    "beta_start": Rule("real", **_FRACTION),
    "beta_end": Rule("real", **_FRACTION),
    "beta_ramp_epochs": Rule("int", lo=0),
    "weights": Rule("weights"),
    "contrast": Rule("choice", choices=("probes", "range")),
    "head": Rule("choice", choices=("factor", "steering")),
    "refine_steps": Rule("int", lo=0, hi=100, note="0: no physics stage; needs head steering"),
    "device": Rule("choice", choices=("auto", "cpu", "cuda")),
    "amp": Rule("choice", choices=("none", "bf16", "fp16")),
    "threads": Rule("int", lo=0, hi=1024, note="0: torch's default"),
    "log_every": Rule("int", lo=1),
    "eval_every": Rule("int", lo=1),
    "inject": Rule("str", nullable=True),
}

# The fields that decide the training trajectory (data, batches, model, optimizer, schedule,
# averaging, loss): a resumed run must match its checkpoint in all of them. Left out: what
# only names, places or reports the run (name, device, threads, log_every, eval_every), and
# epochs, which a resume may raise to train on.
TRAJECTORY_FIELDS = (
    "preset", "train_scenes", "resample_scenes", "val_scenes", "seed", "snr_db", "batch_size",
    "lr", "head_lr", "weight_decay", "warmup_steps", "warmup_start", "lr_floor", "ema_decay",
    "swa_start_epoch", "clip_norm", "sanitize", "beta_start", "beta_end", "beta_ramp_epochs",
    "weights", "contrast", "head", "amp", "inject",
)


def check_field(name: str, value: Any, label: str | None = None) -> str | None:
    """The problem with `value` for config field `name` as one phrase naming `label` (the
    field, or the CLI option that sets it), None when the value is fine."""
    rule = RULES[name]
    if rule.accepts(value):
        return None
    return f"{label or name} must be {rule.describe()} (got {value!r})"


@dataclass
class TrainConfig:
    name: str = "train"
    preset: str = "small"
    train_scenes: int = 512
    # draw fresh training scenes every epoch (seeded by epoch, so resume sees the same ones):
    # the simulator is ~0.5 ms a scene, and a fixed set of 8192 overfits (docs/case-study.md)
    resample_scenes: bool = False
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
    # the reference of the peak_contrast term (riswb.reference.losses.loss_terms): "probes"
    # (fixed directions) or "range" (each source's range twin: range is what MUSIC misses)
    contrast: str = "probes"
    # R_pred's factor (riswb/reference/model.py): "factor" (free complex columns) or
    # "steering" (exact steering vectors at the aux head's positions); refine_steps > 0
    # (steering only: the model refuses it with "factor") adds the physics stage at
    # inference (riswb/reference/refinement.py). Inference only: the trainer validates the
    # network without it, so it is not a trajectory field.
    head: str = "factor"
    refine_steps: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16 (fp16 needs CUDA and uses a GradScaler)
    # CPU threads for torch (0: torch's default). One by default: batched eigh of the small
    # complex covariances slows down badly with more OpenMP threads on a loaded machine.
    threads: int = 1
    log_every: int = 10
    eval_every: int = 1
    inject: str | None = None  # a fault from riswb.reference.faults (for the diagnosis zoo)

    def __post_init__(self) -> None:
        problems = [p for f in fields(self) if (p := check_field(f.name, getattr(self, f.name)))]
        if problems:
            raise RiswbError("bad training config: " + "; ".join(problems))
        if isinstance(self.snr_db, tuple):
            self.snr_db = list(self.snr_db)
        if self.clip_norm == 0:  # TOML has no null: clip_norm = 0 turns clipping off
            self.clip_norm = None

    def trajectory(self) -> dict[str, Any]:
        """The values of TRAJECTORY_FIELDS (stored with every resumable checkpoint)."""
        return {name: getattr(self, name) for name in TRAJECTORY_FIELDS}

    def trajectory_changes(self, stored: dict[str, Any]) -> list[str]:
        """`field stored → ours` for each trajectory field that differs from `stored`
        (fields `stored` does not record are not compared)."""
        ours = self.trajectory()
        return [f"{name} {stored[name]!r} → {ours[name]!r}" for name in TRAJECTORY_FIELDS
                if name in stored and stored[name] != ours[name]]

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
def _real(value: Any) -> bool:
    """A finite int or float; bool is not a number here (TOML `true` for a rate is a typo)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False


def _integer(value: Any) -> bool:
    """An int that fits int64 (what TOML and torch hold); not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


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
