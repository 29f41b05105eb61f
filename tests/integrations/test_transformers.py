"""RiswbCallback in a real Hugging Face Trainer (CPU, tiny models built from configs: no
downloads)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
)
from transformers.modeling_outputs import SequenceClassifierOutput  # noqa: E402

from riswb.diagnose.gate import gate  # noqa: E402
from riswb.diagnose.rules import diagnose  # noqa: E402
from riswb.integrations.transformers import RiswbCallback  # noqa: E402
from riswb.runlog import read_run  # noqa: E402


class Tokens(torch.utils.data.Dataset):
    """Random token ids; the label is whether the first token is in the lower half."""

    def __init__(self, n: int, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 50, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] < 25).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class BagConfig(PretrainedConfig):
    model_type = "bag"

    def __init__(self, vocab_size=50, hidden=16, detach_encoder=False, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.hidden, self.detach_encoder = vocab_size, hidden, detach_encoder


class BagModel(PreTrainedModel):
    """Embedding → encoder → classifier. `detach_encoder` plants the bug of an encoder output
    detached "to save memory": the encoder stays trainable but never gets a gradient."""

    config_class = BagConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden)
        self.encoder = nn.Sequential(nn.Linear(config.hidden, config.hidden), nn.Tanh())
        self.classifier = nn.Linear(config.hidden, 2)
        self.post_init()

    def forward(self, input_ids, labels=None):
        features = self.encoder(self.embed(input_ids)[:, 0])
        if self.config.detach_encoder:
            features = features.detach()
        logits = self.classifier(features)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _train(tmp_path, model, callback_kwargs=None, optimizers=(None, None), **overrides):
    options = dict(
        output_dir=str(tmp_path / "out"), max_steps=30, per_device_train_batch_size=8,
        learning_rate=1e-2, report_to=[], use_cpu=True, save_strategy="no",
        logging_strategy="no", eval_strategy="steps", eval_steps=10, disable_tqdm=True,
    )
    options.update(overrides)
    callback = RiswbCallback(runs_dir=tmp_path / "runs", log_every=3, **(callback_kwargs or {}))
    trainer = Trainer(model=model, args=TrainingArguments(**options), train_dataset=Tokens(64),
                      eval_dataset=Tokens(16, seed=2), callbacks=[callback],
                      optimizers=optimizers)
    trainer.train()
    (path,) = (tmp_path / "runs").iterdir()
    return read_run(path), trainer


def _flagged(run):
    return {f.id: f.severity for f in diagnose(run).findings if f.severity != "info"}


def _bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16))


def test_healthy_bert_gives_a_clean_run(tmp_path):
    run, trainer = _train(tmp_path, _bert())
    assert run.status == "completed"
    assert run.id.endswith("-bert")
    assert _flagged(run) == {}
    assert gate(run).passed
    # the Trainer's own optimizer (AcceleratedOptimizer) was unwrapped and stepped 30 times
    assert run.kind("cadence").iloc[-1]["optimizer_step"] == 30
    assert "eval_loss" in run.kind("eval").columns
    intent = run.manifest["intent"]
    assert intent["clip"] == {"max_norm": 1.0, "algorithm": "norm",
                              "by": "transformers.TrainingArguments(max_grad_norm)"}
    assert intent["accumulation"] == intent["trainer_accumulation"] == 1
    assert not trainer.model._forward_hooks  # riswb's hooks are gone after train end


def test_gradient_accumulation_is_the_intent(tmp_path):
    torch.manual_seed(0)
    run, _ = _train(tmp_path, BagModel(BagConfig()), gradient_accumulation_steps=2,
                    max_steps=20, max_grad_norm=0.0)
    intent = run.manifest["intent"]
    assert intent["accumulation"] == 2 and "clip" not in intent
    cadence = run.kind("cadence").iloc[-1]
    assert cadence["loss"] == 2 * cadence["optimizer_step"] == 40
    assert "step-cadence" not in _flagged(run)


def test_detached_encoder_is_dead_params(tmp_path):
    torch.manual_seed(0)
    run, _ = _train(tmp_path, BagModel(BagConfig(detach_encoder=True)))
    flagged = _flagged(run)
    assert flagged.get("dead-params") == "error", flagged
    (dead,) = [f for f in diagnose(run).findings if f.id == "dead-params"]
    assert "encoder" in str(dead.evidence)


def test_head_group_at_lr_zero_is_optimizer_coverage(tmp_path):
    """A hand-built optimizer whose head group got lr 0 (a `head_lr` left at its default)."""
    torch.manual_seed(0)
    model = BagModel(BagConfig())
    head = list(model.classifier.parameters())
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    optimizer = torch.optim.AdamW([{"params": body}, {"params": head, "lr": 0.0}], lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    run, _ = _train(tmp_path, model, optimizers=(optimizer, scheduler))
    assert _flagged(run).get("optimizer-coverage") == "error"
    assert not gate(run).passed
