"""Numbers and evidence as short human text: finding titles, tables, plot ticks, the CLI."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def fmt(value: Any, digits: int = 4) -> str:
    """A compact form of a number (`digits` significant digits), a list, a dict or anything.

    Integral values print as integers, magnitudes in [1e-3, 1e4) as plain decimals, the
    rest in exponent form; None is "-" (a missing table cell).
    """
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        if 1e-3 <= abs(value) < 1e4:
            return f"{value:.{digits}g}"
        return f"{value:.{digits - 1}e}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(fmt(v, digits) for v in value[:6])
        return f"[{shown}{', …' if len(value) > 6 else ''}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={fmt(v, digits)}" for k, v in value.items()) + "}"
    return str(value)


def pct(fraction: float) -> str:
    """A fraction as a percentage, keeping two significant digits below 1%."""
    if fraction >= 0.01 or fraction == 0:
        return f"{100 * fraction:.0f}%"
    return f"{100 * fraction:.2g}%"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def fmt_evidence(evidence: dict[str, Any], limit: int = 8) -> str:
    """A finding's evidence on one line: the first `limit` items, each clipped."""
    items = list(evidence.items())
    text = "; ".join(f"{k}={_clip(fmt(v), 90)}" for k, v in items[:limit])
    return text + ("; …" if len(items) > limit else "")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"
