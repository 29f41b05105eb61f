"""Fuzz: nothing in a run directory, and no number on the command line, crashes riswb.

Corrupted lines of every kind go into each log file of a good run (riswb/runlog_records.py
says what is bad): `read_run` never raises and counts every bad line exactly; `riswb
report/gate/runs/export` on such runs exit 0/1 with the bad lines counted, or 2 with one
line, never a traceback; non-finite and out-of-range numbers in every numeric option of
riswb/commands/gate.py and riswb/commands/runs.py (and --threshold, parsed by
riswb/diagnose/rules/_base.py) are one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from riswb.cli import app
from riswb.diagnose.rules import Thresholds
from riswb.runlog import read_run
from riswb.runlog_records import MAX_LINE

FUZZ = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
STREAMS = ("scalars", "spectra", "events")

LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                 st.text(st.characters(blacklist_categories=("Cs",)), max_size=6))
ANY_JSON = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
NOT_INT = ANY_JSON.filter(lambda v: type(v) is not int and v is not None)
NOT_STR = ANY_JSON.filter(lambda v: type(v) is not str)
NOT_NUMBERS = st.one_of(
    ANY_JSON.filter(lambda v: type(v) is not list),
    st.lists(ANY_JSON, min_size=1).filter(lambda v: any(type(x) not in (int, float) for x in v)),
)
BAD_STEP = st.one_of(st.text(max_size=4), st.booleans(), st.floats(), st.none(),
                     st.integers(max_value=-1), st.integers(min_value=2**53),
                     st.lists(st.integers(), max_size=2))
HUGE = st.sampled_from(["[" * 200_000, '{"a":' * 100_000, '{"step": 1, "pad": "'
                        + "x" * MAX_LINE + '"}', '{"step": ' + "9" * 5000 + "}"])
WRONG_FIELD = {"scalars": ("kind", NOT_STR), "spectra": ("values", NOT_NUMBERS),
               "events": ("count", NOT_INT)}
HEADER = {"scalars": ("kind", NOT_STR), "spectra": ("name", NOT_STR), "events": ("event", NOT_STR)}


def bad_line(stream: str, template: dict) -> st.SearchStrategy[str]:
    """A line the reader must drop: not an object, a bad or missing step, a wrong-typed
    field, a torn prefix of a good line, too deep, too long."""
    line = json.dumps(template)

    def with_field(name, values):
        return values.map(lambda value: json.dumps({**template, name: value}))

    return st.one_of(
        ANY_JSON.filter(lambda v: type(v) is not dict).map(json.dumps),
        with_field("step", BAD_STEP),
        st.just(json.dumps({k: v for k, v in template.items() if k != "step"})),
        with_field(*WRONG_FIELD[stream]),
        with_field(*HEADER[stream]),
        st.integers(1, len(line) - 1).map(lambda n: line[:n]),
        HUGE,
    )


def garbage_line(stream: str, shapes: list[dict]) -> st.SearchStrategy[str]:
    """Anything at all: bad lines, random text, a good record of any shape the run holds
    with one field replaced by any JSON value (which the reader may or may not accept)."""
    replaced = st.sampled_from(shapes).flatmap(lambda record: st.tuples(
        st.sampled_from(sorted(record)), ANY_JSON).map(
        lambda kv: json.dumps({**record, kv[0]: kv[1]})))
    text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
    return st.one_of(bad_line(stream, shapes[0]), replaced, text)


@pytest.fixture
def template(tmp_path, synthetic_run):
    """A good run (copied per example) and one record of every shape in each stream (kind,
    event or spectrum name), the first of them the one bad_line corrupts."""
    path = synthetic_run(tmp_path, steps=120, every=10, eval_every=40, skipped_steps=True,
                         swap_unrestored=True, missing_params=True, dead_params=True)
    shapes = {}
    for stream in STREAMS:
        by_name = {}
        for line in (path / f"{stream}.jsonl").read_text().splitlines():
            record = json.loads(line)
            by_name.setdefault(record.get("kind") or record.get("event") or record["name"],
                               record)
        shapes[stream] = sorted(by_name.values(), key=lambda r: "count" not in r)
    return path, shapes


def _copy(path: Path, into: str) -> Path:
    return Path(shutil.copytree(path, Path(into) / path.name))


def _insert(file: Path, lines: list[tuple[int, str]]) -> None:
    """Insert whole lines at the given positions (modulo the file's length)."""
    existing = file.read_text(encoding="utf-8").splitlines()
    for position, line in lines:
        existing.insert(position % (len(existing) + 1), line)
    file.write_text("\n".join(existing) + "\n", encoding="utf-8")


def _good(run) -> dict[str, list[dict]]:
    return {"scalars": run._scalar_records, "spectra": run.spectrum_records,
            "events": run.event_records}


@FUZZ
@given(data=st.data())
def test_read_run_drops_and_counts_every_bad_line(template, data):
    path, shapes = template
    before = _good(read_run(path))
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = _copy(path, scratch)
        inserted = {}
        for stream in STREAMS:
            lines = data.draw(st.lists(st.tuples(st.integers(0, 10**6),
                                                 bad_line(stream, shapes[stream][0])), max_size=4))
            _insert(run_dir / f"{stream}.jsonl", lines)
            inserted[stream] = len(lines)
        run = read_run(run_dir)
        for stream in STREAMS:
            assert run.dropped[f"{stream}.jsonl"] == inserted[stream], run.warnings
        assert _good(run) == before and run.status == "completed"


MANIFEST = st.one_of(
    ANY_JSON.filter(lambda v: type(v) is not dict).map(json.dumps),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    HUGE,
    st.integers(0, 400),  # a truncated copy of the real manifest
    st.tuples(st.sampled_from(["id", "status", "warnings", "pid", "host", "intent", "first_step",
                               "probes", "config", "loss_terms", "baseline", "error"]), ANY_JSON),
)


def _corrupt_manifest(run_dir: Path, how) -> None:
    manifest = run_dir / "manifest.json"
    text = manifest.read_text()
    if isinstance(how, int):
        how = text[:how]
    elif isinstance(how, tuple):
        how = json.dumps({**json.loads(text), how[0]: how[1]})
    manifest.write_text(how, encoding="utf-8")


@FUZZ
@given(how=MANIFEST)
def test_a_corrupt_manifest_never_stops_the_reader(template, how):
    path, _ = template
    losses = len(read_run(path).kind("loss"))
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = _copy(path, scratch)
        _corrupt_manifest(run_dir, how)
        run = read_run(run_dir)
        assert isinstance(run.status, str) and isinstance(run.id, str)
        assert len(run.kind("loss")) == losses


def _invoke(*args: str):
    """The real CLI: (exit code, stdout, stderr), asserting the error contract."""
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert "Traceback" not in result.output
    err = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(err) <= 1 and all(line.startswith("riswb: error: ") for line in err), err
    assert result.exit_code in (0, 1, 2)
    assert (result.exit_code == 2) == bool(err)
    return result.exit_code, result.stdout


@settings(FUZZ, max_examples=5)
@given(data=st.data())
def test_commands_on_corrupted_runs_exit_cleanly(template, data, monkeypatch):
    path, shapes = template
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = _copy(path, scratch)
        for stream in STREAMS:
            lines = data.draw(st.lists(st.tuples(st.integers(0, 10**6),
                                                 garbage_line(stream, shapes[stream])),
                                       min_size=1, max_size=3))
            _insert(run_dir / f"{stream}.jsonl", lines)
        if data.draw(st.booleans()):
            _corrupt_manifest(run_dir, data.draw(MANIFEST))
        dropped = sum(read_run(run_dir).dropped.values())
        monkeypatch.setenv("RISWB_RUNS_DIR", scratch)

        code, out = _invoke("report", str(run_dir), "--no-plots", "--format", "json")
        if code == 0 and dropped:
            warnings = json.loads(out)["summary"]["warnings"]
            assert any("bad line(s)" in w for w in warnings), warnings
        assert _invoke("gate", str(run_dir), "--format", "json")[0] in (0, 1, 2)
        code, out = _invoke("runs", "--format", "json")
        assert code == 0 and [row["id"] for row in json.loads(out)] == [run_dir.name]
        _invoke("export", str(run_dir), "--to", "csv", "--out", str(Path(scratch) / "out"))


NON_FINITE = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999"])


def _outside(lo: float, hi: float) -> st.SearchStrategy[str]:
    sides = [NON_FINITE]
    if math.isfinite(lo):
        sides.append(st.floats(max_value=lo, exclude_max=True, allow_infinity=False,
                               allow_nan=False).map(repr))
    if math.isfinite(hi):
        sides.append(st.floats(min_value=hi, exclude_min=True, allow_infinity=False,
                               allow_nan=False).map(repr))
    return st.one_of(sides)


THRESHOLD = st.sampled_from(dataclasses.fields(Thresholds)).flatmap(
    lambda f: _outside(*f.metadata["range"]).map(lambda value: f"{f.name}={value}"))
BAD_OPTION = st.one_of(
    THRESHOLD.map(lambda t: ("gate", "RUN", "--threshold", t)),
    THRESHOLD.map(lambda t: ("report", "RUN", "--no-plots", "--threshold", t)),
    _outside(0.0, 1.0).map(lambda v: ("gate", "RUN", "--min-loss-drop", v)),
    _outside(0.0, 1.0).map(lambda v: ("gate", "RUN", "--min-moving", v)),
    st.one_of(NON_FINITE, st.integers(max_value=-1).map(str), st.sampled_from(["1.5", "x", ""]))
    .map(lambda v: ("runs", "--limit", v)),
)


@settings(FUZZ, max_examples=25)
@given(args=BAD_OPTION)
def test_bad_numbers_in_options_are_one_line_and_exit_2(template, args):
    path, _ = template
    code, out = _invoke(*[str(path) if a == "RUN" else a for a in args])
    assert code == 2 and out == ""
