"""Which probes a Workbench runs: `probes="default"`, None, or names, classes and instances."""

from __future__ import annotations

from typing import Any

from riswb.errors import RiswbError
from riswb.instrument.hooks import Probe, _snake
from riswb.probes import BUILTIN, builtin_class


def _name_builtin(probe: Probe, module: str) -> Probe:
    """Built-ins are named after their module ("grad_norms"), unless the class names itself."""
    if type(probe).name is None and probe.name == _snake(type(probe).__name__):
        probe.name = module
    return probe


def resolve_probes(spec: Any) -> list[Probe]:
    """Probe instances for `probes=`: "default", None, or a list of names/instances/classes.

    Names are built-in module names ("loss_terms"), class names ("LossTermsProbe") or
    "default" (all built-ins).
    """
    if spec is None:
        return []
    items = [spec] if isinstance(spec, (str, Probe, type)) else list(spec)
    table = list(BUILTIN)
    probes: list[Probe] = []
    modules = {(f"riswb.probes.{m}", c): m for m, c in table}
    for item in items:
        if isinstance(item, Probe):
            module = modules.get((type(item).__module__, type(item).__name__))
            probes.append(item if module is None else _name_builtin(item, module))
        elif isinstance(item, type) and issubclass(item, Probe):
            probes.append(item())
        elif item == "default":
            for module, _ in table:
                probes.append(_name_builtin(builtin_class(module)(), module))
        elif isinstance(item, str):
            match = next(((m, c) for m, c in table if item in (m, c)), None)
            if match is None:
                names = ", ".join(m for m, _ in table)
                raise RiswbError(f"unknown probe {item!r} (built-ins: {names}, or 'default')")
            probes.append(_name_builtin(builtin_class(match[0])(), match[0]))
        else:
            raise TypeError(f"probes must be 'default', names or Probe instances, got {item!r}")
    return probes
