"""The report: what a run says about itself, ranked findings first, evidence tables after.

`build_report(run)` turns a loaded `Run` (riswb.runlog) into a `Report`: a summary (id,
status, steps, optimizer steps, duration, final and best losses, reader/manifest
warnings), the ranked findings and unchecked rules of `riswb.diagnose.rules.diagnose`, and evidence
tables built straight from the run log (internals.md §3). Three renderers read the same
model: `render_table` (rich, for a terminal), `render_json` (one strict-JSON object;
non-finite numbers become the strings "NaN", "Infinity", "-Infinity") and
`render_markdown`.

A table whose data the run does not hold is left out and named in `Report.absent`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from riswb.errors import RiswbError
from riswb.jsonsafe import strict_json
from riswb.runlog import Run

FORMATS = ("table", "json", "markdown")
SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
MAX_ROWS = 20  # rows per table in table/markdown output (JSON keeps them all)


# --------------------------------------------------------------------------- diagnosis


def run_diagnosis(run: Run, thresholds: Any = None) -> Any:
    """`riswb.diagnose.rules.diagnose(run, thresholds)`; a RiswbError when the rules are missing."""
    try:
        from riswb.diagnose.rules import diagnose
    except ImportError as error:
        raise RiswbError(f"the diagnosis rules are not available: {error}") from None
    return diagnose(run, thresholds=thresholds)


def finding_dict(finding: Any) -> dict:
    """A finding as a plain dict with at least the docs/design.md §5 fields."""
    if hasattr(finding, "to_dict"):
        data = dict(finding.to_dict())
    elif isinstance(finding, dict):
        data = dict(finding)
    else:
        data = dict(vars(finding))
    data.setdefault("id", "?")
    data.setdefault("severity", "info")
    data.setdefault("title", data["id"])
    data.setdefault("evidence", {})
    data.setdefault("fix", "")
    return data


def diagnosis_parts(diagnosis: Any) -> tuple[list[dict], dict[str, str]]:
    """(findings as dicts in their ranked order, unchecked id -> reason)."""
    findings = [finding_dict(f) for f in getattr(diagnosis, "findings", [])]
    unchecked = {str(k): str(v) for k, v in dict(getattr(diagnosis, "unchecked", {})).items()}
    return findings, unchecked


def parse_thresholds(overrides: list[str] | None) -> Any:
    """`["name=value", ...]` -> a `riswb.diagnose.rules.Thresholds` with those fields replaced."""
    if not overrides:
        return None
    import dataclasses

    try:
        from riswb.diagnose.rules import Thresholds
    except ImportError as error:
        raise RiswbError(f"the diagnosis rules are not available: {error}") from None
    defaults = Thresholds()
    known = {f.name: f for f in dataclasses.fields(Thresholds)}
    changes: dict[str, Any] = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in known:
            choices = ", ".join(sorted(known))
            raise RiswbError(f"--threshold expects NAME=VALUE with NAME one of: {choices}")
        current = getattr(defaults, name)
        try:
            if isinstance(current, bool):
                value: Any = text.strip().lower() in ("1", "true", "yes", "on")
            elif isinstance(current, int):
                value = int(text)
            else:
                value = float(text)
        except ValueError:
            raise RiswbError(f"--threshold {name}: {text!r} is not a number") from None
        changes[name] = value
    return dataclasses.replace(defaults, **changes)


# --------------------------------------------------------------------------- model


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": [dict(zip(self.columns, row, strict=False)) for row in self.rows],
            "note": self.note,
        }


@dataclass
class Report:
    path: str
    summary: dict
    findings: list[dict]
    unchecked: dict[str, str]
    tables: list[Table]
    absent: dict[str, str] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)
    plots_skipped: dict[str, str] = field(default_factory=dict)

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)

    @property
    def counts(self) -> dict[str, int]:
        counts = {"error": 0, "warning": 0, "info": 0}
        for finding in self.findings:
            counts[finding["severity"]] = counts.get(finding["severity"], 0) + 1
        return counts

    def to_dict(self) -> dict:
        return {
            "run": self.summary.get("id"),
            "path": self.path,
            "summary": self.summary,
            "counts": self.counts,
            "findings": self.findings,
            "unchecked": self.unchecked,
            "tables": {t.name: t.to_dict() for t in self.tables},
            "absent": self.absent,
            "plots": self.plots,
            "plots_skipped": self.plots_skipped,
        }


# --------------------------------------------------------------------------- helpers


def _f(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out


def _arr(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)


def _last_finite(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else None


def _columns(frame: pd.DataFrame, prefix: str = "") -> list[str]:
    skip = {"step", "opt_step", "time"}
    return [c for c in frame.columns if c not in skip and c.startswith(prefix)]


def _nanmedian(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def _parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return _dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def fmt(value: Any) -> str:
    """A compact human form of a number (4 significant digits), a list, or anything."""
    if value is None:
        return "-"
    if isinstance(value, bool):
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
        if 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(fmt(v) for v in value[:6])
        return f"[{shown}{', …' if len(value) > 6 else ''}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def fmt_evidence(evidence: Any, limit: int = 8) -> str:
    if not isinstance(evidence, dict):
        return fmt(evidence)
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


# --------------------------------------------------------------------------- summary


def summarize(run: Run) -> dict:
    """Run-level facts: id, status, steps, opt steps, duration, final/best loss, warnings."""
    manifest = run.manifest
    loss = run.kind("loss")
    cadence = run.kind("cadence")
    update = run.kind("param_update")

    steps = None
    if "loss" in cadence and len(cadence):
        steps = _f(cadence["loss"].iloc[-1])
    if steps is None and len(loss):
        steps = float(loss["step"].max()) + 1
    opt_steps = None
    if "optimizer_step" in cadence and len(cadence):
        opt_steps = _f(cadence["optimizer_step"].iloc[-1])
    if opt_steps is None and "opt_step" in update and len(update):
        opt_steps = _f(update["opt_step"].max())

    started = _parse_time(manifest.get("started_at"))
    ended = _parse_time(manifest.get("ended_at"))
    if ended is None and run._event_records:
        times = [r.get("time") for r in run._event_records if isinstance(r.get("time"), float)]
        ended = max(times) if times else None
    if ended is None:
        scalars = run.path / "scalars.jsonl"
        ended = scalars.stat().st_mtime if scalars.exists() else None
    duration = ended - started if started is not None and ended is not None else None

    final_loss = best_loss = best_step = None
    final_terms: dict[str, float | None] = {}
    nonfinite_total = False
    if "total" in loss and len(loss):
        total = _arr(loss, "total")
        final_loss = float(total[-1])
        nonfinite_total = bool((~np.isfinite(total)).any())
        if np.isfinite(total).any():
            index = int(np.nanargmin(np.where(np.isfinite(total), total, np.nan)))
            best_loss, best_step = float(total[index]), int(loss["step"].iloc[index])
        for term in _columns(loss):
            if term != "total":
                final_terms[term] = _last_finite(_arr(loss, term))

    warnings = list(run.warnings)
    for message in manifest.get("warnings") or []:
        if message not in warnings:
            warnings.append(str(message))

    return {
        "id": run.id,
        "path": str(run.path),
        "status": run.status,
        "name": (manifest.get("config") or {}).get("name") or manifest.get("name"),
        "seed": manifest.get("seed"),
        "started_at": manifest.get("started_at"),
        "ended_at": manifest.get("ended_at"),
        "steps": int(steps) if steps is not None else None,
        "opt_steps": int(opt_steps) if opt_steps is not None else None,
        "duration_s": round(duration, 3) if duration is not None else None,
        "final_loss": final_loss,
        "best_loss": best_loss,
        "best_step": best_step,
        "nonfinite_loss": nonfinite_total,
        "final_terms": final_terms,
        "git_sha": manifest.get("git_sha"),
        "versions": manifest.get("versions") or {},
        "warnings": warnings,
    }


# --------------------------------------------------------------------------- tables


def _loss_table(run: Run) -> Table | None:
    loss = run.kind("loss")
    terms = [c for c in _columns(loss) if c != "total"]
    if not len(loss) or not (terms or "total" in loss):
        return None
    weights_frame = run.kind("loss_weight")
    weights: dict[str, float | None] = {}
    changed: set[str] = set()
    for term in _columns(weights_frame):
        values = _arr(weights_frame, term)
        weights[term] = float(values[-1]) if values.size else None
        if np.unique(values[np.isfinite(values)]).size > 1:
            changed.add(term)
    steps = loss["step"].to_numpy()
    rows = []
    for term in terms + (["total"] if "total" in loss else []):
        values = _arr(loss, term)
        finite = np.isfinite(values)
        first = float(values[finite][0]) if finite.any() else None
        last = _last_finite(values)
        if finite.any():
            index = int(np.nanargmin(np.where(finite, values, np.nan)))
            low, low_step = float(values[index]), int(steps[index])
        else:
            low = low_step = None
        change = None
        if first not in (None, 0.0) and last is not None:
            change = (last - first) / abs(first)
        weight = weights.get(term) if term != "total" else None
        mark = " (changed)" if term in changed else ""
        rows.append(
            [
                term,
                (fmt(weight) + mark) if weight is not None else "-",
                first,
                last,
                low,
                low_step,
                f"{change * 100:+.1f}%" if change is not None else "-",
                int((~finite).sum()),
            ]
        )
    zero = [t for t, w in weights.items() if w == 0]
    note = f"weight 0 (trains nothing): {', '.join(zero)}" if zero else ""
    if not weights:
        note = "no loss_weight records: the weights actually used are unknown"
    return Table(
        "loss_terms",
        "Loss terms (unweighted values; weight actually used)",
        ["term", "weight", "first", "last", "min", "min step", "change", "non-finite"],
        rows,
        note,
    )


def _grad_table(run: Run) -> Table | None:
    grads = run.kind("term_grad")
    terms = _columns(grads)
    if not len(grads) or not terms:
        return None
    matrix = np.column_stack([_arr(grads, t) for t in terms])
    with np.errstate(invalid="ignore", divide="ignore"):
        sums = np.nansum(np.where(np.isfinite(matrix), matrix, np.nan), axis=1, keepdims=True)
        shares = matrix / sums
    nonfinite = run.kind("term_nonfinite")
    rows = []
    for i, term in enumerate(terms):
        bad = int(np.nansum(_arr(nonfinite, term))) if term in nonfinite else None
        column = matrix[:, i]
        rows.append(
            [
                term,
                _nanmedian(column),
                _last_finite(column),
                float(np.nanmax(column)) if np.isfinite(column).any() else None,
                f"{_nanmedian(shares[:, i]) * 100:.1f}%"
                if _nanmedian(shares[:, i]) is not None
                else "-",
                int((column == 0).sum()),
                bad,
            ]
        )
    return Table(
        "term_gradients",
        f"Gradient norm per loss term ‖∂(w·term)/∂θ‖ ({len(grads)} sampled steps)",
        ["term", "median", "last", "max", "median share", "zero steps", "non-finite elems"],
        rows,
    )


def _cosine_table(run: Run) -> Table | None:
    cos = run.kind("term_cosine")
    pairs = _columns(cos)
    if not len(cos) or not pairs:
        return None
    rows = []
    for pair in pairs:
        values = _arr(cos, pair)
        finite = values[np.isfinite(values)]
        if not finite.size:
            continue
        rows.append(
            [
                pair.replace("|", " · "),
                float(finite.mean()),
                float(finite.min()),
                f"{(finite < 0).mean() * 100:.0f}%",
            ]
        )
    rows.sort(key=lambda r: r[1])
    return Table(
        "term_cosine",
        "Cosine between loss terms' gradients (most opposed first)",
        ["pair", "mean", "min", "steps < 0"],
        rows,
    )


def _module_table(run: Run) -> Table | None:
    norms = run.kind("grad_norm")
    names = _columns(norms)
    if not len(norms) or not names:
        return None
    rows = []
    for name in names:
        values = _arr(norms, name)
        rows.append(
            [
                name.removeprefix("module/"),
                _nanmedian(values),
                _last_finite(values),
                float(np.nanmax(values)) if np.isfinite(values).any() else None,
                int((values == 0).sum()),
            ]
        )
    return Table(
        "grad_norms",
        "Raw gradient norm by module (before clipping)",
        ["module", "median", "last", "max", "zero steps"],
        rows,
    )


def _update_table(run: Run) -> Table | None:
    update = run.kind("param_update")
    if not len(update) or "ratio" not in update:
        return None
    tiny = 1e-12
    rows = []
    ratio = _arr(update, "ratio")
    moving = "frac_moving" in update
    rows.append(
        [
            "all",
            _nanmedian(ratio),
            _last_finite(ratio),
            f"{(ratio > tiny).mean() * 100:.1f}%",
            _nanmedian(_arr(update, "frac_moving")) if moving else None,
        ]
    )
    for column in _columns(update, "group/"):
        values = _arr(update, column)
        group = column.removeprefix("group/").removesuffix("/ratio")
        rows.append(
            [
                group,
                _nanmedian(values),
                _last_finite(values),
                f"{(values > tiny).mean() * 100:.1f}%",
                None,
            ]
        )
    return Table(
        "param_update",
        f"Δparam per optimizer step, ‖Δθ‖/‖θ‖ ({len(update)} logged steps)",
        ["group", "median ratio", "last ratio", "steps moving", "median frac tensors moving"],
        rows,
    )


def _lr_table(run: Run) -> Table | None:
    lr = run.kind("lr")
    groups = _columns(lr, "group/")
    if not len(lr) or not groups:
        return None
    rows = []
    for column in groups:
        values = _arr(lr, column)
        rows.append(
            [
                column.removeprefix("group/"),
                float(values[0]),
                float(np.nanmax(values)) if np.isfinite(values).any() else None,
                _last_finite(values),
                f"{(values == 0).mean() * 100:.1f}%",
            ]
        )
    return Table(
        "lr",
        "Learning rate per parameter group",
        ["group", "first", "max", "last", "steps at 0"],
        rows,
    )


def _coverage_table(run: Run) -> Table | None:
    events = run.events_of("coverage")
    if not events:
        return None
    event = events[0]
    rows: list[list[Any]] = []
    groups = event.get("groups") or {}
    if isinstance(groups, dict):
        for group, modules in groups.items():
            if isinstance(modules, dict):
                text = ", ".join(f"{m} ({n})" for m, n in modules.items())
            else:
                text = fmt(modules)
            rows.append([f"group {group}", text])
    for key, label in (
        ("missing", "missing from optimizer"),
        ("duplicated", "in two groups"),
        ("zero_lr_groups", "groups with lr=0"),
        ("stale", "optimizer tensors not in model"),
    ):
        values = event.get(key) or []
        count = len(values) if isinstance(values, (list, tuple, dict)) else values
        shown = fmt(list(values)) if isinstance(values, (list, tuple)) and values else ""
        rows.append([label, f"{count}" + (f": {shown}" if shown else "")])
    problems = any(event.get(k) for k in ("missing", "duplicated", "zero_lr_groups", "stale"))
    return Table(
        "coverage",
        "Optimizer coverage (at start)",
        ["item", "value"],
        rows,
        "problems found" if problems else "every trainable param is in exactly one live group",
    )


def _nonfinite_table(run: Run) -> Table | None:
    frame = run.kind("nonfinite")
    keys = _columns(frame)
    if not len(frame) or not keys:
        return None
    rows = []
    steps = frame["step"].to_numpy()
    for key in keys:
        values = np.nan_to_num(_arr(frame, key), nan=0.0)
        hit = values > 0
        rows.append(
            [
                key,
                int(values.sum()),
                int(hit.sum()),
                int(steps[hit][0]) if hit.any() else None,
                int(steps[hit][-1]) if hit.any() else None,
            ]
        )
    return Table(
        "nonfinite",
        "Non-finite counts (raw gradients, before sanitization)",
        ["counter", "total", "records > 0", "first step", "last step"],
        rows,
    )


def _cadence_table(run: Run) -> Table | None:
    frame = run.kind("cadence")
    keys = _columns(frame)
    if not len(frame) or not keys:
        return None
    last = {k: _last_finite(_arr(frame, k)) for k in keys}
    rows = [[k, v] for k, v in last.items()]
    note = ""
    accumulation = (run.manifest.get("intent") or {}).get("accumulation", 1) or 1
    if last.get("loss") and last.get("optimizer_step") is not None:
        per = last["optimizer_step"] / last["loss"]
        expected = 1.0 / accumulation
        rows.append(["optimizer steps per loss call", per])
        note = f"intended {fmt(expected)} (accumulation {accumulation})"
    return Table("cadence", "Cadence (cumulative counts)", ["counter", "count"], rows, note)


def _clip_table(run: Run) -> Table | None:
    frame = run.kind("clip")
    if not len(frame) or "clipped" not in frame:
        return None
    clipped = np.nan_to_num(_arr(frame, "clipped"))
    rows = [
        ["steps clipped", f"{clipped.mean() * 100:.1f}%"],
        ["median pre-clip norm", _nanmedian(_arr(frame, "norm")) if "norm" in frame else None],
        ["max_norm", _last_finite(_arr(frame, "max_norm")) if "max_norm" in frame else None],
        ["median ratio", _nanmedian(_arr(frame, "ratio")) if "ratio" in frame else None],
    ]
    return Table("clip", "Gradient clipping", ["item", "value"], rows)


def _swap_table(run: Run) -> Table | None:
    events = run.events_of("weights_swapped")
    if not events:
        return None
    rows = [
        [e.get("step"), e.get("kind"), e.get("params_changed"), e.get("restored"), e.get("noop")]
        for e in events
    ]
    bad = sum(1 for e in events if e.get("restored") is False or e.get("noop"))
    return Table(
        "weight_swaps",
        "Weight swaps (EMA/SWA)",
        ["step", "kind", "params changed", "restored", "no-op"],
        rows,
        f"{bad} of {len(events)} not restored or no-op" if bad else "",
    )


def _events_table(run: Run) -> Table | None:
    if not run._event_records:
        return None
    stats: dict[str, list] = {}
    for record in run._event_records:
        name = str(record.get("event"))
        step = record.get("step")
        entry = stats.setdefault(name, [0, step, step])
        entry[0] += int(record.get("count", 1)) if name == "step_skipped" else 1
        entry[2] = step
    rows = [[name, *values] for name, values in stats.items()]
    errors = run.events_of("probe_error")
    note = "; ".join(f"{e.get('probe')}: {e.get('error')}" for e in errors[:3])
    return Table(
        "events",
        "Events",
        ["event", "count", "first step", "last step"],
        rows,
        f"probe errors: {note}" if note else "",
    )


def _eval_table(run: Run) -> Table | None:
    frame = run.kind("eval")
    keys = _columns(frame)
    if not len(frame) or not keys:
        return None
    rows = []
    for key in keys:
        values = _arr(frame, key)
        finite = np.isfinite(values)
        rows.append(
            [
                key,
                float(values[finite][0]) if finite.any() else None,
                _last_finite(values),
                float(values[finite].min()) if finite.any() else None,
            ]
        )
    return Table(
        "eval",
        f"Evaluation metrics ({len(frame)} evaluations)",
        ["metric", "first", "last", "min"],
        rows,
    )


def _spectrum_table(run: Run) -> Table | None:
    frame = run.kind("spectrum")
    if not len(frame):
        return None
    last = frame.iloc[-1]
    rows = []
    for metric in ("eff_rank", "gap", "top_k_energy"):
        pred, true = last.get(f"{metric}_pred"), last.get(f"{metric}_true")
        if pred is not None or true is not None:
            rows.append([metric, _f(pred), _f(true)])
    if "scale_ratio" in last:
        rows.append(["scale_ratio tr(R_pred)/tr(R_true)", _f(last["scale_ratio"]), 1.0])
    return Table(
        "spectrum",
        f"Spectrum of R_pred vs R_true (step {int(last['step'])})",
        ["metric", "R_pred", "R_true"],
        rows,
    )


def latest_spectra(run: Run) -> tuple[int | None, dict[str, list[float]]]:
    """(step, name -> eigenvalues) of the latest evaluation in spectra.jsonl."""
    records = run._spectra_records
    if not records:
        return None, {}
    step = max(int(r.get("step", -1)) for r in records)
    out = {}
    for record in records:
        if int(record.get("step", -1)) == step and isinstance(record.get("values"), list):
            out[str(record.get("name"))] = [float(v) for v in record["values"]]
    return step, out


def _eigen_table(run: Run) -> Table | None:
    step, spectra = latest_spectra(run)
    if not spectra:
        return None
    names = sorted(spectra, key=lambda n: {"R_pred": 0, "R_true": 1, "R_samp": 2}.get(n, 3))
    length = max(len(v) for v in spectra.values())
    shown = min(length, 8)
    rows = [
        [i + 1, *[spectra[n][i] if i < len(spectra[n]) else None for n in names]]
        for i in range(shown)
    ]
    note = f"top {shown} of {length} eigenvalues" if shown < length else ""
    return Table(
        "eigenvalues",
        f"Eigenvalues at the latest evaluation (step {step})",
        ["#", *names],
        rows,
        note,
    )


TABLE_BUILDERS: list[tuple[str, Callable[[Run], Table | None], str]] = [
    ("loss_terms", _loss_table, "no loss records"),
    ("term_gradients", _grad_table, "no term_grad records (term gradient probe off?)"),
    ("term_cosine", _cosine_table, "no term_cosine records"),
    ("grad_norms", _module_table, "no grad_norm records"),
    ("param_update", _update_table, "no param_update records"),
    ("lr", _lr_table, "no lr records"),
    ("coverage", _coverage_table, "no coverage event"),
    ("nonfinite", _nonfinite_table, "no nonfinite records"),
    ("cadence", _cadence_table, "no cadence records"),
    ("clip", _clip_table, "no clip records"),
    ("weight_swaps", _swap_table, "no weights_swapped events"),
    ("eval", _eval_table, "no eval records"),
    ("spectrum", _spectrum_table, "no spectrum records"),
    ("eigenvalues", _eigen_table, "no spectra.jsonl records"),
    ("events", _events_table, "no events"),
]


def build_tables(run: Run) -> tuple[list[Table], dict[str, str]]:
    tables, absent = [], {}
    for name, builder, reason in TABLE_BUILDERS:
        table = builder(run)
        if table is None:
            absent[name] = reason
        else:
            tables.append(table)
    return tables, absent


def build_report(run: Run, thresholds: Any = None, diagnosis: Any = None) -> Report:
    """The report model of a run: summary, ranked findings, unchecked rules, tables."""
    if diagnosis is None:
        diagnosis = run_diagnosis(run, thresholds)
    findings, unchecked = diagnosis_parts(diagnosis)
    tables, absent = build_tables(run)
    return Report(
        path=str(run.path),
        summary=summarize(run),
        findings=findings,
        unchecked=unchecked,
        tables=tables,
        absent=absent,
    )


# --------------------------------------------------------------------------- renderers


def render_json(report: Report) -> str:
    return json.dumps(strict_json(report.to_dict()), indent=2, allow_nan=False)


def _summary_pairs(summary: dict) -> list[tuple[str, str]]:
    pairs = [
        ("run", summary["id"]),
        ("status", summary["status"]),
        ("steps", fmt(summary["steps"])),
        ("optimizer steps", fmt(summary["opt_steps"])),
        ("duration", fmt_duration(summary["duration_s"])),
        ("final loss", fmt(summary["final_loss"])),
    ]
    if summary["best_loss"] is not None:
        pairs.append(("best loss", f"{fmt(summary['best_loss'])} at step {summary['best_step']}"))
    if summary["final_terms"]:
        terms = summary["final_terms"].items()
        pairs.append(("final terms", ", ".join(f"{k}={fmt(v)}" for k, v in terms)))
    return pairs


def render_table(report: Report, console: Any = None) -> None:
    """Print the report with rich: summary panel, findings, tables."""
    from rich.console import Console, Group
    from rich.panel import Panel
    from rich.table import Table as RichTable
    from rich.text import Text

    console = console or Console()
    summary = report.summary
    grid = RichTable.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in _summary_pairs(summary):
        style = ""
        if key == "status":
            style = {"completed": "green", "crashed": "red", "killed": "red"}.get(value, "yellow")
        grid.add_row(key, Text(str(value), style=style))
    for warning in summary["warnings"]:
        grid.add_row(Text("warning", style="yellow"), Text(warning, style="yellow"))
    counts = report.counts
    headline = Text(
        f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info",
        style="bold red" if counts["error"] else ("yellow" if counts["warning"] else "green"),
    )
    console.print(Panel(Group(grid, headline), title="riswb report", expand=False))

    if report.findings:
        for rank, finding in enumerate(report.findings, start=1):
            severity = finding["severity"]
            line = Text(f"{rank}. ")
            line.append(f"[{severity.upper()}] ", style=SEVERITY_STYLE.get(severity, ""))
            line.append(f"{finding['id']}", style="bold")
            line.append(f" — {finding['title']}")
            console.print(line)
            if finding["evidence"]:
                console.print(Text(f"   evidence: {fmt_evidence(finding['evidence'])}"))
            if finding["fix"]:
                console.print(Text(f"   fix: {finding['fix']}", style="green"))
    else:
        console.print(Text("No findings: nothing wrong that the rules can see.", style="green"))
    if report.unchecked:
        items = "; ".join(f"{k} ({v})" for k, v in report.unchecked.items())
        console.print(Text(f"not checked: {items}", style="dim"))

    for table in report.tables:
        console.print(Text(table.title, style="bold"))
        rich_table = RichTable(show_lines=False)
        for column in table.columns:
            rich_table.add_column(column, overflow="fold")
        for row in table.rows[:MAX_ROWS]:
            rich_table.add_row(*[Text(fmt(cell)) for cell in row])
        console.print(rich_table)
        extra = len(table.rows) - MAX_ROWS
        note = table.note + (f" (+{extra} rows: --format json shows all)" if extra > 0 else "")
        if note.strip():
            console.print(Text(f"  {note.strip()}", style="dim"))
    if report.absent:
        console.print(Text("absent: " + ", ".join(report.absent), style="dim"))
    if report.plots:
        console.print(Text("plots:", style="bold"))
        for path in report.plots.values():
            console.print(Text(f"  {path}"))
    for name, reason in report.plots_skipped.items():
        console.print(Text(f"plot {name} skipped: {reason}", style="dim"))


def _md_cell(value: Any) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    summary = report.summary
    out = [f"# riswb report: {summary['id']}", ""]
    for key, value in _summary_pairs(summary):
        out.append(f"- **{key}**: {value}")
    for warning in summary["warnings"]:
        out.append(f"- **warning**: {warning}")
    counts = report.counts
    out += [
        "",
        "## Findings",
        "",
        f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info",
        "",
    ]
    for rank, finding in enumerate(report.findings, start=1):
        out.append(
            f"{rank}. **{finding['severity'].upper()}** `{finding['id']}`: {finding['title']}"
        )
        if finding["evidence"]:
            out.append(f"   - evidence: {fmt_evidence(finding['evidence'])}")
        if finding["fix"]:
            out.append(f"   - fix: {finding['fix']}")
    if report.unchecked:
        items = "; ".join(f"`{k}` ({v})" for k, v in report.unchecked.items())
        out += ["", f"Not checked: {items}"]
    for table in report.tables:
        out += ["", f"## {table.title}", ""]
        out.append("| " + " | ".join(table.columns) + " |")
        out.append("|" + "---|" * len(table.columns))
        for row in table.rows[:MAX_ROWS]:
            out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
        if table.note:
            out += ["", f"_{table.note}_"]
    if report.absent:
        out += ["", "Absent: " + ", ".join(report.absent)]
    if report.plots:
        out += ["", "## Plots", ""]
        for name, path in report.plots.items():
            out.append(f"![{name}]({path})")
    for name, reason in report.plots_skipped.items():
        out.append(f"- plot `{name}` skipped: {reason}")
    return "\n".join(out) + "\n"


def render(report: Report, fmt_name: str = "table") -> str | None:
    """Render in one of FORMATS; "table" prints with rich and returns None."""
    if fmt_name == "json":
        return render_json(report)
    if fmt_name == "markdown":
        return render_markdown(report)
    if fmt_name == "table":
        render_table(report)
        return None
    raise RiswbError(f"unknown format {fmt_name!r} (choose from {', '.join(FORMATS)})")
