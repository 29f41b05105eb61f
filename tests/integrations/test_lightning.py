"""RiswbCallback in a real Lightning Trainer (CPU, ~30 optimizer steps per run)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from riswb.diagnose.gate import gate  # noqa: E402
from riswb.diagnose.rules import diagnose  # noqa: E402
from riswb.integrations.lightning import RiswbCallback, log_terms  # noqa: E402
from riswb.runlog import read_run  # noqa: E402


class Regressor(pl.LightningModule):
    """y = 2·x₀ + 0.1·x₁ with two named terms; `head_in_optimizer=False` plants the bug of a
    head left out of configure_optimizers; `manual=True` steps by hand with log_terms."""

    def __init__(self, head_in_optimizer: bool = True, manual: bool = False, fail_at: int = -1):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.Tanh())
        self.head = nn.Linear(32, 1)
        self.head_in_optimizer = head_in_optimizer
        self.automatic_optimization = not manual
        self.fail_at = fail_at

    def forward(self, x):
        return self.head(self.body(x))

    def _terms(self, batch):
        x, y = batch
        out = self(x)
        return {"mse": ((out - y) ** 2).mean(), "l1": (out - y).abs().mean()}

    def training_step(self, batch, batch_idx):
        if batch_idx == self.fail_at:
            raise RuntimeError("planted failure")
        terms = self._terms(batch)
        loss = terms["mse"] + 0.5 * terms["l1"]
        if self.automatic_optimization:
            return {"loss": loss, "terms": terms, "weights": {"l1": 0.5}}
        opt = self.optimizers()
        opt.zero_grad()
        log_terms(self, terms, {"l1": 0.5})
        self.manual_backward(loss)
        opt.step()
        return None

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._terms(batch)["mse"])

    def configure_optimizers(self):
        params = self.parameters() if self.head_in_optimizer else self.body.parameters()
        return torch.optim.Adam(params, lr=1e-2)


def _loader(n=256, batch=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = 2 * x[:, :1] + 0.1 * x[:, 1:2]
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


def _fit(tmp_path, module, callback_kwargs=None, **trainer_kwargs):
    callback = RiswbCallback(runs_dir=tmp_path / "runs", log_every=3, **(callback_kwargs or {}))
    trainer_kwargs.setdefault("max_steps", 30)
    trainer = pl.Trainer(
        enable_progress_bar=False, logger=False, enable_checkpointing=False,
        enable_model_summary=False, val_check_interval=10, limit_val_batches=2,
        callbacks=[callback], **trainer_kwargs,
    )
    trainer.fit(module, _loader(), _loader(64))
    (path,) = (tmp_path / "runs").iterdir()
    return read_run(path)


def _flagged(run):
    return {f.id: f.severity for f in diagnose(run).findings if f.severity != "info"}


def test_healthy_module_gives_a_clean_run(tmp_path):
    run = _fit(tmp_path, Regressor())
    assert run.status == "completed"
    assert run.id.endswith("-regressor")
    assert _flagged(run) == {}
    assert gate(run).passed
    loss = run.kind("loss")
    assert {"mse", "l1", "total"} <= set(loss.columns)  # the terms, not just the loss
    assert "mse" in run.kind("term_grad").columns  # taken before backward: graph alive
    assert "val_loss" in run.kind("eval").columns
    assert run.manifest["intent"]["accumulation"] == 1
    assert run.manifest["distributed"]["world_size"] == 1


def test_accumulation_and_clipping_become_intent(tmp_path):
    run = _fit(tmp_path, Regressor(), accumulate_grad_batches=2, gradient_clip_val=5.0)
    intent = run.manifest["intent"]
    assert intent["accumulation"] == 2 and intent["trainer_accumulation"] == 2
    assert intent["clip"]["max_norm"] == 5.0 and intent["clip"]["algorithm"] == "norm"
    cadence = run.kind("cadence").iloc[-1]
    assert cadence["loss"] == 2 * cadence["optimizer_step"] == 60
    assert _flagged(run) == {}


def test_manual_optimization_with_log_terms(tmp_path):
    run = _fit(tmp_path, Regressor(manual=True))
    assert {"mse", "l1"} <= set(run.kind("loss").columns)
    assert _flagged(run) == {}
    assert gate(run).passed


def test_head_left_out_of_configure_optimizers(tmp_path):
    run = _fit(tmp_path, Regressor(head_in_optimizer=False))
    assert _flagged(run).get("optimizer-coverage") == "error"
    (coverage,) = [f for f in diagnose(run).findings if f.id == "optimizer-coverage"]
    assert coverage.evidence["missing"]["names"] == ["head.weight", "head.bias"]


def test_declared_accumulation_the_trainer_does_not_do(tmp_path):
    """The user means 4-batch accumulation but never passed accumulate_grad_batches (the rule
    waits for 10 accumulated batches: 40 loss calls)."""
    run = _fit(tmp_path, Regressor(), callback_kwargs={"accumulation": 4}, max_steps=48)
    assert run.manifest["intent"]["trainer_accumulation"] == 1
    assert _flagged(run).get("step-cadence") == "error"


def test_exception_marks_the_run_crashed_and_unwraps_the_module(tmp_path):
    module = Regressor(fail_at=5)
    with pytest.raises(RuntimeError, match="planted failure"):
        _fit(tmp_path, module)
    (path,) = (tmp_path / "runs").iterdir()
    assert read_run(path).status == "crashed"
    assert "training_step" not in vars(module)  # the instance wrapper is gone


DDP_SCRIPT = '''
import sys
import torch
import lightning.pytorch as pl
from riswb.integrations.lightning import RiswbCallback
sys.path.insert(0, sys.argv[2])
from test_lightning import Regressor, _loader

if __name__ == "__main__":
    torch.set_num_threads(1)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=20,
                         enable_progress_bar=False, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, limit_val_batches=0,
                         callbacks=[RiswbCallback(runs_dir=sys.argv[1], log_every=3)])
    trainer.fit(Regressor(), _loader())
'''


def test_ddp_forward_redirection_is_not_a_second_forward(tmp_path):
    """Under DDP Lightning runs training_step through the module's own __call__: that call
    is not counted as a forward, nor are its outputs taken for the model's."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path / "runs"),
                    str(Path(__file__).parent)], check=True, capture_output=True, timeout=300)
    runs = sorted((tmp_path / "runs").iterdir())
    assert [p.name.rsplit("-", 1)[-1] for p in runs] == ["rank0", "rank1"]
    for path in runs:
        run = read_run(path)
        cadence = run.kind("cadence").iloc[-1]
        assert cadence["forward"] == cadence["loss"] == cadence["optimizer_step"] == 20
        assert _flagged(run) == {}


class _SGDRegressor(Regressor):
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-2)


@pytest.mark.parametrize("module", [Regressor, _SGDRegressor], ids=["adam", "sgd"])
def test_accumulation_of_four_is_four_batches_per_step(tmp_path, module):
    """accumulate_grad_batches=4: Lightning runs 3 micro-batches before optimizer.step and
    the 4th inside its closure; all 4 are batches (not one re-evaluated), so step-cadence
    sees 4 batches per step, as intended (it once said 4× the intended cadence)."""
    run = _fit(tmp_path, module(), accumulate_grad_batches=4, max_steps=15)
    assert run.manifest["intent"]["accumulation"] == 4
    cadence = run.kind("cadence").iloc[-1]
    assert cadence["loss"] == 4 * cadence["optimizer_step"] == 60
    assert cadence["closure_steps"] == 15 and cadence["same_batch_loss"] == 0
    assert "step-cadence" not in _flagged(run)
    assert _flagged(run) == {}
