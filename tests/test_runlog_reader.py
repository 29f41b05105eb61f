"""The tolerant reader (riswb/runlog_read.py, riswb/runlog_records.py): bad lines dropped and
counted, a corrupt manifest still readable, `latest` never shadowed, leftovers cleaned."""

import json

import pytest

from riswb.runlog import RunWriter, list_runs, read_run, resolve_run
from riswb.runlog_disk import MANIFEST_TMP
from riswb.runlog_records import MAX_LINE


@pytest.fixture
def run_dir(tmp_path):
    writer = RunWriter(tmp_path / "runs", "good")
    for step in range(3):
        writer.scalars(step, "loss", {"total": 1.0 / (step + 1)})
    writer.spectrum(2, "R_pred", [3.0, 1.0])
    writer.event(2, "step_skipped", reason="scaler", count=1)
    writer.close()
    return writer.path


def _append(path, text):
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text + "\n")


BAD = {
    "scalars": [
        "5", "[]", '"x"', "null", "true", "{}", '{"kind": "loss", "total": 1}',
        '{"step": "3", "kind": "loss"}', '{"step": true, "kind": "loss"}',
        '{"step": -1, "kind": "loss"}', '{"step": 1.5, "kind": "loss"}',
        '{"step": 9007199254740992, "kind": "loss"}', '{"step": 1, "kind": 5}',
        '{"step": 1}', "[" * 200_000, '{"step": 1, "kind": "loss", "total": ' + "9" * 5000 + "}",
        '{"step": 1, "kind": "loss", "pad": "' + "x" * MAX_LINE + '"}', "{not json",
        "\x00\x01\x02",
    ],
    "spectra": [
        '{"step": 1, "name": "R_pred", "values": 3}', '{"step": 1, "name": "R_pred"}',
        '{"step": 1, "name": "R_pred", "values": ["a"]}',
        '{"step": 1, "name": "R_pred", "values": [true]}',
        '{"step": 1, "name": 7, "values": [1.0]}', '{"name": "R_pred", "values": [1.0]}',
    ],
    "events": [
        '{"step": 1, "event": "step_skipped", "count": "3"}',
        '{"step": 1, "event": "step_skipped", "count": 1.5}',
        '{"step": 1, "event": "step_skipped", "count": true}',
        '{"step": 1, "event": "weights_swapped", "restored": "no"}',
        '{"step": 1, "event": "dead_params", "names": "w"}',
        '{"step": 1, "event": 3}', '{"step": 1, "time": 1.0}',
        '{"step": 1, "event": "x", "time": "yesterday"}',
    ],
}


@pytest.mark.parametrize("stream", sorted(BAD))
def test_bad_lines_are_dropped_and_counted(run_dir, stream):
    before = read_run(run_dir)
    good = {"scalars": before._scalar_records, "spectra": before.spectrum_records,
            "events": before.event_records}[stream]
    for line in BAD[stream]:
        _append(run_dir / f"{stream}.jsonl", line)
    run = read_run(run_dir)
    assert run.dropped[f"{stream}.jsonl"] == len(BAD[stream])
    after = {"scalars": run._scalar_records, "spectra": run.spectrum_records,
             "events": run.event_records}[stream]
    assert after == good
    [warning] = [w for w in run.warnings if w.startswith(f"{stream}.jsonl")]
    assert f"dropped {len(BAD[stream])} bad line(s)" in warning and warning.endswith("; ...)")


def test_non_scalar_values_are_dropped_not_the_record(run_dir):
    _append(run_dir / "scalars.jsonl", '{"step": 5, "kind": "eval", "val_loss": 0.5, "note": "x",'
            ' "bins": [1, 2], "big": ' + "9" * 30 + "}")
    run = read_run(run_dir)
    assert run.kind("eval").to_dict("records") == [{"step": 5, "val_loss": 0.5, "note": "x"}]
    assert any("dropped values from 1 line(s)" in w and "'bins', 'big'" in w
               for w in run.warnings)


@pytest.mark.parametrize(
    "text, reason",
    [("[1, 2]", "not a JSON object"), ("5", "not a JSON object"), ('{"id": ', "not valid JSON"),
     ("[" * 200_000, "nested too deeply"), ("", "not valid JSON")],
)
def test_a_corrupt_manifest_leaves_the_run_readable(run_dir, text, reason):
    (run_dir / "manifest.json").write_text(text)
    run = read_run(run_dir)
    assert run.status == "corrupt" and run.id == run_dir.name
    assert any(reason in w for w in run.warnings)
    assert len(run.kind("loss")) == 3


def test_wrong_typed_manifest_fields_are_ignored(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest.update(status=5, warnings="x", first_step="0", pid=True, intent=[1])
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    run = read_run(run_dir)
    assert not {"status", "warnings", "first_step", "pid", "intent"} & set(run.manifest)
    assert run.status == "unknown"
    assert any("ignored status, pid, warnings, intent, first_step" in w for w in run.warnings)


def test_latest_is_never_shadowed_by_a_folder_named_latest(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    first = RunWriter(runs, "a").path
    newest = RunWriter(runs, "b").path
    for folder in (runs / "latest", tmp_path / "latest"):  # in the runs dir and the CWD
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"id": "impostor"}))
    monkeypatch.chdir(tmp_path)
    assert resolve_run("latest", runs) == newest
    assert list_runs(runs)[0] == runs / "latest" and list_runs(runs)[1:] == [first, newest]
    assert resolve_run("./latest", runs).resolve() == tmp_path / "latest"  # a path still works


def test_a_dead_writers_tmp_manifest_is_cleaned_a_live_ones_kept(tmp_path):
    runs = tmp_path / "runs"
    done = RunWriter(runs, "done")
    done.close()
    live = RunWriter(runs, "live")
    for writer in (done, live):
        (writer.path / MANIFEST_TMP).write_text("{")
    read_run(done.path)
    assert not (done.path / MANIFEST_TMP).exists()
    read_run(live.path)
    assert (live.path / MANIFEST_TMP).exists()
    live.close()
    (done.path / MANIFEST_TMP).write_text("{")
    list_runs(runs)  # touching the runs dir sweeps every dead run
    assert not (done.path / MANIFEST_TMP).exists() and not (live.path / MANIFEST_TMP).exists()
    (done.path / MANIFEST_TMP).write_text("{")
    (done.path / "notes.tmp").write_text("mine")
    RunWriter(runs, "next")  # so does a new writer
    assert not (done.path / MANIFEST_TMP).exists()
    assert (done.path / "notes.tmp").exists()  # only riswb's own temporary name
