"""Per-loss-term gradients on sampled steps (kinds `term_grad`, `term_cosine`, `term_nonfinite`).

At AFTER_LOSS — inside `wb.loss`, before the user's backward — on sampled steps the probe
takes g_t = ∂(w_t·term_t)/∂θ over all trainable tensors θ for every term t with
`torch.autograd.grad(w_t·term_t, θ, retain_graph=True, allow_unused=True)`; `.grad` is not
touched and the graph stays intact for the user's backward. From the per-tensor blocks it
accumulates the T×T Gram matrix G = Σ_p G_p G_pᵀ (float64), so

* `term_grad`      {term: ‖g_t‖ = √G_tt}: a term with no path to any parameter (detached,
  constant, all-None grads, weight 0) records exactly 0 — that is how `dead-loss-term` is
  found, so such terms are never skipped;
* `term_cosine`    {"a|b" (riswb.probes.term_keys: `|` and backslash in names escaped):
  G_ab / (‖g_a‖‖g_b‖)} for every pair in term order (written when
  there are ≥ 2 terms; NaN when either gradient is zero, the cosine being undefined);
* `term_nonfinite` {term: non-finite elements in g_t} (attributes `nonfinite-grads` to a term).

All three records carry the sampled step and are written at the next flush.

Schedule. A sampled step costs about one extra backward per term (T terms: ~T·⅔ of a step),
the only expensive thing among the default probes (the cheap per-interval view is
riswb.probes.term_output). Samples are FRONT-LOADED so that a term dead or dominant at init
is decided in the first steps: steps 0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144 after the
first step seen (`FRONT`: 12 samples in a 200-step run) are always sampled; on top, `every=N`
samples steps ≡ 0 mod N. The default, `every=None`, fixes N from a budget: the probe reads
the loop's own busy time of each optimizer-step cycle (`wb.cycle_busy`: first forward to
the step's end — data loading, and the other loops' turns in an interleaved benchmark, are
not the loop's step and would make samples look cheap), per `wb.loss` call in cycles
without a sample, and the excess per sample in cycles with samples (the first sample's
cycle is left out: it pays one-off warm-up costs, 190 ms vs 3 ms steady on a GPU); once it
holds `calibrate` (4) ordinary cycles and 3 sampled ones it takes as a sample's cost the
median excess (knock-on costs included: fresh allocations, evicted caches) and fixes N
once — the smallest of 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000 with
cost/N ≤ `budget` (default 1%) of a step. The chosen N goes to the manifest (`describe()`);
tests and reproducible records pass `every` explicitly. Measured with `riswb bench` (2-core
CPU, one thread): on the bench MLP (4×512, batch 256, 3 terms) N = 150 for a 20 ms step;
on the reference model (12 terms, a sample ≈ 330 ms more than a 50 ms step) N = 750. The budget is
1% because the probe shares the 1.05× overhead target with a dozen per-step probes.

Modes. `batched=False` (default): a loop of T `autograd.grad` calls — exactly the per-term
oracle. `batched=True|None`: ONE vmapped backward (`is_grads_batched=True`, grad_outputs =
I_T); `None` falls back to the loop for good if vmap cannot batch an op. In the batched
backward every term's row runs through the union of the terms' graphs, so a node whose
backward makes inf/NaN from a zero gradient (eigh at a degenerate spectrum) would blame
innocent terms: a non-finite batched result is therefore recomputed term by term. On CPU
the two modes cost about the same (vmap has a one-off set-up of ~1 s); on GPU batched saves
kernel launches. Memory: all T term gradients at once while autograd returns them.

Reentrant activation checkpointing (`use_reentrant=True`) forbids `autograd.grad` with
`inputs`: the probe then stops sampling and the manifest's probe entry says `unavailable`
("reentrant activation checkpointing"); no `term_grad` records follow (kind `term_grad_out`
still comes).

Host reads happen on sampled steps only (one: is the Gram diagonal finite?).
"""

from __future__ import annotations

import functools
import statistics
from typing import Any

import torch

from riswb.instrument.hooks import Event, Probe, StepContext
from riswb.probes.term_keys import gradient_terms, pair_key
from riswb.probes.term_reach import TermReach


def _scalar(term: torch.Tensor) -> torch.Tensor:
    return term if term.ndim == 0 else term.sum()


def _weight(weights: Any, name: str) -> Any:
    """The term's weight as a constant: a learnable weight (uncertainty weighting, exp(-s))
    would add ∂w/∂s·term on its own parameter, which the weight's regularizer term opposes
    by construction, and read as a conflict between the two; what a term sends to the model
    is w·∂term/∂θ."""
    if not weights:
        return 1.0
    value = weights.get(name, 1.0)
    if value is None:
        return 1.0
    return value.detach() if isinstance(value, torch.Tensor) else value


def _flat_real(grad: torch.Tensor, leading: int) -> torch.Tensor:
    """(leading, ...) gradient block as (leading, D) real (complex -> real/imag pairs)."""
    if grad.is_sparse:
        grad = grad.to_dense()
    if grad.is_complex():
        grad = torch.view_as_real(grad)
    return grad.reshape(leading, -1)


