"""`probes=`: built-in names (module or class), "default", instances and classes."""

import pytest

from riswb.errors import RiswbError
from riswb.instrument.hooks import Probe
from riswb.instrument.probe_resolution import resolve_probes
from riswb.probes import default_probes


class GradSpy(Probe):
    pass


def test_names_classes_and_instances_resolve():
    probes = resolve_probes(["cadence", "LRTraceProbe"])
    assert [p.name for p in probes] == ["cadence", "lr_trace"]
    default = resolve_probes("default")
    assert len({p.name for p in default}) == len(default) >= 6
    mixed = resolve_probes(["default", GradSpy()])
    assert mixed[-1].name == "grad_spy" and len(mixed) == len(default) + 1
    assert resolve_probes(None) == []
    named = resolve_probes(default_probes())  # instances of built-ins get module names
    assert [p.name for p in named] == [p.name for p in default]
    with pytest.raises(RiswbError, match="unknown probe"):
        resolve_probes(["nope"])


def test_every_builtin_is_named_after_its_module():
    """The manifest name is what the rules look for: one name per built-in, its module's."""
    from riswb.probes import BUILTIN

    assert [p.name for p in default_probes()] == [module for module, _ in BUILTIN]
