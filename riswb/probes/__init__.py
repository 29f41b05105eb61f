"""Built-in probes, one file each. `default_probes()` is what `Workbench(probes="default")` uses."""

from __future__ import annotations

import importlib

from riswb.instrument.hooks import Probe

# (module, class) of every built-in probe, in dispatch order: probes that read raw
# gradients come before anything that could change them.
BUILTIN = (
    ("cadence", "CadenceProbe"),
    ("inputs", "InputsProbe"),
    ("loss_terms", "LossTermsProbe"),
    ("term_output", "TermOutputProbe"),
    ("term_gradients", "TermGradientsProbe"),
    ("grad_step", "GradStepProbe"),
    ("nonfinite", "NonFiniteProbe"),
    ("grad_norms", "GradNormsProbe"),
    ("dead_params", "DeadParamsProbe"),
    ("clip", "ClipProbe"),
    ("coverage", "CoverageProbe"),
    ("param_update", "ParamUpdateProbe"),
    ("weight_swap", "WeightSwapProbe"),
    ("lr_trace", "LRTraceProbe"),
    ("spectra", "SpectraProbe"),
    ("mode", "ModeProbe"),
)


def builtin_class(module: str) -> type[Probe]:
    """The probe class of built-in `module` ("grad_norms" -> GradNormsProbe)."""
    return getattr(importlib.import_module(f"riswb.probes.{module}"), dict(BUILTIN)[module])


def builtin_probe_classes() -> list[type[Probe]]:
    return [builtin_class(module) for module, _ in BUILTIN]


def default_probes() -> list[Probe]:
    return [cls() for cls in builtin_probe_classes()]