# the events that close a sampled cycle (TermReach) and time the calibration's cycles
_CYCLE_EVENTS = (Event.AFTER_BACKWARD, Event.AFTER_OPTIMIZER_STEP)

FRONT = frozenset((0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144))
_NICE = (10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000)


def nice_interval(raw: float, lo: int = 10, hi: int = 1000) -> int:
    """The smallest 'nice' interval ≥ raw, within [lo, hi]."""
    for value in _NICE:
        if lo <= value <= hi and value >= raw:
            return value
    return hi


class TermGradientsProbe(Probe):
    """Norms, pairwise cosines and non-finite counts of per-term gradients (sampled)."""

    name = "term_gradients"

    def __init__(
        self,
        every: int | None = None,
        *,
        budget: float = 0.01,
        calibrate: int = 4,
        batched: bool | None = False,
    ):
        """`every`: fixed sampling interval, or None for the budget-driven schedule.

        `budget`: target amortised cost as a fraction of a training step (every=None);
        `calibrate`: ordinary loop periods timed before the interval is fixed; `batched`: see the
        module docstring."""
        super().__init__()  # the registry delivers every AFTER_LOSS; `_due` decides
        if every is not None and every < 1:
            raise ValueError(f"probe schedule must be >= 1, got every={every}")
        if budget <= 0 or calibrate < 1:
            raise ValueError("budget must be > 0 and calibrate >= 1")
        self.interval: int | None = every
        self.auto = every is None
        self.budget = budget
        self.calibrate = calibrate
        self.batched = batched
        self.fallback_reason: str | None = None
        self.unavailable: str | None = None  # why exact samples cannot be taken here
        self._pending: list[tuple[int, list[str], torch.Tensor, torch.Tensor]] = []
        self._cost: float | None = None
        self._origin: int | None = None  # the first step seen: FRONT counts from it
        self._cycle_samples = 0  # samples taken in the current optimizer-step cycle
        self._warm = False  # the first sample's cycle (one-off costs) has passed
        self._ordinary: list[float] = []  # busy seconds per wb.loss, cycles without samples
        self.reach = TermReach()  # did the loop's backward go through each term?
        self._sampled: list[tuple[float, int, int]] = []  # (busy, losses, samples) with

    def describe(self) -> dict[str, Any]:
        mode = {None: "auto", True: "batched", False: "loop"}[self.batched]
        out = {**super().describe(), "every": self.interval or "auto", "mode": mode}
        if self.auto:
            out.update(budget=self.budget, sample_cost_s=self._cost)
        if self.unavailable:
            out["unavailable"] = self.unavailable
        return out

    def _due(self, step: int) -> bool:
        if step - self._origin in FRONT:
            return True
        return self.interval is not None and step % self.interval == 0

    def on_after_loss(self, ctx: StepContext) -> None:
        if self._origin is None:
            self._origin = ctx.step
        self.reach.note_loss()
        if self._due(ctx.step):
            self._cycle_samples += 1
            self._sample(ctx)
            # hooked after the sample: its own autograd.grad must not count as reaching them
            self.reach.watch(gradient_terms(ctx.payload), ctx.step)
            for event in _CYCLE_EVENTS:
                ctx.wb.registry.resume(self, event)

    def on_after_backward(self, ctx: StepContext) -> None:
        self.reach.on_backward(ctx.wb.backward_task)

    def on_after_optimizer_step(self, ctx: StepContext) -> None:
        self.reach.on_step()
        samples, self._cycle_samples = self._cycle_samples, 0
        busy, losses = ctx.wb.cycle_busy, ctx.wb.cycle_losses
        if self.interval is not None:  # nothing to do in a cycle until its next sample
            for event in _CYCLE_EVENTS:
                ctx.wb.registry.pause(self, event)
            return
        if busy is None or not losses:
            return
        if samples and not self._warm:
            self._warm = True  # the first sample's cycle: one-off warm-up, not a cost
        elif samples:
            self._sampled.append((busy, losses, samples))
        else:
            self._ordinary.append(busy / losses)
        self._fix_interval()

    def _fix_interval(self) -> None:
        if len(self._ordinary) < self.calibrate or len(self._sampled) < 3:
            return
        step_time = max(statistics.median(self._ordinary), 1e-9)
        self._cost = max(statistics.median(
            (busy - losses * step_time) / samples for busy, losses, samples in self._sampled
        ), 0.0)
        self.interval = nice_interval(self._cost / (self.budget * step_time))

    def _sample(self, ctx: StepContext) -> None:
        terms = gradient_terms(ctx.payload)
        if not terms or self.unavailable:
            return
        weights = ctx.payload.get("weights")
        # only the tensors that take a gradient now: a loop may freeze some for a phase
        # (a GAN's discriminator during the generator's step), and autograd.grad refuses those
        params = [p for _, p in ctx.wb.named_params if p.requires_grad]
        names = list(terms)
        outputs = [_weight(weights, n) * _scalar(terms[n]) for n in names]
        try:
            gram, nonfinite = self.term_statistics(outputs, params)
        except RuntimeError as error:
            if "use_reentrant" not in str(error):
                raise
            # reentrant checkpointing forbids autograd.grad(inputs=...): no exact samples
            # in this model (term_output still works); say so instead of failing
            self.unavailable = "reentrant activation checkpointing"
            ctx.wb.writer.update_manifest(probes=ctx.wb._describe_probes())
            return
        self._pending.append((ctx.step, names, gram, nonfinite))

    # -- the measurement ------------------------------------------------------------------

    def term_statistics(
        self, outputs: list[Any], params: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Gram (T,T) float64, non-finite counts (T,) float64) of ∂output_t/∂params."""
        count = len(outputs)
        device = params[0].device if params else torch.device("cpu")
        gram = torch.zeros(count, count, dtype=torch.float64, device=device)
        nonfinite = torch.zeros(count, dtype=torch.float64, device=device)
        live = [
            i
            for i, out in enumerate(outputs)
            if isinstance(out, torch.Tensor) and out.requires_grad
        ]
        if not live or not params:
            return gram, nonfinite
        sub_bad = torch.zeros(len(live), dtype=torch.float64, device=device)
        chosen = [outputs[i] for i in live]
        blocks, batched = self._gradient_blocks(chosen, params)
        sub_gram = self._gram(blocks, len(live), device)
        # ‖g‖² is finite exactly when every element is (barring overflow): one host read
        if not bool(torch.isfinite(sub_gram.diagonal()).all()):
            if batched:
                # In the batched backward every term's row runs through the union of the
                # terms' graphs: a zero row through a node whose backward makes inf/NaN from
                # it (eigh at a degenerate spectrum) turns NaN there and would blame innocent
                # terms. Exact attribution: redo it term by term. (A finite batched result
                # is exact, the backward being linear in the incoming gradient.)
                blocks = self._looped_blocks(chosen, params)
                sub_gram = self._gram(blocks, len(live), device)
            for block in blocks:
                bad = (~torch.isfinite(_flat_real(block, len(live)))).sum(1)
                sub_bad += bad.to(device=device, dtype=torch.float64)
        index = torch.tensor(live, device=device)
        gram[index.unsqueeze(1), index.unsqueeze(0)] = sub_gram
        nonfinite[index] = sub_bad
        return gram, nonfinite

    @staticmethod
    def _gram(blocks: list[torch.Tensor], count: int, device: torch.device) -> torch.Tensor:
        gram = torch.zeros(count, count, dtype=torch.float64, device=device)
        for block in blocks:
            flat = _flat_real(block, count)
            gram += (flat @ flat.T).to(device=device, dtype=torch.float64)
        return gram

    def _gradient_blocks(
        self, outputs: list[torch.Tensor], params: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], bool]:
        """Per parameter with any gradient, the (L, *shape) stack of the L terms' grads;
        and whether they came from the batched backward."""
        if self.batched is not False and len(outputs) > 1:
            try:
                return self._batched_blocks(outputs, params), True
            except Exception as error:  # vmap cannot batch some op: loop from now on
                if self.batched:
                    raise
                self.batched = False
                self.fallback_reason = f"{type(error).__name__}: {error}"[:300]
        return self._looped_blocks(outputs, params), False

    @staticmethod
    def _batched_blocks(
        outputs: list[torch.Tensor], params: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        dtype = functools.reduce(torch.promote_types, [out.dtype for out in outputs])
        stacked = torch.stack([out.to(dtype) for out in outputs])
        eye = torch.eye(len(outputs), dtype=stacked.dtype, device=stacked.device)
        grads = torch.autograd.grad(
            stacked,
            params,
            grad_outputs=eye,
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=True,
        )
        return [g for g in grads if g is not None]

    @staticmethod
    def _looped_blocks(
        outputs: list[torch.Tensor], params: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        per_term = [
            torch.autograd.grad(out, params, retain_graph=True, allow_unused=True)
            for out in outputs
        ]
        blocks = []
        for p, param in enumerate(params):
            column = [grads[p] for grads in per_term]
            if all(g is None for g in column):
                continue
            blocks.append(
                torch.stack([torch.zeros_like(param) if g is None else g for g in column])
            )
        return blocks

    # -- records --------------------------------------------------------------------------

    def flush(self, ctx: StepContext) -> None:
        pending, self._pending = self._pending, []
        writer = ctx.wb.writer
        self.reach.flush(writer, ctx.step)
        for step, names, gram, nonfinite in pending:
            norms = gram.diagonal().clamp_min(0).sqrt()
            cosine = (gram / (norms[:, None] * norms[None, :])).clamp(-1.0, 1.0)
            norm_list, cos_list, bad_list = norms.tolist(), cosine.tolist(), nonfinite.tolist()
            writer.scalars(step, "term_grad", dict(zip(names, norm_list, strict=True)))
            if len(names) > 1:
                pairs = {
                    pair_key(a, b): cos_list[i][j]
                    for i, a in enumerate(names)
                    for j, b in enumerate(names)
                    if i < j
                }
                writer.scalars(step, "term_cosine", pairs)
            counts = {n: int(v) for n, v in zip(names, bad_list, strict=True)}
            writer.scalars(step, "term_nonfinite", counts)
