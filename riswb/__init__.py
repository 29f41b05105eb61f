"""riswb: a training diagnostics and debugging workbench for PyTorch.

Public API (docs/design.md §3): Workbench, Probe, Event, read_run, __version__. The names are
resolved lazily so that `import riswb` stays cheap for the CLI and for the physics code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "Workbench": "riswb.instrument.workbench",
    "Probe": "riswb.instrument.hooks",
    "Event": "riswb.instrument.hooks",
    "read_run": "riswb.runlog",
}

__all__ = ["Workbench", "Probe", "Event", "read_run", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from riswb.instrument.hooks import Event, Probe
    from riswb.instrument.workbench import Workbench
    from riswb.runlog import read_run


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'riswb' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
