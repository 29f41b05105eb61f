"""How riswb names parameters and parameter groups, and which of them an optimizer covers.

One definition each, shared by the Workbench, the probes and the litmus checks:
`group_label` (a param group's name, else its index), `top_module` (the top-level child
module a parameter belongs to, with wrapper prefixes stripped) and `audit_coverage` (which
trainable tensors an optimizer updates).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

# Prefixes that wrappers put in front of every parameter name: torch.compile's OptimizedModule
# (`_orig_mod.`) and DataParallel / DistributedDataParallel (`module.`). Without stripping
# them every parameter would belong to one "module" and the per-module breakdown would be
# one row.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def group_label(group: Mapping[str, Any], index: int) -> str:
    """A param group's label: its "name" entry when it has one, else its index."""
    name = group.get("name")
    return str(name) if name is not None else str(index)


def strip_wrappers(name: str) -> str:
    """`name` without leading wrapper prefixes ("_orig_mod.module.enc.w" -> "enc.w")."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                name, stripped = name[len(prefix):], True
    return name


def top_module(name: str) -> str:
    """The top-level child module of a parameter name ("encoder.0.weight" -> "encoder").

    A parameter that sits directly on the root module is its own "module"."""
    return strip_wrappers(name).split(".", 1)[0]


def _float(value: Any) -> float:
    """A learning rate as a float; NaN for None (an optimizer that sets its own step size,
    as Adafactor with relative_step keeps lr=None in its groups)."""
    if value is None:
        return math.nan
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)


@dataclass
class CoverageAudit:
    """Which trainable tensors an optimizer updates, and how (the `coverage` event's payload).

    missing: trainable parameter names in no param group; duplicated: names in more than one
    group (or twice in one); zero_lr_groups: labels of groups whose configured lr
    (`initial_lr` when a scheduler set one, else `lr`) is 0; stale: optimizer tensors that
    are not parameters of the model ("<group>:<index> <shape>"); groups: {label: {top-level
    module: tensor count}} ("<stale>" for tensors outside the model); frozen: names with
    requires_grad=False that sit in the optimizer; group_lr: {label: lr now}.
    """

    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    zero_lr_groups: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    groups: dict[str, dict[str, int]] = field(default_factory=dict)
    frozen: list[str] = field(default_factory=list)
    group_lr: dict[str, float] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every trainable tensor in exactly one group, none at lr 0, none stale."""
        return not (self.missing or self.duplicated or self.zero_lr_groups or self.stale)

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)


def audit_coverage(model: torch.nn.Module, optimizer: Any) -> CoverageAudit:
    """Audit which of `model`'s trainable tensors `optimizer` updates (pure).

    `optimizer` may be a list of optimizers: the audit is of their union (a tensor in two
    of them is `duplicated`, one in none `missing`) and group labels read
    `opt/<i>/<label>` (optimizer i's group); a single optimizer keeps plain labels."""
    optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    all_names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    seen: Counter[int] = Counter()
    audit = CoverageAudit()
    for opt_index, opt in enumerate(optimizers):
        for index, group in enumerate(opt.param_groups):
            label = group_label(group, index)
            if len(optimizers) > 1:
                label = f"opt/{opt_index}/{label}"
            modules: Counter[str] = Counter()
            for position, param in enumerate(group["params"]):
                seen[id(param)] += 1
                name = all_names.get(id(param))
                if name is None:
                    audit.stale.append(f"{label}:{position} {tuple(param.shape)}")
                    modules["<stale>"] += 1
                    continue
                modules[top_module(name)] += 1
                if not param.requires_grad and seen[id(param)] == 1:
                    audit.frozen.append(strip_wrappers(name))
            audit.groups[label] = dict(modules)
            audit.group_lr[label] = _float(group.get("lr", 0.0))
            if _float(group.get("initial_lr", group.get("lr", 0.0))) == 0.0:
                audit.zero_lr_groups.append(label)
    audit.missing = [strip_wrappers(n) for n, p in trainable if seen[id(p)] == 0]
    audit.duplicated = [
        strip_wrappers(all_names.get(i, f"<stale {i}>")) for i, c in seen.items() if c > 1
    ]
    return audit
