"""torchrun with two CPU processes (gloo): one run per rank, named by rank, each gated."""

from __future__ import annotations

import json
import subprocess
import sys

from riswb.instrument.ranks import rank_info, run_name_for_rank
from riswb.integrations.distributed import should_log
from riswb.runlog import read_run

DDP_SCRIPT = '''
import sys
import torch
import torch.distributed as dist
from torch import nn
from riswb.integrations.distributed import open_workbench

torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)  # the same initial weights on every rank
model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(4, 16), nn.Tanh(),
                                                          nn.Linear(16, 1)))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
g = torch.Generator().manual_seed(100 + rank)  # each rank its own shard of the data
x = torch.randn(256, 4, generator=g)
y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
with open_workbench(model, optimizer, runs_dir=sys.argv[1], name="ddp", log_every=2) as wb:
    for step in range(40):
        i = (step * 16) % 256
        loss = wb.loss({"mse": ((model(x[i:i + 16]) - y[i:i + 16]) ** 2).mean()})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
dist.destroy_process_group()
'''


def test_rank_helpers_read_the_launcher_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = rank_info()
    assert info == {"rank": 3, "world_size": 4, "local_rank": 1, "source": "env"}
    assert run_name_for_rank("mlp", info) == "mlp-rank3"
    assert not should_log(True, info) and should_log(False, info)
    single = {"rank": 0, "world_size": 1, "local_rank": 0, "source": "single"}
    assert run_name_for_rank("mlp", single) == "mlp"
    monkeypatch.delenv("RANK")
    assert rank_info()["source"] == "single"


def test_two_ranks_write_two_gated_runs(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    runs = tmp_path / "runs"
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
         str(script), str(runs)],
        check=True, timeout=120, capture_output=True,
    )
    paths = sorted(runs.iterdir())
    assert [p.name.split("-", 2)[2] for p in paths] == ["ddp-rank0", "ddp-rank1"]
    norms = []
    for rank, path in enumerate(paths):
        run = read_run(path)
        assert run.status == "completed"
        assert run.manifest["distributed"] == {"rank": rank, "world_size": 2, "local_rank": rank,
                                               "source": "torch.distributed"}
        norms.append(run.kind("grad_norm")["total"].tolist())
        gate = subprocess.run([sys.executable, "-m", "riswb", "gate", str(path),
                               "--format", "json"], capture_output=True, text=True)
        assert gate.returncode == 0, gate.stdout + gate.stderr
        assert json.loads(gate.stdout)["passed"]
    # each rank saw its own data: the norms are local, read before DDP's all-reduce
    assert norms[0] != norms[1]
