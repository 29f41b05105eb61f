"""What the reader accepts from a run directory (docs/internals.md §3 is the contract).

Every JSONL line is parsed on its own and checked against its stream's shape; a line that
is not JSON, too long, too deeply nested, not an object, without a valid `step`, or with a
field of the wrong type is dropped and counted, never raised. Scalars are the exception to
dropping whole records: a value that is a list, an object, or an integer beyond int64 loses
only that value (numbers, booleans, null and text are scalars: a user's `eval` metric may
be text, which riswb/diagnose/export writes as a text column). The manifest's known fields
are checked the same way; a wrong-typed field is removed, so that `manifest.get(...)` falls
back to its default downstream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_LINE = 4 << 20  # characters; riswb's longest records (coverage of a huge model) are KBs
MAX_INT = 1 << 63  # what numpy's int64/float64 frames hold without overflow
MAX_STEP = 1 << 53  # steps go through float64 blocks: exact below this
SHOWN = 3  # reasons quoted per file in a warning

INT, FLOAT, STR, BOOL, LIST, DICT = "integer", "number", "string", "boolean", "list", "object"

# Typed event payload fields (None is allowed: producers write it for "not known").
EVENT_FIELDS = {
    "time": FLOAT, "count": INT, "total": INT, "first_step": INT, "opt_step": INT,
    "params_changed": INT, "steps": INT, "scheduler_step": INT, "optimizer": INT,
    "restored": BOOL, "noop": BOOL,
    "kind": STR, "reason": STR, "probe": STR, "hook": STR, "error": STR, "path": STR,
    "metric": STR, "status": STR, "phase": STR, "errno": STR,
    "names": LIST, "tensors": LIST, "missing": LIST, "duplicated": LIST,
    "zero_lr_groups": LIST, "stale": LIST, "modules": LIST, "groups": DICT,
    "value": FLOAT,
}
# Manifest fields (docs/design.md §4, docs/internals.md §3); None only where the writer
# writes it.
MANIFEST_FIELDS = {
    "id": (STR,), "status": (STR,), "schema_version": (INT,), "argv": (LIST,),
    "config": (DICT,), "versions": (DICT,), "git_sha": (STR, None), "host": (STR,),
    "pid": (INT,), "probes": (LIST,), "warnings": (LIST,), "started_at": (STR,),
    "ended_at": (STR, None), "intent": (DICT,), "loss_terms": (LIST,), "first_step": (INT,),
    "baseline": (DICT,), "error": (DICT,), "log_error": (DICT,),
}


def _is(value: Any, kind: str | None) -> bool:
    if kind is None:
        return value is None
    if kind == INT:
        return type(value) is int and -MAX_INT <= value < MAX_INT
    if kind == FLOAT:
        return type(value) is float or (type(value) is int and -MAX_INT <= value < MAX_INT)
    return type(value) is {STR: str, BOOL: bool, LIST: list, DICT: dict}[kind]


_SCALAR_TYPES = frozenset((float, int, bool, type(None), str))


def _base(record: Any) -> str | None:
    """The reason a decoded line is not a record at all, or None."""
    if type(record) is not dict:
        return f"not a JSON object ({type(record).__name__})"
    step = record.get("step")
    if step is None:
        return "no step"
    if type(step) is not int or not 0 <= step < MAX_STEP:
        return f"step {_short(step)} is not a non-negative integer"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool)) else type(value).__name__
    return text if len(text) <= 24 else text[:21] + "..."


def check_scalars(record: dict) -> tuple[dict | None, str | None]:
    if type(record.get("kind")) is not str:
        return None, "kind is not a string"
    # one pass over every value: 100k-step runs hold ~1M
    bad = [key for key, value in record.items() if type(value) not in _SCALAR_TYPES or (
        type(value) is int and not -MAX_INT <= value < MAX_INT)]
    if not bad:
        return record, None
    kept = {key: value for key, value in record.items() if key not in bad}
    return kept, "non-scalar " + ", ".join(repr(key) for key in bad[:SHOWN]) + " dropped"


def check_spectra(record: dict) -> tuple[dict | None, str | None]:
    if type(record.get("name")) is not str:
        return None, "name is not a string"
    values = record.get("values")
    if type(values) is not list or not all(_is(v, FLOAT) for v in values):
        return None, "values is not a list of numbers"
    return record, None


def check_events(record: dict) -> tuple[dict | None, str | None]:
    if type(record.get("event")) is not str:
        return None, "event is not a string"
    for key, kind in EVENT_FIELDS.items():
        value = record.get(key)
        if value is not None and not _is(value, kind):
            return None, f"{key} is not a {kind}"
    return record, None


CHECKS = {"scalars": check_scalars, "spectra": check_spectra, "events": check_events}


@dataclass
class Problems:
    """The lines one file lost (dropped) or had repaired, with the first few reasons."""

    name: str
    dropped: int = 0
    repaired: int = 0
    reasons: list[str] = field(default_factory=list)

    def add(self, where: str, reason: str, dropped: bool = True) -> None:
        if dropped:
            self.dropped += 1
        else:
            self.repaired += 1
        if len(self.reasons) < SHOWN:
            self.reasons.append(f"{where}: {reason}")

    def warning(self) -> str | None:
        if not (self.dropped or self.repaired):
            return None
        counts = []
        if self.dropped:
            counts.append(f"dropped {self.dropped} bad line(s)")
        if self.repaired:
            counts.append(f"dropped values from {self.repaired} line(s)")
        more = "; ..." if self.dropped + self.repaired > len(self.reasons) else ""
        return f"{self.name}: {' and '.join(counts)} ({'; '.join(self.reasons)}{more})"


def _decode(line: str) -> tuple[Any, str | None]:
    if len(line) > MAX_LINE:
        return None, f"longer than {MAX_LINE} characters"
    try:
        return json.loads(line), None
    except RecursionError:
        return None, "nested too deeply"
    except ValueError:  # JSONDecodeError, or an integer with more digits than Python allows
        return None, "not valid JSON"


def parse_stream(path: Path, stream: str, problems: Problems) -> list[dict]:
    """The valid records of one JSONL stream, in file order; what was lost goes into
    `problems`. A file that cannot be read counts as one dropped line."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as error:
        problems.add("file", f"unreadable ({error.strerror or error})")
        return []
    check = CHECKS[stream]
    lines = text.split("\n")
    torn = len(lines) - 1 if lines[-1] and not lines[-1].isspace() else None  # no final "\n"
    records = []
    for number, line in enumerate(lines):
        if not line or line.isspace():
            continue
        record, reason = _decode(line)
        reason = reason or _base(record)
        if reason is None:
            record, reason = check(record)
        else:
            record = None
        if record is not None:
            records.append(record)
        if reason is not None:
            where = "torn last line" if number == torn else f"line {number + 1}"
            problems.add(where, reason, dropped=record is None)
    return records


def check_manifest(value: Any) -> tuple[dict | None, list[str]]:
    """The manifest with wrong-typed known fields removed, and what was removed; None when
    it is not a JSON object at all."""
    if type(value) is not dict:
        return None, [f"manifest.json is not a JSON object ({type(value).__name__})"]
    bad = [key for key, kinds in MANIFEST_FIELDS.items()
           if key in value and not any(_is(value[key], kind) for kind in kinds)]
    if not bad:
        return value, []
    kept = {key: item for key, item in value.items() if key not in bad}
    return kept, [f"manifest.json: ignored {', '.join(bad)} (wrong type)"]


def decode_manifest(text: str) -> tuple[dict | None, list[str]]:
    """check_manifest of the text; None with the reason when it is not JSON."""
    value, reason = _decode(text)
    if reason is not None:
        return None, [f"manifest.json is {reason}"]
    return check_manifest(value)
