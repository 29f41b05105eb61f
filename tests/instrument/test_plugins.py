"""Local probe plugins loaded by path from a folder (like pytest's conftest.py)."""

import textwrap

import pytest
import torch

from riswb.errors import RiswbError
from riswb.instrument.plugins import load_plugins, plugin_classes, plugin_files
from riswb.instrument.workbench import Workbench
from riswb.runlog import read_run

GOOD = '''
from riswb import Probe
from riswb.probes.cadence import CadenceProbe  # imported, not defined here: not a plugin


class LossCounter(Probe):
    name = "loss_counter"

    def __init__(self):
        super().__init__()
        self.n = 0

    def on_after_loss(self, ctx):
        self.n += 1

    def flush(self, ctx):
        ctx.wb.writer.scalars(ctx.step, "loss_count", {"n": self.n})


class _Helper(Probe):
    pass
'''


def write(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text))


def test_loads_probe_subclasses_defined_in_each_file(tmp_path):
    write(tmp_path, "counter.py", GOOD)
    write(tmp_path, "second.py", "from riswb import Probe\nclass Other(Probe):\n    pass\n")
    write(tmp_path, "_private.py", "raise RuntimeError('never imported')\n")
    write(tmp_path, "notes.txt", "not python")
    assert [p.name for p in plugin_files(tmp_path)] == ["counter.py", "second.py"]
    assert [c.__name__ for c in plugin_classes(tmp_path)] == ["LossCounter", "Other"]
    assert [p.name for p in load_plugins(tmp_path)] == ["loss_counter", "other"]


def test_workbench_runs_plugins(tmp_path):
    write(tmp_path / "plug", "counter.py", GOOD)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Workbench(model, opt, runs_dir=tmp_path / "runs", probes=["cadence"],
                   plugins=tmp_path / "plug", strict=True) as wb:
        for _ in range(3):
            wb.loss({"a": model(torch.randn(2, 2)).sum()}).backward()
            opt.step()
    run = read_run(wb.path)
    assert [p["name"] for p in run.manifest["probes"]] == ["cadence", "loss_counter"]
    assert run.kind("loss_count")["n"].tolist() == [3]


def test_broken_plugin_names_the_file(tmp_path):
    write(tmp_path, "broken.py", "def oops(:\n    pass\n")
    with pytest.raises(RiswbError, match=r"broken\.py.*line 1.*SyntaxError"):
        load_plugins(tmp_path)
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(RiswbError, match=r"broken\.py.*ModuleNotFoundError"):
        load_plugins(tmp_path)
    (tmp_path / "broken.py").write_text(
        "from riswb import Probe\nclass Needs(Probe):\n    def __init__(self, x):\n"
        "        super().__init__()\n"
    )
    with pytest.raises(RiswbError, match=r"broken\.py: Needs\(\) failed"):
        load_plugins(tmp_path)


def test_missing_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_plugins() == []  # ./probes absent: nothing to load
    with pytest.raises(RiswbError, match="does not exist"):
        load_plugins(tmp_path / "nowhere")
