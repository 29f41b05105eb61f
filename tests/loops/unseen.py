"""Loops from a scout round on recipes the first suite lacked (tests/loops/zoo.py has the
rest): each healthy one once drew a false warning or error, the buggy one was missed. Same
make as zoo.py: seeded, tiny, about a second each on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.utils.prune
from torch import nn

import riswb
from tests.loops.zoo import LOG_EVERY, Loop, _batches, _data, _mlp, _plain_steps


def gan_frozen_discriminator(runs_dir: Path) -> Path:
    """pix2pix-style: the discriminator frozen with requires_grad_(False) for the generator's
    step (the exact term-gradient samples must skip it), and a gate that cannot judge the
    adversaries' summed loss."""
    torch.manual_seed(0)
    gen_net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    disc = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    bce = nn.functional.binary_cross_entropy_with_logits
    real = torch.randn(256, 2, generator=torch.Generator().manual_seed(4)) * 0.5 + 1.0
    model = nn.ModuleDict({"generator": gen_net, "discriminator": disc})
    with riswb.Workbench(model, [opt_d, opt_g], runs_dir=runs_dir, name="gan-frozen-d",
                         log_every=LOG_EVERY) as wb:
        for step in range(40):
            batch = real[step % 8 * 32:(step % 8 + 1) * 32]
            fake = gen_net(torch.randn(32, 4))
            disc.requires_grad_(True)
            d_loss = wb.loss({"d_real": bce(disc(batch), torch.ones(32, 1)),
                              "d_fake": bce(disc(fake.detach()), torch.zeros(32, 1))})
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            disc.requires_grad_(False)
            g_loss = wb.loss({"g_adv": bce(disc(fake), torch.ones(32, 1))})
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
    return wb.path


def value_clipping(runs_dir: Path) -> Path:
    """torch.nn.utils.clip_grad_value_: a deliberate clip, not a mask."""
    model = _mlp()
    return _plain_steps(
        runs_dir, "clip-value", model, torch.optim.SGD(model.parameters(), lr=0.05,
                                                       momentum=0.9), steps=60,
        before_step=lambda _: torch.nn.utils.clip_grad_value_(model.parameters(), 0.05))


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.main, self.aux = nn.Linear(8, 16), nn.Linear(16, 1), nn.Linear(16, 1)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return self.main(h), self.aux(h)


def two_heads_two_backwards(runs_dir: Path) -> Path:
    """One forward, one zero_grad per step, a backward per head (retain_graph): the second
    head's gradient exists only after the second backward, and the two losses are one batch."""
    model = TwoHeads()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = _data()
    batches = _batches(x, y)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="two-backwards",
                         log_every=LOG_EVERY) as wb:
        for _ in range(60):
            xb, yb = next(batches)
            main, aux = model(xb)
            opt.zero_grad()
            wb.loss({"main": (main - yb).square().mean()}).backward(retain_graph=True)
            wb.loss({"aux": (aux - 2 * yb).square().mean()}).backward()
            opt.step()
    return wb.path


class BagOfWords(nn.Module):
    def __init__(self, vocab: int = 2000):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.EmbeddingBag(vocab, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, tokens):
        return self.head(self.embed(tokens))


def text_classifier_large_vocab(runs_dir: Path) -> Path:
    """A bag-of-words classifier, 2000-token vocabulary: each batch looks up a few rows, so
    most rows get no gradient on any given step (not dead), and an accuracy that reaches 1.0
    while the validation loss still falls (not frozen)."""
    model = BagOfWords()
    opt = torch.optim.Adam(model.parameters(), lr=5e-2)
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 2000, (256, 6), generator=gen)
    labels = (tokens[:, 0] % 2 == 0).long()  # the first token's parity: learnable
    val_tokens, val_labels = tokens[:64], labels[:64]
    ce = nn.functional.cross_entropy
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="bow",
                         log_every=LOG_EVERY) as wb:
        for step in range(150):
            i = step % 16 * 16
            loss = wb.loss({"ce": ce(model(tokens[i:i + 16]), labels[i:i + 16])})
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 15 == 14:
                with torch.no_grad():
                    logits = model(val_tokens)
                wb.evaluate({"val_loss": float(ce(logits, val_labels)),
                             "val_acc": float((logits.argmax(-1) == val_labels).float().mean())})
    return wb.path


