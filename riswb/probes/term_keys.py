"""Loss terms as the per-term probes see them: which terms carry a gradient to check, and
unambiguous composite keys for pairs of them ("a|b" in `term_cosine*` records).

Term names may contain any character. In a pair key each name is escaped — `\\` becomes
`\\\\` and `|` becomes `\\|` — and the two are joined by one unescaped `|`: a name without
those characters reads as itself ("fit|reg"), and every key splits back into exactly one
pair (split at the only `|` not preceded by an odd run of backslashes).
"""

from __future__ import annotations

from typing import Any


def gradient_terms(payload: dict[str, Any]) -> dict[str, Any]:
    """The AFTER_LOSS terms whose gradients the probes check: all but the constant ones
    (Python numbers passed to `wb.loss`, which have no gradient by design)."""
    terms = payload.get("terms") or {}
    constants = payload.get("constants")
    if not constants:
        return terms
    return {name: term for name, term in terms.items() if name not in constants}


def escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace("|", "\\|")


def pair_key(a: str, b: str) -> str:
    return f"{escape(a)}|{escape(b)}"


def split_pair_key(key: str) -> tuple[str, str]:
    """The two names of a `pair_key` (the inverse)."""
    parts, current, i = [], [], 0
    while i < len(key):
        char = key[i]
        if char == "\\" and i + 1 < len(key):
            current.append(key[i + 1])
            i += 2
            continue
        if char == "|":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    if len(parts) != 2:
        raise ValueError(f"not a pair key: {key!r}")
    return parts[0], parts[1]
