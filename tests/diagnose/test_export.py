"""riswb export: a real Workbench run written to TensorBoard, Parquet and CSV, then read back
with each format's own reader (EventAccumulator, pandas) and compared with read_run."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import typer
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import plugin_data_pb2
from typer.testing import CliRunner

import riswb
from riswb.commands.export import export_command
from riswb.diagnose.export import export_run
from riswb.diagnose.export.tb import findings_markdown
from riswb.diagnose.rules import diagnose
from riswb.errors import RiswbError
from riswb.jsonsafe import strict_json
from riswb.runlog import RunWriter, read_run

CONFIG = {"model": {"hidden": 8, "act": "relu"}, "lr": 0.05, "tags": ["a", "b"], "amp": False}
NMSE = [0.5, math.nan, math.inf]  # one eval metric per evaluation: finite, NaN, +Inf
EVERYTHING = {ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0}  # no reservoir sampling
READERS = {"parquet": pd.read_parquet, "csv": pd.read_csv}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """36 steps of a tiny MLP with clipping and a scheduler; three evaluations with R_pred and
    R_true (spectra) and an `nmse` metric that is NaN, then +Inf."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=CONFIG["lr"])
    sched = torch.optim.lr_scheduler.StepLR(opt, 10, 0.5)
    x, y = torch.randn(32, 4), torch.randn(32, 2)
    runs = tmp_path_factory.mktemp("runs")
    with riswb.Workbench(model, opt, sched, runs_dir=runs, name="mlp", config=CONFIG,
                         log_every=4) as wb:
        for step in range(36):
            out = model(x)
            loss = wb.loss({"mse": ((out - y) ** 2).mean(), "l1": out.abs().mean()},
                           {"mse": 1.0, "l1": 0.1})
            opt.zero_grad()
            loss.backward()
            wb.clip_grad_norm_(max_norm=1.0)
            opt.step()
            sched.step()
            if step % 12 == 11:
                a = torch.randn(6, 5, 5)
                R_true = a @ a.transpose(1, 2)
                wb.evaluate({"val_loss": loss.item(), "nmse": NMSE[step // 12]},
                            R_pred=R_true + 0.1 * torch.eye(5), R_true=R_true)
    return wb.path


def test_tensorboard_holds_every_scalar_spectrum_finding_and_hparam(run_dir, tmp_path):
    run = read_run(run_dir)
    result = export_run(run, "tensorboard", tmp_path)
    assert result.directory == tmp_path / run_dir.name and len(result.files) == 1
    acc = ea.EventAccumulator(str(result.directory), size_guidance=EVERYTHING).Reload()

    loss = run.scalars[run.scalars["kind"] == "loss"]
    points = acc.Scalars("loss/total")
    assert len(points) == len(loss) == result.counts["loss"] > 0
    assert [p.step for p in points] == loss["step"].tolist()
    np.testing.assert_allclose([p.value for p in points], loss["total"].astype(np.float32))
    nmse = [p.value for p in acc.Scalars("eval/nmse")]
    assert nmse[0] == pytest.approx(0.5) and math.isnan(nmse[1]) and nmse[2] == math.inf

    tags = set(acc.Tags()[ea.SCALARS])
    assert {f"{kind}/{key}" for kind in run.kinds() for key in run.kind(kind).columns
            if key != "step"} <= tags

    for name in ("R_pred", "R_true"):
        records = [r for r in run.spectrum_records if r["name"] == name]
        histograms = acc.Histograms(f"spectra/{name}")
        assert [h.step for h in histograms] == [r["step"] for r in records]
        assert histograms[0].histogram_value.num == len(records[0]["values"]) == 5
        leading = [p.value for p in acc.Scalars(f"spectrum/{name}/0")]
        np.testing.assert_allclose(leading, [r["values"][0] for r in records], rtol=1e-6)
    assert "spectrum/R_pred/4" in tags and "spectrum/R_pred/5" not in tags

    text = acc.Tensors("findings")[0].tensor_proto.string_val[0].decode()
    assert text == findings_markdown(diagnose(run))

    content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["model.hidden"].number_value == 8
    assert hparams["model.act"].string_value == "relu"
    assert hparams["amp"].bool_value is False
    assert hparams["tags"].string_value == "['a', 'b']"


@pytest.mark.parametrize("target", ["parquet", "csv"])
def test_tables_round_trip_every_kind_spectra_and_events(run_dir, tmp_path, target):
    run = read_run(run_dir)
    result = export_run(run, target, tmp_path)
    read = READERS[target]
    stems = [f"scalars-{kind}" for kind in run.kinds()] + ["spectra", "events"]
    assert [path.name for path in result.files] == [f"{stem}.{target}" for stem in stems]

    for kind in run.kinds():
        got = read(result.directory / f"scalars-{kind}.{target}")
        expected = run.scalars[run.scalars["kind"] == kind].reset_index(drop=True)
        # the file leaves out only the columns other kinds use
        assert expected.drop(columns=list(got.columns)).isna().all().all()
        pd.testing.assert_frame_equal(got, expected[list(got.columns)], check_dtype=False)
    nmse = read(result.directory / f"scalars-eval.{target}")["nmse"]
    assert nmse[0] == 0.5 and math.isnan(nmse[1]) and nmse[2] == math.inf

    spectra = read(result.directory / f"spectra.{target}")
    expected = [(r["step"], r["name"], i, v) for r in run.spectrum_records
                for i, v in enumerate(r["values"])]
    assert len(spectra) == len(expected) > 0
    assert spectra[["step", "name", "index"]].values.tolist() == [[*e[:3]] for e in expected]
    np.testing.assert_allclose(spectra["value"], [e[3] for e in expected])

    events = read(result.directory / f"events.{target}")
    records = run.event_records
    assert events["event"].tolist() == [r["event"] for r in records]
    assert [json.loads(p) for p in events["payload"]] == [
        strict_json({k: v for k, v in r.items() if k not in ("step", "event", "time")})
        for r in records
    ]
    assert result.counts == {**{k: len(run.kind(k)) for k in run.kinds()},
                             "spectra": len(run.spectrum_records), "events": len(records)}


def test_keys_missing_from_some_records_and_text_values(tmp_path):
    """A term logged from step 10 on is one TensorBoard point, not a NaN at step 0; a metric
    logged as text at one step is a text column in Parquet and no TensorBoard point there."""
    writer = RunWriter(tmp_path / "runs", "mixed")
    writer.scalars(0, "loss", {"mse": 1.0, "total": 1.0})
    writer.scalars(10, "loss", {"mse": 0.5, "aux": 0.1, "total": 0.6})
    writer.scalars(0, "eval", {"val": 1.0, "note": "warm-up"})
    writer.scalars(10, "eval", {"val": 0.5, "note": 2})
    writer.close()
    run = read_run(writer.path)

    tb = export_run(run, "tensorboard", tmp_path / "tb").directory
    acc = ea.EventAccumulator(str(tb), size_guidance=EVERYTHING).Reload()
    assert [(p.step, p.value) for p in acc.Scalars("loss/aux")] == [(10, pytest.approx(0.1))]
    assert [(p.step, p.value) for p in acc.Scalars("eval/note")] == [(10, 2.0)]

    pq = export_run(run, "parquet", tmp_path / "pq").directory
    assert pd.read_parquet(pq / "scalars-eval.parquet")["note"].tolist() == ["warm-up", "2"]
    aux = pd.read_parquet(pq / "scalars-loss.parquet")["aux"]
    assert math.isnan(aux[0]) and aux[1] == pytest.approx(0.1)


def test_bad_inputs_are_one_line_errors_and_user_files_stay(run_dir, tmp_path):
    run = read_run(run_dir)
    with pytest.raises(RiswbError, match=r"unknown --to 'hdf5' \(choose from tensorboard, "):
        export_run(run, "hdf5", tmp_path)
    blocker = tmp_path / "out.txt"
    blocker.write_text("mine")
    with pytest.raises(RiswbError, match="out.txt exists and is not a directory"):
        export_run(run, "csv", blocker)
    assert blocker.read_text() == "mine"

    mine = tmp_path / "logs" / run_dir.name / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("keep")
    first = export_run(run, "tensorboard", tmp_path / "logs")
    with pytest.raises(RiswbError, match="already holds TensorBoard event files"):
        export_run(run, "tensorboard", tmp_path / "logs")
    assert sorted(mine.parent.iterdir()) == sorted([*first.files, mine])
    assert mine.read_text() == "keep"
    assert export_run(run, "csv", tmp_path / "new" / "deeper").directory.is_dir()


@pytest.mark.parametrize("target, package, module", [
    ("tensorboard", "tensorboard", "riswb.diagnose.export.tb"),
    ("parquet", "pyarrow", "riswb.diagnose.export.parquet"),
])
def test_missing_optional_package_names_the_extra(run_dir, tmp_path, monkeypatch, target,
                                                  package, module):
    # hide the package the way an environment without it behaves: the import fails
    for name in [n for n in sys.modules if n == module or n.split(".")[0] == package]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(RiswbError) as error:
        export_run(read_run(run_dir), target, tmp_path / "out")
    assert str(error.value) == (
        f"{target} export needs the `export` extra: pip install 'riswb[export]'"
    )
    assert not (tmp_path / "out").exists()


def test_command_prints_files_and_records_per_kind(run_dir, tmp_path):
    app = typer.Typer()
    app.command()(export_command)
    runner = CliRunner()
    result = runner.invoke(app, [run_dir.name, "--runs-dir", str(run_dir.parent),
                                 "--to", "csv", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run = read_run(run_dir)
    lines = result.output.splitlines()
    assert lines[0] == (f"wrote {len(run.kinds()) + 2} csv file(s) to "
                        f"{tmp_path / run_dir.name}")
    assert any(line.split() == ["loss", str(len(run.kind("loss")))] for line in lines)

    tb = runner.invoke(app, [str(run_dir), "--to", "TensorBoard", "--out", str(tmp_path)])
    assert tb.exit_code == 0, tb.output
    assert tb.output.splitlines()[-1] == f"view: tensorboard --logdir {tmp_path}"

    bad = runner.invoke(app, [str(run_dir), "--to", "hdf5", "--out", str(tmp_path)])
    assert isinstance(bad.exception, RiswbError)