def sparse_table_never_used(runs_dir: Path) -> Path:
    """A per-item bias table (sparse, SparseAdam) in the optimizer but never looked up: its
    item effects are never learned."""
    torch.manual_seed(0)
    items, bias = nn.Embedding(100, 4, sparse=True), nn.Embedding(100, 1, sparse=True)
    head = nn.Linear(4, 1)
    model = nn.ModuleDict({"item_vectors": items, "item_bias": bias, "head": head})
    opts = [torch.optim.SparseAdam([items.weight, bias.weight], lr=1e-2),
            torch.optim.Adam(head.parameters(), lr=1e-2)]
    target = torch.randn(100, generator=torch.Generator().manual_seed(5))
    with riswb.Workbench(model, optimizers=opts, runs_dir=runs_dir, name="sparse-unused",
                         log_every=LOG_EVERY) as wb:
        for step in range(60):
            idx = torch.randint(0, 100, (16,), generator=torch.Generator().manual_seed(step))
            pred = head(items(idx)).squeeze(-1)  # BUG: + bias(idx).squeeze(-1) forgotten
            loss = wb.loss({"mse": (pred - target[idx]).square().mean()})
            for opt in opts:
                opt.zero_grad()
            loss.backward()
            for opt in opts:
                opt.step()
    return wb.path


def pruned_mid_run(runs_dir: Path) -> Path:
    """torch.nn.utils.prune to 50% at step 30, then fine-tuning: masked weights get zero
    gradients by design."""
    model = _mlp(width=32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def prune_once(step):
        if step == 30:
            torch.nn.utils.prune.l1_unstructured(model[0], "weight", amount=0.5)
    return _plain_steps(runs_dir, "pruned", model, opt, steps=90, at_step=prune_once)


def gradient_noise(runs_dir: Path) -> Path:
    """Annealed Gaussian noise added to every gradient between backward and step."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(7)

    def add_noise(step):
        scale = (0.01 / (1 + step) ** 0.55) ** 0.5
        for p in model.parameters():
            p.grad.add_(torch.randn(p.grad.shape, generator=gen) * scale)
    return _plain_steps(runs_dir, "grad-noise", model, opt, steps=80,
                        before_step=add_noise)


def swa_copy_evaluated(runs_dir: Path) -> Path:
    """A BatchNorm model trained while an AveragedModel (SWA) copy, in eval mode, is what is
    evaluated; the watched model stays in train mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))
    swa = torch.optim.swa_utils.AveragedModel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = _data()

    def evaluate():
        swa.update_parameters(model)
        swa.eval()
        with torch.no_grad():
            return float((swa(x) - y).square().mean())
    return _plain_steps(runs_dir, "swa-eval", model, opt, steps=80, evaluate=evaluate)


def adafactor_head_missing(runs_dir: Path) -> Path:
    """BUG: Adafactor with relative_step (lr=None in its groups) built on the body only; the
    head never trains."""
    from transformers.optimization import Adafactor

    model = _mlp()
    opt = Adafactor(model[0].parameters(), lr=None, relative_step=True)
    return _plain_steps(runs_dir, "adafactor-head-missing", model, opt, steps=40)


def unseen_healthy() -> dict[str, Loop]:
    return {
        "gan_frozen_discriminator": gan_frozen_discriminator,
        "value_clipping": value_clipping,
        "two_heads_two_backwards": two_heads_two_backwards,
        "text_classifier_large_vocab": text_classifier_large_vocab,
        "pruned_mid_run": pruned_mid_run,
        "gradient_noise": gradient_noise,
        "swa_copy_evaluated": swa_copy_evaluated,
    }


def unseen_buggy() -> dict[str, Loop]:
    return {"sparse_table_never_used": sparse_table_never_used,
            "adafactor_head_missing": adafactor_head_missing}
