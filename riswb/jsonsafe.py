"""Strict JSON values: what `json.dumps(..., allow_nan=False)` accepts.

Reports, rule evidence and CLI `--format json` output all pass through `strict_json`
(`dumps` for text), so non-finite numbers are spelled one way everywhere: "NaN",
"Infinity", "-Infinity".
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def strict_json(value: Any, digits: int | None = None) -> Any:
    """`value` with numpy/torch values turned into Python ones, containers into dicts and
    lists, and non-finite floats into the strings above. `digits`: round finite floats to
    that many significant digits (rule evidence uses 6)."""
    if isinstance(value, dict):
        return {str(k): strict_json(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [strict_json(v, digits) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "Infinity" if x > 0 else "-Infinity"
        return x if digits is None else float(f"{x:.{digits}g}")
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "tolist"):
        return strict_json(value.tolist(), digits)
    return str(value)


def dumps(value: Any) -> str:
    """`value` as indented strict-JSON text: the one encoder of every `--format json`."""
    return json.dumps(strict_json(value), indent=2, allow_nan=False)
