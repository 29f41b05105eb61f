"""The TensorBoard target: event files written with the `tensorboard` package alone.

Protos come from `tensorboard.compat.proto` and the plugins' TensorFlow-free `*_pb` helpers,
so TensorFlow is never needed. Tags: every scalar record key as `<kind>/<key>` (`loss/total`,
`eval/nmse`, `grad_norm/module/head`, …) at the record's step, NaN/Inf kept (event files
hold float32, which has both); each spectra.jsonl record as a histogram `spectra/<name>` plus
scalars `spectrum/<name>/<i>` for its leading eigenvalues; the diagnosis as markdown text
under `findings`; the manifest config as hparams (nested keys dotted).
"""

from __future__ import annotations

import datetime as dt
import heapq
import numbers
from pathlib import Path

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from riswb.diagnose.rules import diagnose
from riswb.errors import RiswbError

SPECTRUM_SCALARS = 8  # leading eigenvalues also written as scalars: easier to read over time
HISTOGRAM_BINS = 30
RECORD_FIELDS = ("step", "kind", "time")
EVENT_GLOB = "events.out.tfevents.*"


def _timestamp(value) -> float | None:
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except (TypeError, ValueError):
        return None


def flatten(config: dict, prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested dicts → dotted keys; values hparams cannot hold (lists, None) → str()."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return flat


def findings_markdown(diagnosis) -> str:
    lines = [
        f"- **{f.id}** ({f.severity}): {f.title}" + (f" — fix: {f.fix}" if f.fix else "")
        for f in diagnosis.findings
    ] or ["No findings: every checked rule passed."]
    if diagnosis.unchecked:
        lines.append(f"\nNot checked: {', '.join(diagnosis.unchecked)}.")
    return "\n".join(lines)


def _histogram(values: np.ndarray) -> summary_pb2.HistogramProto | None:
    # buckets need finite bounds; a NaN eigenvalue still shows in the per-index scalars
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    counts, edges = np.histogram(finite, bins=min(HISTOGRAM_BINS, finite.size))
    return summary_pb2.HistogramProto(
        min=float(finite.min()),
        max=float(finite.max()),
        num=float(finite.size),
        sum=float(finite.sum()),
        sum_squares=float(np.square(finite).sum()),
        bucket_limit=edges[1:].tolist(),  # bucket i spans (limit[i-1], limit[i]]
        bucket=counts.astype(float).tolist(),
    )


def _event(step: int, wall_time: float, values: list[summary_pb2.Summary.Value]) -> event_pb2.Event:
    summary = summary_pb2.Summary(value=values)
    return event_pb2.Event(step=int(step), wall_time=float(wall_time), summary=summary)


def _scalar_events(run, start: float, counts: dict[str, int]):
    # raw records, not run.scalars: a key a record did not log must not become a NaN point
    # (run.scalars pads it), while a NaN the run did log must stay one
    for record in sorted(run._scalar_records, key=lambda record: record["step"]):
        kind = record.get("kind", "")
        values = [
            summary_pb2.Summary.Value(tag=f"{kind}/{key}", simple_value=float(value))
            for key, value in record.items()
            if key not in RECORD_FIELDS and isinstance(value, numbers.Real)
        ]
        counts[kind] += 1
        if values:
            yield _event(record["step"], record.get("time", start), values)


def _spectrum_events(run, start: float, counts: dict[str, int]):
    for record in sorted(run.spectrum_records, key=lambda record: record["step"]):
        name = record["name"]
        eigenvalues = np.asarray(record["values"], dtype=np.float64)
        values = [
            summary_pb2.Summary.Value(tag=f"spectrum/{name}/{i}", simple_value=float(value))
            for i, value in enumerate(eigenvalues[:SPECTRUM_SCALARS])
        ]
        histogram = _histogram(eigenvalues)
        if histogram is not None:
            values.append(summary_pb2.Summary.Value(tag=f"spectra/{name}", histo=histogram))
        counts["spectra"] += 1
        yield _event(record["step"], record.get("time", start), values)


def _hparams_events(run, start: float, counts: dict[str, int]):
    flat = flatten(run.manifest.get("config") or {})
    if not flat:
        return
    metrics = ["loss/total"] * ("loss" in run.kinds()) + [
        f"eval/{key}" for key in run.kind("eval").columns if key != "step"
    ]
    experiment = hparams_summary.hparams_config_pb(
        hparams=[hparams_summary.HParam(name) for name in flat],
        metrics=[hparams_summary.Metric(tag) for tag in metrics],
    )
    session = hparams_summary.hparams_pb(flat, trial_id=run.id, start_time_secs=start)
    counts["hparams"] = len(flat)
    yield _event(0, start, list(experiment.value))
    yield _event(0, start, list(session.value))


def write(run, directory: Path) -> tuple[list[Path], dict[str, int]]:
    if any(directory.glob(EVENT_GLOB)):
        raise RiswbError(
            f"{directory} already holds TensorBoard event files: a second export there would "
            "show every point twice; choose another --out"
        )
    # scalar and spectra records carry no time of their own: they get the run's start
    start = _timestamp(run.manifest.get("started_at")) or run.path.stat().st_mtime
    ended = _timestamp(run.manifest.get("ended_at")) or start
    diagnosis = diagnose(run)
    last_step = int(run.scalars["step"].max()) if len(run.scalars) else 0
    counts = {**dict.fromkeys(run.kinds(), 0), "spectra": 0}
    writer = EventFileWriter(str(directory))
    try:
        # one file in step order: readers that purge "orphaned" points after a step goes
        # backwards (old event-file versions) would otherwise drop data
        for event in heapq.merge(
            _hparams_events(run, start, counts),
            _scalar_events(run, start, counts),
            _spectrum_events(run, start, counts),
            key=lambda event: event.step,
        ):
            writer.add_event(event)
        text = text_summary.text_pb("findings", findings_markdown(diagnosis))
        writer.add_event(_event(last_step, ended, list(text.value)))
        counts["findings"] = len(diagnosis.findings)
    finally:
        writer.close()
    return sorted(directory.glob(EVENT_GLOB)), counts
