"""Which probes a Workbench runs: `probes="default"`, None, or names, classes and instances.

Every built-in probe class names itself after its module in riswb/probes/ ("grad_norms"),
the name the manifest records and the rules look for.
"""

from __future__ import annotations

from typing import Any

from riswb.errors import RiswbError
from riswb.instrument.hooks import Probe
from riswb.probes import BUILTIN, builtin_class


def resolve_probes(spec: Any) -> list[Probe]:
    """Probe instances for `probes=`: "default", None, or a list of names/instances/classes.

    Names are built-in module names ("loss_terms"), class names ("LossTermsProbe") or
    "default" (all built-ins).
    """
    if spec is None:
        return []
    items = [spec] if isinstance(spec, (str, Probe, type)) else list(spec)
    probes: list[Probe] = []
    for item in items:
        if isinstance(item, Probe):
            probes.append(item)
        elif isinstance(item, type) and issubclass(item, Probe):
            probes.append(item())
        elif item == "default":
            probes.extend(builtin_class(module)() for module, _ in BUILTIN)
        elif isinstance(item, str):
            module = next((m for m, c in BUILTIN if item in (m, c)), None)
            if module is None:
                names = ", ".join(m for m, _ in BUILTIN)
                raise RiswbError(f"unknown probe {item!r} (built-ins: {names}, or 'default')")
            probes.append(builtin_class(module)())
        else:
            raise TypeError(f"probes must be 'default', names or Probe instances, got {item!r}")
    return probes
