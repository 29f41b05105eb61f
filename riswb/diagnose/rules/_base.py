"""`Finding` and `Thresholds`: the two types every rule shares (re-exported by the package)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from riswb.errors import RiswbError
from riswb.jsonsafe import strict_json

SEVERITIES = ("error", "warning", "info")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}  # error first


@dataclass
class Finding:
    """One diagnosis: what is wrong, the numbers that show it, and what to change.

    `evidence` holds step ranges (`[first, last]` pairs of training-batch steps), values,
    and parameter or term names; `to_dict()` makes it strict JSON (non-finite floats become
    the strings "NaN"/"Infinity"/"-Infinity", as everywhere: riswb.jsonsafe).
    """

    id: str
    severity: str
    title: str
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "title": self.title,
            "evidence": strict_json(self.evidence, digits=6),
            "fix": self.fix,
        }


def _t(default: float, doc: str, lo: float = 0.0, hi: float = math.inf) -> Any:
    """A threshold field: its default, its meaning, and the closed range it must lie in."""
    return field(default=default, metadata={"doc": doc, "range": (lo, hi)})


@dataclass(frozen=True)
class Thresholds:
    """Every number a rule compares against, named and overridable.

    `Thresholds.parse(["name=value", ...])` (the CLI's --threshold),
    `Thresholds.from_dict({...})` and `Thresholds().overrides(name=value)` build variants;
    an unknown name, a non-number, or a value that is not finite or outside the field's
    range raises RiswbError (a typo must not silently keep the default, nor a NaN turn
    every comparison false).
    `Thresholds.describe()` lists name, default and meaning for reports and `--help`.
    """

    # params-not-moving / step-skipped
    min_update_ratio: float = _t(
        1e-9, "‖Δθ‖/‖θ‖ at or below this counts as 'did not move' on an optimizer step "
        "(float32 rounding already swallows relative updates below ~6e-8)")
    min_moving_fraction: float = _t(
        0.5, "params-not-moving is an error when fewer than this fraction of logged "
        "optimizer steps (or of one param group's steps) move the parameters", hi=1)
    max_still_fraction: float = _t(
        0.1, "params-not-moving warns when more than this fraction of steps left the "
        "parameters unchanged", hi=1)
    min_tensor_moving_fraction: float = _t(
        0.9, "params-not-moving warns when the median fraction of trainable tensors that "
        "change per step (param_update frac_moving) is below this", hi=1)
    # loss-not-dropping / nonfinite-loss
    min_loss_records: int = _t(
        10, "fewest finite loss records needed to judge a trend (fewer: unchecked)", lo=1)
    min_loss_steps: int = _t(
        100, "loss-not-dropping calls a loss that did not fall an error only over at least "
        "this many training batches; a shorter run gets info (a correct loop may not have "
        "moved the loss yet: warm-up, a hard task)", lo=1)
    loss_window: int = _t(
        50, "records at the start (and end) whose median is compared; capped at a fifth "
        "of the run, at least 3", lo=1)
    min_loss_drop: float = _t(
        0.05, "loss-not-dropping is an error when the best smoothed loss is not at least "
        "this fraction below the starting loss", hi=1)
    max_loss_rebound: float = _t(
        0.5, "loss-not-dropping warns when the final loss gave back more than this fraction "
        "of its best improvement (divergence)")
    huge_loss: float = _t(
        1e10, "nonfinite-loss warns when a finite total loss exceeds this magnitude (one "
        "square away from float32 overflow)")
    # dead-params / dead-loss-term
    dead_params_error_fraction: float = _t(
        0.01, "dead-params is an error when dead tensors hold at least this fraction of the "
        "trainable elements (or the fraction is unknown); a warning below", hi=1)
    dead_elems_fraction: float = _t(
        0.2, "dead-params warns when this fraction of gradient elements stays zero even "
        "though no whole tensor is dead (a clamp that zeroes part of a head)", hi=1)
    dead_term_grad: float = _t(
        0.0, "a term gradient norm at or below this counts as 'no gradient'")
    dead_term_fraction: float = _t(
        0.9, "dead-loss-term warns when a term sends no gradient on at least this fraction "
        "of sampled steps (on all of them: error)", hi=1)
    min_term_samples: int = _t(
        3, "fewest sampled steps needed to judge a term's gradient or a pair's cosine", lo=1)
    # term-dominates / term-conflict
    dominance_ratio: float = _t(
        100.0, "term-dominates warns when the largest median term-gradient norm is at least "
        "this many times the second largest", lo=1)
    satisfied_term_fraction: float = _t(
        0.01, "term-dominates ignores a dwarfed term whose own value fell to at most this "
        "fraction of its start: it is minimized (a regularizer at ~0), not drowned", hi=1)
    regularizer_dominance_ratio: float = _t(
        5.0, "term-dominates warns when a term that does not depend on the model's outputs "
        "(a parameter penalty) has a median gradient norm at least this many times that of "
        "every output-dependent term", lo=1)
    conflict_cosine: float = _t(
        -0.8, "term-conflict warns when two terms' median gradient cosine is at or below this "
        "(competing objectives, e.g. a GAN discriminator's real and fake terms, sit near -0.6; "
        "a flipped sign or order near -1)", lo=-1, hi=1)
    # nonfinite-grads / step-skipped
    max_nonfinite_grad_fraction: float = _t(
        0.01, "non-finite gradients on at most this fraction of logged steps, each handled "
        "by a GradScaler skip and never sanitized, are info (normal AMP overflow)", hi=1)
    max_skip_fraction: float = _t(
        0.05, "step-skipped is an error when at least this fraction of intended optimizer "
        "steps were skipped", hi=1)
    max_scaler_skip_fraction: float = _t(
        0.01, "GradScaler skips beyond the calibration ones, up to this fraction of steps, "
        "are info", hi=1)
    scaler_calibration_skips: int = _t(
        20, "GradScaler skips (and non-finite step attempts it handled) that count as scale "
        "calibration when the scaler recovered: a scale 2^20 too high costs 20 skips")
    # grads-altered / grads-not-cleared / train-mode
    grads_altered_error_fraction: float = _t(
        0.5, "grads-altered is an error when the loop zeroed or replaced the gradients between "
        "backward and optimizer.step on at least this fraction of observed steps", hi=1)
    grads_carried_error_fraction: float = _t(
        0.5, "grads-not-cleared is an error when at least this fraction of optimizer steps "
        "applied gradients carried over from earlier steps (any carried step warns)", hi=1)
    train_mode_error_fraction: float = _t(
        0.5, "train-mode is an error when at least this fraction of training forwards ran "
        "with trainable BatchNorm/Dropout-like modules in eval mode", hi=1)
    # step-cadence
    cadence_min_ratio: float = _t(
        0.5, "step-cadence is an error when optimizer steps × accumulation / loss calls is "
        "below this (one step per epoch gives ≪ 1)")
    cadence_max_ratio: float = _t(
        2.0, "step-cadence is an error when the same ratio is above this")
    cadence_tolerance: float = _t(
        0.2, "step-cadence warns when the ratio is farther than this from 1")
    min_cadence_batches: int = _t(
        10, "fewest loss calls (times the intended accumulation) needed to judge cadence", lo=1)
    # lr-stalled / scheduler-order
    lr_min: float = _t(
        1e-8, "a learning rate at or below this counts as zero")
    lr_near_zero_fraction: float = _t(
        0.01, "an lr at or below this fraction of the group's initial lr (`initial/<g>`, "
        "else the highest lr it ran at) also counts as zero", hi=1)
    lr_stall_fraction: float = _t(
        0.5, "lr-stalled is an error when the lr is zero on at least this fraction of logged "
        "steps, and warns when the warm-up peak comes after this fraction of the run", hi=1)
    lr_peak_fraction: float = _t(
        0.95, "the warm-up counts as done when the lr first reaches this fraction of its peak",
        hi=1)
    scheduler_excess_fraction: float = _t(
        0.01, "scheduler-order warns when scheduler.step() ran more than this fraction "
        "(and more than one step) beyond optimizer.step()", hi=1)
    # clip-saturated
    clip_saturation: float = _t(
        0.8, "clip-saturated warns when clipping is active on at least this fraction of steps",
        hi=1)
    clip_warn_ratio: float = _t(
        0.5, "saturated clipping is a warning only when the median clip ratio is at or below "
        "this (updates at least halved); a milder constant shrink is info", hi=1)
    clip_severe_ratio: float = _t(
        1e-3, "clip-saturated is an error when, saturated, the median clip ratio "
        "(max_norm / norm) is at or below this: updates shrunk 1000×", hi=1)
    # spectrum-mismatch
    scale_ratio_warn: float = _t(
        2.0, "spectrum-mismatch warns when tr R_pred / tr R_true is off by this factor", lo=1)
    scale_ratio_max: float = _t(
        10.0, "spectrum-mismatch is an error when tr R_pred / tr R_true is off by this factor",
        lo=1)
    flat_rank_ratio: float = _t(
        2.0, "R_pred counts as flat when its effective rank is at least this times R_true's", lo=1)
    collapsed_rank_ratio: float = _t(
        0.5, "R_pred counts as collapsed when its effective rank is at most this times R_true's",
        hi=1)
    min_gap_fraction: float = _t(
        0.25, "R_pred has no gap at K when its relative eigengap is below this fraction of "
        "R_true's", hi=1)
    # stale-checkpoint
    checkpoint_tolerance: float = _t(
        1e-3, "a validation improvement smaller than this (relative) need not rewrite best.pt")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Thresholds:
        return cls().overrides(**(values or {}))

    @classmethod
    def parse(cls, items: list[str] | None) -> Thresholds:
        """`["name=value", ...]` (repeated --threshold options) -> the defaults with those."""
        values: dict[str, str] = {}
        for item in items or []:
            name, sep, text = item.partition("=")
            if not sep:
                raise RiswbError(f"--threshold expects NAME=VALUE, got {item!r}")
            values[name.strip()] = text.strip()
        return cls().overrides(**values)

    def overrides(self, **values: Any) -> Thresholds:
        fields = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise RiswbError(
                f"unknown threshold(s) {', '.join(unknown)}; known: {', '.join(fields)}"
            )
        coerced = {}
        for name, value in values.items():
            kind = int if isinstance(fields[name].default, int) else float
            try:
                number = kind(value)
            except (TypeError, ValueError):
                raise RiswbError(f"threshold {name}: {value!r} is not a number") from None
            lo, hi = fields[name].metadata["range"]
            if not (math.isfinite(number) and lo <= number <= hi):
                raise RiswbError(f"threshold {name} must be a finite number in [{lo:g}, {hi:g}], "
                                 f"not {value}")
            coerced[name] = number
        return dataclasses.replace(self, **coerced)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        return [
            {"name": f.name, "default": f.default, "doc": f.metadata.get("doc", "")}
            for f in dataclasses.fields(cls)
        ]
