"""Evidence tables of the report, built straight from the run log (docs/internals.md §3).

Each builder returns a `Table` (cells are raw values; renderers format them) or None when
the run does not hold its data; `build_tables` names the absent ones with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from riswb.diagnose.frames import col, latest_spectra, value_columns
from riswb.diagnose.rules import Thresholds
from riswb.diagnose.text import fmt
from riswb.runlog import Run


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]  # cells: numbers, strings or None (a missing value)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": [dict(zip(self.columns, row, strict=False)) for row in self.rows],
            "note": self.note,
        }



def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def last_finite(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else None


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def _loss_table(run: Run, th: Thresholds) -> Table | None:
    loss = run.kind("loss")
    terms = [c for c in value_columns(loss) if c != "total"]
    if not len(loss) or not (terms or "total" in loss):
        return None
    weights_frame = run.kind("loss_weight")
    weights: dict[str, float | None] = {}
    changed: set[str] = set()
    for term in value_columns(weights_frame):
        values = col(weights_frame, term)
        weights[term] = float(values[-1]) if values.size else None
        if np.unique(values[np.isfinite(values)]).size > 1:
            changed.add(term)
    steps = loss["step"].to_numpy()
    rows = []
    for term in terms + (["total"] if "total" in loss else []):
        values = col(loss, term)
        finite = np.isfinite(values)
        first = float(values[finite][0]) if finite.any() else None
        last = last_finite(values)
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


def _grad_table(run: Run, th: Thresholds) -> Table | None:
    grads = run.kind("term_grad")
    terms = value_columns(grads)
    if not len(grads) or not terms:
        return None
    matrix = np.column_stack([col(grads, t) for t in terms])
    with np.errstate(invalid="ignore", divide="ignore"):
        sums = np.nansum(np.where(np.isfinite(matrix), matrix, np.nan), axis=1, keepdims=True)
        shares = matrix / sums
    nonfinite = run.kind("term_nonfinite")
    rows = []
    for i, term in enumerate(terms):
        bad = int(np.nansum(col(nonfinite, term))) if term in nonfinite else None
        column = matrix[:, i]
        rows.append(
            [
                term,
                _median(column),
                last_finite(column),
                float(np.nanmax(column)) if np.isfinite(column).any() else None,
                f"{_median(shares[:, i]) * 100:.1f}%"
                if _median(shares[:, i]) is not None
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


def _cosine_table(run: Run, th: Thresholds) -> Table | None:
    cos = run.kind("term_cosine")
    pairs = value_columns(cos)
    if not len(cos) or not pairs:
        return None
    rows = []
    for pair in pairs:
        values = col(cos, pair)
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


def _module_table(run: Run, th: Thresholds) -> Table | None:
    norms = run.kind("grad_norm")
    names = value_columns(norms)
    if not len(norms) or not names:
        return None
    rows = []
    for name in names:
        values = col(norms, name)
        rows.append(
            [
                name.removeprefix("module/"),
                _median(values),
                last_finite(values),
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


def _update_table(run: Run, th: Thresholds) -> Table | None:
    update = run.kind("param_update")
    if not len(update) or "ratio" not in update:
        return None
    rows = []
    ratio = col(update, "ratio")
    moving = "frac_moving" in update
    rows.append(
        [
            "all",
            _median(ratio),
            last_finite(ratio),
            f"{(ratio > th.min_update_ratio).mean() * 100:.1f}%",
            _median(col(update, "frac_moving")) if moving else None,
        ]
    )
    for column in value_columns(update, "group/"):
        values = col(update, column)
        group = column.removeprefix("group/").removesuffix("/ratio")
        rows.append(
            [
                group,
                _median(values),
                last_finite(values),
                f"{(values > th.min_update_ratio).mean() * 100:.1f}%",
                None,
            ]
        )
    return Table(
        "param_update",
        f"Δparam per optimizer step, ‖Δθ‖/‖θ‖ ({len(update)} logged steps)",
        ["group", "median ratio", "last ratio", "steps moving", "median frac tensors moving"],
        rows,
    )


def _lr_table(run: Run, th: Thresholds) -> Table | None:
    lr = run.kind("lr")
    groups = value_columns(lr, "group/")
    if not len(lr) or not groups:
        return None
    rows = []
    for column in groups:
        values = col(lr, column)
        rows.append(
            [
                column.removeprefix("group/"),
                float(values[0]),
                float(np.nanmax(values)) if np.isfinite(values).any() else None,
                last_finite(values),
                f"{(values == 0).mean() * 100:.1f}%",
            ]
        )
    return Table(
        "lr",
        "Learning rate per parameter group",
        ["group", "first", "max", "last", "steps at 0"],
        rows,
    )


def _coverage_table(run: Run, th: Thresholds) -> Table | None:
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


def _nonfinite_table(run: Run, th: Thresholds) -> Table | None:
    frame = run.kind("nonfinite")
    keys = value_columns(frame)
    if not len(frame) or not keys:
        return None
    rows = []
    steps = frame["step"].to_numpy()
    for key in keys:
        values = np.nan_to_num(col(frame, key), nan=0.0)
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


def _cadence_table(run: Run, th: Thresholds) -> Table | None:
    frame = run.kind("cadence")
    keys = value_columns(frame)
    if not len(frame) or not keys:
        return None
    last = {k: last_finite(col(frame, k)) for k in keys}
    rows = [[k, v] for k, v in last.items()]
    note = ""
    accumulation = (run.manifest.get("intent") or {}).get("accumulation", 1) or 1
    if last.get("loss") and last.get("optimizer_step") is not None:
        per = last["optimizer_step"] / last["loss"]
        expected = 1.0 / accumulation
        rows.append(["optimizer steps per loss call", per])
        note = f"intended {fmt(expected)} (accumulation {accumulation})"
    return Table("cadence", "Cadence (cumulative counts)", ["counter", "count"], rows, note)


def _clip_table(run: Run, th: Thresholds) -> Table | None:
    frame = run.kind("clip")
    if not len(frame) or "clipped" not in frame:
        return None
    clipped = np.nan_to_num(col(frame, "clipped"))
    rows = [
        ["steps clipped", f"{clipped.mean() * 100:.1f}%"],
        ["median pre-clip norm", _median(col(frame, "norm")) if "norm" in frame else None],
        ["max_norm", last_finite(col(frame, "max_norm")) if "max_norm" in frame else None],
        ["median ratio", _median(col(frame, "ratio")) if "ratio" in frame else None],
    ]
    return Table("clip", "Gradient clipping", ["item", "value"], rows)


def _swap_table(run: Run, th: Thresholds) -> Table | None:
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


def _events_table(run: Run, th: Thresholds) -> Table | None:
    if not run.event_records:
        return None
    stats: dict[str, list] = {}
    for record in run.event_records:
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


def _eval_table(run: Run, th: Thresholds) -> Table | None:
    frame = run.kind("eval")
    keys = value_columns(frame)
    if not len(frame) or not keys:
        return None
    rows = []
    for key in keys:
        values = col(frame, key)
        finite = np.isfinite(values)
        rows.append(
            [
                key,
                float(values[finite][0]) if finite.any() else None,
                last_finite(values),
                float(values[finite].min()) if finite.any() else None,
            ]
        )
    return Table(
        "eval",
        f"Evaluation metrics ({len(frame)} evaluations)",
        ["metric", "first", "last", "min"],
        rows,
    )


def _spectrum_table(run: Run, th: Thresholds) -> Table | None:
    frame = run.kind("spectrum")
    if not len(frame):
        return None
    last = frame.iloc[-1]
    rows = []
    for metric in ("eff_rank", "gap", "top_k_energy"):
        pred, true = last.get(f"{metric}_pred"), last.get(f"{metric}_true")
        if pred is not None or true is not None:
            rows.append([metric, _float(pred), _float(true)])
    if "scale_ratio" in last:
        rows.append(["scale_ratio tr(R_pred)/tr(R_true)", _float(last["scale_ratio"]), 1.0])
    return Table(
        "spectrum",
        f"Spectrum of R_pred vs R_true (step {int(last['step'])})",
        ["metric", "R_pred", "R_true"],
        rows,
    )


def _eigen_table(run: Run, th: Thresholds) -> Table | None:
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


TABLE_BUILDERS: list[tuple[str, Callable[[Run, Thresholds], Table | None], str]] = [
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


def build_tables(run: Run, th: Thresholds) -> tuple[list[Table], dict[str, str]]:
    """The tables whose data the run holds, and for each other table why it is absent."""
    tables, absent = [], {}
    for name, builder, reason in TABLE_BUILDERS:
        table = builder(run, th)
        if table is None:
            absent[name] = reason
        else:
            tables.append(table)
    return tables, absent
