"""Litmus: gradient checks on the bare reference pipeline, before any training (docs/design.md §6).

`run_litmus(preset, inject, seed)` builds the pipeline with `faults.build_trainer` (a few
scenes, never `run()`) and runs named checks on a tiny batch; each returns a `CheckResult`
(name, passed, one-line detail with the numbers, evidence dict). The checks go through the
trainer's own methods (`forward_loss`, `forward`, `compute_terms`, `backward_and_step`,
`optimizer_step`, the optimizer and scheduler it built), so a fault that overrides one of
them is exercised exactly where it sits. Methods that need the Workbench run against
`_StubWorkbench` (records announced inputs and terms, counts, logs nothing), and anything
that steps or mutates runs on a shallow copy of the trainer holding a deep copy of the
model, a fresh optimizer with the same groups, and its own scheduler.

Checks (names are stable; `riswb.reference.faults` refers to them):

=====================  ===================================================================
finite-nonzero-grads   every term (unweighted) sends a finite, non-zero gradient to the
                       params; no term has weight 0; every trainable tensor gets a non-zero
                       gradient from the weighted total (docs/failures.md #7, 8, 10, 16)
oracle-values          at R_pred = R_true (factor spanning the truth, β = 0) every
                       covariance term ≤ ORACLE_TOL; nmse(0, R) = nmse_pred(0, R) = 1 ± 1e-4
                       through `compute_terms` (docs/failures.md #14, 15)
phase-invariance       terms unchanged (≤ PHASE_RTOL) when the factor's columns and every
                       eigh/eig/svd eigenvector are multiplied by random e^{iφ} (signs for
                       real input), and backward does not raise (docs/failures.md #11)
spectral-gradcheck     torch.autograd.gradcheck (float64, N = 6) of the spectral terms on both
                       decomposition paths (full eigh; certified low-rank with a factor hint)
rank-deficient-grads   finite gradients, ‖g‖ ≤ RANK_GRAD_MAX, of every term at a rank-1 R_pred
                       (generic direction; and axis-aligned, so its N − 1 zero eigenvalues
                       are exactly equal) with k = K_MAX true sources (docs/failures.md #10)
optimizer-coverage     every trainable param in exactly one group, nothing stale, no group
                       with lr = 0 (current or initial; docs/failures.md #2, 6)
step-moves-groups      one real training step (backward_and_step) on a copy moves every
                       param group: ‖Δθ‖/‖θ‖ > MOVE_TOL (docs/failures.md #2, 5, 6)
init-loss-range        at init every term finite and |term| ≤ 1e3, total in [1e-3, 1e3], at
                       the β ramp's start and end (docs/failures.md #8, 13)
no-grad-into-inputs    after a backward, the announced inputs, the batch, the dataset and the
                       model's buffers neither require grad, hold .grad, nor hang off a graph
                       (docs/failures.md #22)
batch-independence     ∂ℓ_0/∂y_j = 0 for j ≠ 0 through the model (≤ 1e-6 relative), and
                       B·∂L/∂out_0 = ∂ℓ_0/∂out_0 through the terms (≤ 1e-3 relative)
output-contract        R_pred complex, (B,N,N), Hermitian, PSD, trace N; k_logits, aux shapes;
                       all finite (docs/failures.md #17)
=====================  ===================================================================
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from riswb.errors import RiswbError

__all__ = [
    "CHECKS",
    "CheckResult",
    "LitmusResult",
    "Pipeline",
    "run_checks",
    "run_litmus",
]

BATCH = 4  # scenes per check batch: small enough to keep the whole litmus ~10 s on 2 cores
SCENES = 16  # scenes the pipeline is built with (cached after the first build)
ORACLE_TOL = 1e-2  # covariance terms at the oracle (the factor projector's δ costs ~1e-3)
PHASE_RTOL = 1e-3  # relative change of a term under a gauge change (float32 rounding ~1e-6)
MOVE_TOL = 1e-9  # ‖Δθ‖/‖θ‖ of a group after one step (AdamW's first step gives ~1e-4)
RANK_GRAD_MAX = 1e4  # ‖∂term/∂(R_pred, outputs)‖ at rank-1 R_pred (clean: < 1; eigh: ~1e5+)
LOSS_RANGE = (1e-3, 1e3)
TERM_MAX = 1e3
NON_COVARIANCE = frozenset({"K", "aux"})  # terms that do not read R_pred or the factor


# --------------------------------------------------------------------------- results


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail,
                "evidence": _plain(self.evidence), "seconds": round(self.seconds, 3)}


@dataclass
class LitmusResult:
    preset: str
    inject: str | None
    seed: int
    checks: list[CheckResult]
    seconds: float = 0.0
    expected_failures: tuple[str, ...] = ()  # the fault's `litmus` signature, if injected

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> list[str]:
        return [check.name for check in self.checks if not check.passed]

    def __getitem__(self, name: str) -> CheckResult:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "preset": self.preset, "inject": self.inject,
                "seed": self.seed, "seconds": round(self.seconds, 3), "failed": self.failed,
                "expected_failures": list(self.expected_failures),
                "checks": [check.to_dict() for check in self.checks]}


def _plain(value: Any) -> Any:
    """JSON-friendly copy (tensors to numbers/lists, non-finite floats to strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.detach().cpu().tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return value


def _g(x: float) -> str:
    return f"{x:.3g}"


# --------------------------------------------------------------------------- the pipeline


class _Writer:
    def __init__(self) -> None:
        self.events: list[tuple[Any, str, dict[str, Any]]] = []

    def event(self, step: Any, name: str, **payload: Any) -> None:
        self.events.append((step, name, payload))

    def scalars(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update_manifest(self, **kwargs: Any) -> None:
        pass


class _StubWorkbench:
    """The surface of `Workbench` the trainer's step methods use, without a run directory:
    records the inputs announced at batch_start and the terms given to `loss`."""

    def __init__(self) -> None:
        self.writer = _Writer()
        self.step = 0
        self.inputs: dict[str, Any] = {}
        self.terms: dict[str, torch.Tensor] = {}
        self.weights: dict[str, float] = {}
        self.sanitized = 0
        self.clip_norms: list[float] = []
        self.path = None

    def emit(self, event: Any, **payload: Any) -> None:
        if str(getattr(event, "value", event)) == "batch_start":
            self.inputs = dict(payload.get("inputs") or {})

    def loss(self, terms: dict[str, torch.Tensor], weights: dict[str, float] | None = None):
        self.terms = dict(terms)
        self.weights = {n: float(1.0 if weights is None else weights.get(n, 1.0)) for n in terms}
        total = None
        for name, value in terms.items():
            contrib = self.weights[name] * value
            total = contrib if total is None else total + contrib
        if total is None:
            raise ValueError("loss needs at least one named term")
        return total

    def sanitize_(self, params=None) -> torch.Tensor:
        count = 0
        with torch.no_grad():
            for p in params or []:
                if p.grad is not None:
                    count += int((~torch.isfinite(p.grad)).sum())
                    torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        self.sanitized += count
        return torch.tensor(count)

    def clip_grad_norm_(self, params=None, max_norm=None, norm_type: float = 2.0, **kwargs):
        norm = torch.nn.utils.clip_grad_norm_(list(params or []), max_norm, norm_type, **kwargs)
        self.clip_norms.append(float(norm))
        return norm

    def evaluate(self, *args: Any, **kwargs: Any) -> None:
        pass


class _NoScheduler:
    def step(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class Pipeline:
    """What the checks share: the (possibly faulty) trainer and one tiny batch."""

    trainer: Any
    batch: Any
    seed: int = 0

    @classmethod
    def of(cls, trainer: Any, batch_size: int = BATCH, seed: int = 0) -> Pipeline:
        return cls(trainer, _pick_batch(trainer.train_set, trainer.preset.k_max, batch_size),
                   seed)

    @property
    def preset(self):
        return self.trainer.preset

    @property
    def params(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.trainer.model.named_parameters() if p.requires_grad]

    def clone(self, *, beta: float | None = None) -> Any:
        """A shallow copy of the trainer with its own model copy, a fresh optimizer holding
        the same groups (same hyperparameters, current lr), its own scheduler (built by the
        trainer's `make_scheduler`), no averages, no scaler, and a stub Workbench."""
        t = self.trainer
        clone = copy.copy(t)
        clone.model = copy.deepcopy(t.model)
        clone.model.train()
        mapping = {id(p): q for p, q in zip(t.model.parameters(), clone.model.parameters(),
                                            strict=True)}
        groups = []
        for group in t.optimizer.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = [mapping[id(p)] for p in group["params"] if id(p) in mapping]
            groups.append(g)
        groups = [g for g in groups if g["params"]] or [{"params": [], "lr": 0.0}]
        opt_cls = type(t.optimizer)
        clone.optimizer = _same_optimizer(opt_cls, groups, t.optimizer.defaults) \
            if groups[0]["params"] else None
        clone.scheduler = _NoScheduler()
        if clone.optimizer is not None:
            try:
                # the trainer's own scheduler, on the clone's optimizer; its initial lr
                # step reproduces the lr the original scheduler set
                clone.scheduler = clone.make_scheduler()
            except Exception:  # noqa: BLE001 - a scheduler that cannot be rebuilt: none
                clone.scheduler = _NoScheduler()
            for g, original in zip(clone.optimizer.param_groups, groups, strict=False):
                g["lr"] = original["lr"]
        clone.ema = None
        clone.swa = None
        clone.scaler = None
        clone.wb = _StubWorkbench()
        if beta is not None:
            clone.beta = lambda epoch: beta
        return clone

    def batch_copy(self, **fields_: Any):
        return dataclasses.replace(self.batch, **fields_)


def _same_optimizer(opt_cls: type, groups: list[dict[str, Any]], defaults: dict[str, Any]):
    """`opt_cls(groups, **defaults)` with the defaults its constructor accepts (every group
    already carries every hyperparameter)."""
    import inspect

    accepted = inspect.signature(opt_cls.__init__).parameters
    return opt_cls(groups, **{k: v for k, v in defaults.items() if k in accepted})


def _pick_batch(scenes: Any, k_max: int, size: int):
    """`size` scenes covering every source count present, k = K_MAX first."""
    k = scenes.k
    chosen: list[int] = []
    for value in sorted(set(k.tolist()), reverse=True):
        chosen.append(int((k == value).nonzero()[0]))
    for i in range(len(scenes)):
        if len(chosen) >= size:
            break
        if i not in chosen:
            chosen.append(i)
    return scenes[torch.tensor(sorted(chosen[:size]))]


def _slice_output(out: Any, index: slice) -> Any:
    values = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    return dataclasses.replace(out, **{n: v[index] if isinstance(v, torch.Tensor) else v
                                       for n, v in values.items()})


def _weighted(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    return sum(float(weights.get(n, 1.0)) * v for n, v in terms.items())


def _grad_norm(grads: list[torch.Tensor | None]) -> tuple[float, int]:
    """(‖g‖ over all elements, number of non-finite elements; counted only if ‖g‖ is not
    finite)."""
    present = [torch.view_as_real(g) if g.is_complex() else g for g in grads if g is not None]
    if not present:
        return 0.0, 0
    norms = torch.stack([torch.linalg.vector_norm(g).to(torch.float64) for g in present])
    norm = float(torch.linalg.vector_norm(norms))
    if math.isfinite(norm):
        return norm, 0
    bad = sum(int((~torch.isfinite(g)).sum()) for g in present)
    finite = [torch.where(torch.isfinite(g), g, torch.zeros_like(g)) for g in present]
    return float(torch.sqrt(sum(g.double().square().sum() for g in finite))), max(bad, 1)


def _term_grads(terms: dict[str, torch.Tensor], leaves: list[torch.Tensor]
                ) -> dict[str, dict[str, Any]]:
    """Per term: gradient norm over `leaves`, non-finite count, or the error backward raised."""
    report: dict[str, dict[str, Any]] = {}
    for name, value in terms.items():
        if not isinstance(value, torch.Tensor) or not value.requires_grad:
            report[name] = {"norm": 0.0, "nonfinite": 0, "detached": True}
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                grads = torch.autograd.grad(value, leaves, retain_graph=True, allow_unused=True)
        except RuntimeError as error:
            report[name] = {"norm": math.nan, "nonfinite": -1, "error": _first_line(error)}
            continue
        norm, bad = _grad_norm(list(grads))
        report[name] = {"norm": norm, "nonfinite": bad}
    return report


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160] if text else ''}"


# --------------------------------------------------------------------------- the checks


def check_finite_nonzero_grads(pipe: Pipeline) -> CheckResult:
    clone = pipe.clone()
    wb = clone.wb
    total = clone.forward_loss(pipe.batch)
    terms = wb.terms
    named = [(n, p) for n, p in clone.model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    params = [p for _, p in named]
    per = _term_grads(terms, params)
    peak = max((r["norm"] for r in per.values() if math.isfinite(r["norm"])), default=0.0)
    bad: dict[str, str] = {}
    for name, r in per.items():
        if "error" in r:
            bad[name] = "backward raised"
        elif r["nonfinite"]:
            bad[name] = f"{r['nonfinite']} non-finite grad elements"
        elif r.get("detached"):
            bad[name] = "detached (no graph)"
        elif r["norm"] == 0.0 or r["norm"] <= 1e-9 * peak:
            bad[name] = f"zero gradient (‖g‖ = {_g(r['norm'])})"
        elif wb.weights.get(name, 1.0) == 0.0:
            bad[name] = "weight 0"
    zero_weight = [n for n in per if wb.weights.get(n, 1.0) == 0.0]
    if len(zero_weight) == len(per) and per:
        for n in zero_weight:
            bad.pop(n, None)
        bad["every term"] = "weight 0 (the weighted loss is identically 0)"
    dead: list[str] = []
    try:
        grads = torch.autograd.grad(total, params, allow_unused=True) if total.requires_grad \
            else [None] * len(params)
        dead = [n for n, g in zip(names, grads, strict=True)
                if g is None or not bool(torch.any(g != 0))]
    except RuntimeError as error:
        bad.setdefault("total", f"backward raised {_first_line(error)}")
    evidence = {"terms": per, "weights": wb.weights, "offending": bad, "dead_params": dead}
    passed = not bad and not dead
    if passed:
        norms = [r["norm"] for r in per.values()]
        detail = (f"{len(per)} terms, ‖∂term/∂θ‖ in [{_g(min(norms))}, {_g(max(norms))}], "
                  f"all {len(params)} trainable tensors reached")
    else:
        parts = [f"{n}: {why}" for n, why in bad.items()]
        if dead:
            parts.append(f"{len(dead)} trainable tensor(s) get no gradient "
                         f"({', '.join(dead[:4])}{', …' if len(dead) > 4 else ''})")
        detail = "; ".join(parts)
    return CheckResult("finite-nonzero-grads", passed, detail, evidence)


def _oracle_output(pipe: Pipeline, batch: Any, model_out: Any) -> Any:
    """A ModelOutput holding the truth: R_pred = R_true, the factor = R_true's top-K_MAX
    eigenvectors scaled by √λ (spans the true subspace), confident k logits, aux = truth."""
    r_true = batch.R_true
    evals, vecs = torch.linalg.eigh(0.5 * (r_true + r_true.mH))
    k_max = pipe.preset.k_max
    evals, vecs = evals.flip(-1)[..., :k_max], vecs.flip(-1)[..., :k_max]
    factor = vecs * evals.clamp_min(0).sqrt()[:, None, :].to(vecs.dtype)
    logits = torch.full((len(batch), k_max), -30.0)
    logits[torch.arange(len(batch)), (batch.k - 1).clamp_min(0)] = 30.0
    aux = torch.stack([batch.phi, batch.theta, batch.r], -1)
    return dataclasses.replace(model_out, R_pred=r_true.clone(), factor=factor.to(r_true.dtype),
                               k_logits=logits.to(model_out.k_logits.dtype), aux=aux)


def check_oracle_values(pipe: Pipeline) -> CheckResult:
    clone = pipe.clone(beta=0.0)
    batch = pipe.batch
    with torch.no_grad():
        model_out = clone.forward(batch)
        oracle = _oracle_output(pipe, batch, model_out)
        at_truth = {n: float(v) for n, v in clone.compute_terms(oracle, batch).items()}
        zero = dataclasses.replace(oracle, R_pred=torch.zeros_like(oracle.R_pred),
                                   factor=torch.zeros_like(oracle.factor))
        at_zero = {n: float(v) for n, v in clone.compute_terms(zero, batch).items()
                   if n in ("nmse", "nmse_pred")}
    problems = []
    for name, value in at_truth.items():
        if name in NON_COVARIANCE:
            continue
        if not (math.isfinite(value) and abs(value) <= ORACLE_TOL):
            problems.append(f"{name}(R_true) = {_g(value)}")
    for name in ("nmse", "nmse_pred"):
        if name not in at_zero:
            if name in at_truth or name == "nmse":
                problems.append(f"{name} missing from the terms")
            continue
        if not (math.isfinite(at_zero[name]) and abs(at_zero[name] - 1) <= 1e-4):
            problems.append(f"{name}(0, R) = {_g(at_zero[name])} (expected 1)")
    cov = {n: v for n, v in at_truth.items() if n not in NON_COVARIANCE}
    evidence = {"at_truth": at_truth, "at_zero": at_zero, "tol": ORACLE_TOL, "beta": 0.0}
    if problems:
        detail = "; ".join(problems) + f" (tol {ORACLE_TOL:g})"
    else:
        worst = max(cov, key=lambda n: abs(cov[n])) if cov else "-"
        detail = (f"{len(cov)} covariance terms ≤ {_g(abs(cov.get(worst, 0.0)))} ({worst}) at "
                  f"R_pred = R_true; nmse(0, R) = {_g(at_zero.get('nmse', math.nan))}")
    return CheckResult("oracle-values", not problems, detail, evidence)


@contextlib.contextmanager
def random_gauge(generator: torch.Generator) -> Iterator[None]:
    """Within the block, torch.linalg.eigh/eig/svd return eigen/singular vectors multiplied
    by random phases e^{iφ} (random signs for real input): still valid decompositions."""
    linalg = torch.linalg
    saved = {name: getattr(linalg, name) for name in ("eigh", "eig", "svd")}

    def phases(like: torch.Tensor) -> torch.Tensor:
        shape = (*like.shape[:-2], 1, like.shape[-1])
        u = torch.rand(shape, generator=generator, dtype=torch.float64)
        if like.is_complex():
            return torch.polar(torch.ones_like(u), 2 * math.pi * u).to(like.dtype).to(like.device)
        return torch.where(u < 0.5, -1.0, 1.0).to(like.dtype).to(like.device)

    def eigh(A, *args, **kwargs):
        res = saved["eigh"](A, *args, **kwargs)
        return type(res)((res.eigenvalues, res.eigenvectors * phases(res.eigenvectors)))

    def eig(A, *args, **kwargs):
        res = saved["eig"](A, *args, **kwargs)
        return type(res)((res.eigenvalues, res.eigenvectors * phases(res.eigenvectors)))

    def svd(A, *args, **kwargs):
        res = saved["svd"](A, *args, **kwargs)
        d = phases(res.U[..., :, : res.S.shape[-1]])
        U = torch.cat([res.U[..., : d.shape[-1]] * d, res.U[..., d.shape[-1]:]], -1)
        Vh = torch.cat([res.Vh[..., : d.shape[-1], :] * d.conj().mT,
                        res.Vh[..., d.shape[-1]:, :]], -2)
        return type(res)((U, res.S, Vh))

    try:
        linalg.eigh, linalg.eig, linalg.svd = eigh, eig, svd
        yield
    finally:
        linalg.eigh, linalg.eig, linalg.svd = saved["eigh"], saved["eig"], saved["svd"]


def check_phase_invariance(pipe: Pipeline) -> CheckResult:
    clone = pipe.clone()
    batch = pipe.batch
    gen = torch.Generator().manual_seed(pipe.seed + 11)
    with torch.no_grad():
        out = clone.forward(batch)
        base = {n: float(v) for n, v in clone.compute_terms(out, batch).items()}
    factor = out.factor.detach()
    u = torch.rand(factor.shape[0], 1, factor.shape[-1], generator=gen, dtype=torch.float64)
    rot = torch.polar(torch.ones_like(u), 2 * math.pi * u).to(factor.dtype)
    rotated = dataclasses.replace(out, R_pred=out.R_pred.detach().requires_grad_(),
                                  factor=(factor * rot).requires_grad_())
    raised = None
    with random_gauge(gen):
        terms = clone.compute_terms(rotated, batch)
        moved = {n: float(v.detach()) for n, v in terms.items()}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                total = _weighted({n: v for n, v in terms.items() if v.requires_grad},
                                  clone.weights)
                if isinstance(total, torch.Tensor) and total.requires_grad:
                    torch.autograd.grad(total, [rotated.R_pred, rotated.factor],
                                        allow_unused=True)
        except RuntimeError as error:
            raised = _first_line(error)
    changes = {n: abs(moved[n] - base[n]) / max(1.0, abs(base[n])) for n in base if n in moved}
    bad = {n: c for n, c in changes.items() if not (c <= PHASE_RTOL)}
    evidence = {"relative_change": changes, "before": base, "after": moved, "rtol": PHASE_RTOL,
                "backward_error": raised}
    passed = not bad and raised is None
    if passed:
        worst = max(changes, key=changes.get) if changes else "-"
        detail = (f"{len(changes)} terms unchanged under random eigenvector/factor phases "
                  f"(max relative change {_g(changes.get(worst, 0.0))}, {worst})")
    else:
        parts = [f"{n} {_g(base[n])} → {_g(moved[n])}" for n in bad]
        if raised:
            parts.append(f"backward raised {raised}")
        detail = "phase-dependent: " + "; ".join(parts)
    return CheckResult("phase-invariance", passed, detail, evidence)


def _spectral_functions(n: int, k_max: int, gen: torch.Generator):
    """Real-input functions (float64 vectors → term values) for gradcheck, one per path."""
    from riswb.reference import losses
    from riswb.reference.spectral import spectral_decompose

    cdt = torch.complex128

    def crandn(*shape):
        return torch.complex(torch.randn(*shape, generator=gen, dtype=torch.float64),
                             torch.randn(*shape, generator=gen, dtype=torch.float64)).to(cdt)

    b = 2
    k = torch.tensor([2, 1])
    mask = torch.arange(k_max)[None, :] < k[:, None]
    A = crandn(b, n, k_max)
    A = A / torch.linalg.vector_norm(A, dim=-2, keepdim=True) * mask[:, None, :]
    Q_t = torch.linalg.qr(crandn(b, n, k_max)).Q * mask[:, None, :]
    probe = crandn(5, n)  # (n_probe, N) like LossGeometry.probe
    probe = probe / torch.linalg.vector_norm(probe, dim=-1, keepdim=True)
    # a Hermitian matrix with a clear gap after k and distinct eigenvalues (the eigh path)
    U = torch.linalg.qr(crandn(b, n, n)).Q
    lam = torch.tensor([6.0, 4.5, 3.0, 1.0, 0.7, 0.4, 0.25, 0.1][:n], dtype=torch.float64)
    R0 = (U * lam.to(cdt)) @ U.mH
    F0 = crandn(b, n, k_max)

    def terms_of(spec, F):
        return torch.stack([
            losses.ortho(spec, Q_t), losses.gap(spec, k, tau=0.0), losses.margin(spec, k),
            losses.subspace_align(spec, Q_t, k), losses.peak(spec, A, mask),
            losses.peak_contrast(spec, A, mask, probe),
            losses.cross(F, Q_t, k), losses.align(F, Q_t, k),
        ])

    def full_path(x):  # x: (b, n, n, 2) real perturbation of R0
        R = R0 + torch.view_as_complex(x)
        spec = spectral_decompose(R, k)
        assert spec.path == "eigh"
        return terms_of(spec, F0)

    def lowrank_path(x):  # x: (b, n, k_max, 2) real factor; R = F Fᴴ + σ² I as the model
        F = torch.view_as_complex(x)
        R = F @ F.mH + 0.3 * torch.eye(n, dtype=cdt)
        spec = spectral_decompose(R, k, hint=F)
        assert spec.path == "lowrank", spec.path
        return terms_of(spec, F)

    x_full = torch.zeros(b, n, n, 2, dtype=torch.float64, requires_grad=True)
    x_low = torch.view_as_real(F0).clone().requires_grad_()
    return {"eigh": (full_path, x_full), "lowrank": (lowrank_path, x_low)}


SPECTRAL_TERMS = ("ortho", "gap", "margin", "subspace_align", "peak", "peak_contrast",
                  "cross", "align")


def check_spectral_gradcheck(pipe: Pipeline) -> CheckResult:
    gen = torch.Generator().manual_seed(pipe.seed + 5)
    results: dict[str, Any] = {}
    for path, (fn, x) in _spectral_functions(6, 3, gen).items():
        try:
            ok = torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5, rtol=1e-3,
                                          raise_exception=True, fast_mode=True)
            results[path] = {"passed": bool(ok)}
        except Exception as error:  # noqa: BLE001 - gradcheck raises GradcheckError
            results[path] = {"passed": False, "error": _first_line(error)}
            # name the terms whose Jacobian is off
            bad = []
            for i, name in enumerate(SPECTRAL_TERMS):
                try:
                    torch.autograd.gradcheck(lambda v, i=i, fn=fn: fn(v)[i], (x,), eps=1e-6,
                                             atol=1e-5, rtol=1e-3, raise_exception=True,
                                             fast_mode=True)
                except Exception:  # noqa: BLE001
                    bad.append(name)
            results[path]["terms"] = bad
    passed = all(r["passed"] for r in results.values())
    evidence = {"n": 6, "k_max": 3, "dtype": "complex128", "terms": list(SPECTRAL_TERMS),
                "paths": results, "atol": 1e-5, "rtol": 1e-3}
    if passed:
        detail = (f"{len(SPECTRAL_TERMS)} spectral terms match finite differences (float64, "
                  "N = 6) on the eigh and low-rank paths")
    else:
        detail = "; ".join(f"{p}: {', '.join(r.get('terms') or []) or r.get('error', '')}"
                           for p, r in results.items() if not r["passed"])
        detail = "analytic ≠ numerical Jacobian: " + detail
    return CheckResult("spectral-gradcheck", passed, detail, evidence)


def check_rank_deficient_grads(pipe: Pipeline) -> CheckResult:
    clone = pipe.clone()
    k_max = pipe.preset.k_max
    batch = pipe.batch
    full = batch.k == k_max
    if bool(full.any()):
        batch = batch[full.nonzero()[:, 0]]
    with torch.no_grad():
        out = clone.forward(batch)
    n = pipe.preset.n
    f_model = out.factor.detach()[..., :1]
    f_axis = torch.zeros_like(f_model)
    f_axis[:, 0] = 1  # R = N e_1 e_1ᴴ: exactly diagonal, exactly equal zero eigenvalues
    per_variant: dict[str, dict[str, Any]] = {}
    values: dict[str, dict[str, float]] = {}
    bad: dict[str, str] = {}
    for variant, f in (("generic", f_model), ("axis", f_axis)):
        f = f / torch.linalg.vector_norm(f, dim=-2, keepdim=True).clamp_min(1e-12)
        r1 = n * (f @ f.mH)  # rank 1, trace N: N − 1 zero eigenvalues
        r1 = 0.5 * (r1 + r1.mH)
        factor = torch.cat([f * math.sqrt(n), torch.zeros_like(out.factor[..., 1:])], -1)
        leaves = {"R_pred": r1.requires_grad_(), "factor": factor.requires_grad_(),
                  "k_logits": out.k_logits.detach().clone().requires_grad_(),
                  "aux": out.aux.detach().clone().requires_grad_()}
        rank1 = dataclasses.replace(out, **leaves)
        terms = clone.compute_terms(rank1, batch)
        per = _term_grads(terms, list(leaves.values()))
        per_variant[variant] = per
        values[variant] = {name: float(v.detach()) for name, v in terms.items()}
        for name, r in per.items():
            if "error" in r:
                why = f"backward raised ({variant})"
            elif r["nonfinite"]:
                why = f"{r['nonfinite']} non-finite grad elements ({variant})"
            elif r["norm"] > RANK_GRAD_MAX:
                why = f"‖g‖ = {_g(r['norm'])} > {RANK_GRAD_MAX:g} ({variant})"
            else:
                continue
            bad.setdefault(name, why)
    evidence = {"k": batch.k.tolist(), "rank": 1, "grad_max": RANK_GRAD_MAX,
                "terms": per_variant, "values": values}
    k = int(batch.k.max())
    if bad:
        detail = f"rank-1 R_pred, k = {k}: " + "; ".join(f"{n}: {why}" for n, why in bad.items())
    else:
        top = max((r["norm"] for per in per_variant.values() for r in per.values()), default=0.0)
        detail = (f"rank-1 R_pred (generic and axis-aligned) with k = {k} sources: finite, "
                  f"bounded gradients for all {len(values['generic'])} terms (max ‖g‖ {_g(top)})")
    return CheckResult("rank-deficient-grads", not bad, detail, evidence)


def check_optimizer_coverage(pipe: Pipeline) -> CheckResult:
    t = pipe.trainer
    names = {id(p): n for n, p in t.model.named_parameters()}
    trainable = {id(p): n for n, p in t.model.named_parameters() if p.requires_grad}
    seen: dict[int, list[str]] = {}
    groups = []
    for index, group in enumerate(t.optimizer.param_groups):
        label = str(group.get("name", index))
        for p in group["params"]:
            seen.setdefault(id(p), []).append(label)
        groups.append({"name": label, "params": len(group["params"]),
                       "elements": sum(p.numel() for p in group["params"]),
                       "lr": float(group["lr"]),
                       "initial_lr": float(group.get("initial_lr", group["lr"]))})
    missing = [n for i, n in trainable.items() if i not in seen]
    duplicated = {names.get(i, "?"): g for i, g in seen.items() if len(g) > 1}
    stale = sum(1 for i in seen if i not in names)
    frozen_in_opt = [names[i] for i in seen if i in names and i not in trainable]
    zero_lr = [g["name"] for g in groups if g["lr"] == 0.0 or g["initial_lr"] == 0.0]
    empty = [g["name"] for g in groups if g["params"] == 0]
    evidence = {"groups": groups, "missing": missing, "duplicated": duplicated, "stale": stale,
                "zero_lr_groups": zero_lr, "empty_groups": empty, "frozen_in_optimizer":
                frozen_in_opt, "trainable": len(trainable)}
    problems = []
    if missing:
        problems.append(f"{len(missing)} trainable tensor(s) in no group "
                        f"({', '.join(missing[:4])}{', …' if len(missing) > 4 else ''})")
    if duplicated:
        problems.append(f"{len(duplicated)} in several groups ({', '.join(list(duplicated)[:4])})")
    if stale:
        problems.append(f"{stale} optimizer tensor(s) not in the model")
    if zero_lr:
        problems.append("lr = 0 in group(s) " + ", ".join(
            f"{g['name']} (lr {_g(g['lr'])}, initial {_g(g['initial_lr'])})"
            for g in groups if g["name"] in zero_lr))
    if empty:
        problems.append(f"empty group(s) {', '.join(empty)}")
    if problems:
        detail = "; ".join(problems)
    else:
        detail = (f"{len(trainable)} trainable tensors, each in one of {len(groups)} groups (" +
                  ", ".join(f"{g['name']}: {g['params']} @ lr {_g(g['lr'])}" for g in groups) + ")")
    return CheckResult("optimizer-coverage", not problems, detail, evidence)


def check_step_moves_groups(pipe: Pipeline) -> CheckResult:
    clone = pipe.clone()
    if clone.optimizer is None:
        return CheckResult("step-moves-groups", False, "the optimizer holds no model parameter",
                           {"groups": {}})
    groups = [(str(g.get("name", i)), list(g["params"]))
              for i, g in enumerate(clone.optimizer.param_groups)]
    before = [[p.detach().clone() for p in params] for _, params in groups]
    loss = clone.forward_loss(pipe.batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stepped = clone.backward_and_step(loss)
    stats = {}
    for (name, params), old in zip(groups, before, strict=True):
        delta = math.sqrt(sum(float((p.detach() - o).double().square().sum())
                              for p, o in zip(params, old, strict=True)))
        norm = math.sqrt(sum(float(o.double().square().sum()) for o in old))
        moving = sum(bool(torch.any(p.detach() != o)) for p, o in zip(params, old, strict=True))
        stats[name] = {"ratio": delta / max(norm, 1e-30), "update_norm": delta,
                       "param_norm": norm, "tensors": len(params), "moving": moving}
    for (name, _), g in zip(groups, clone.optimizer.param_groups, strict=True):
        stats[name]["lr"] = float(g["lr"])
    still = [n for n, s in stats.items() if not (s["ratio"] > MOVE_TOL)]
    events = [e[1] for e in clone.wb.writer.events]
    evidence = {"groups": stats, "stepped": stepped, "events": events, "tol": MOVE_TOL,
                "loss": float(loss.detach())}
    if still:
        detail = ("one step left group(s) unmoved: " +
                  ", ".join(f"{n} (‖Δθ‖/‖θ‖ = {_g(stats[n]['ratio'])}, lr {_g(stats[n]['lr'])})"
                            for n in still))
        if stepped is False:
            detail += "; the step reported it did not step" + (
                f" ({', '.join(events)})" if events else "")
    else:
        detail = "one step moves every group: " + ", ".join(
            f"{n} ‖Δθ‖/‖θ‖ = {_g(s['ratio'])}" for n, s in stats.items())
    return CheckResult("step-moves-groups", not still, detail, evidence)


def check_init_loss_range(pipe: Pipeline) -> CheckResult:
    cfg = pipe.trainer.cfg
    betas = sorted({float(pipe.trainer.beta(pipe.trainer.epoch)), float(cfg.beta_end)})
    lo, hi = LOSS_RANGE
    runs = {}
    problems = []
    for beta in betas:
        clone = pipe.clone(beta=beta)
        with torch.no_grad():
            total = float(clone.forward_loss(pipe.batch))
        values = {n: float(v) for n, v in clone.wb.terms.items()}
        runs[f"beta={beta:g}"] = {"total": total, "terms": values, "weights": clone.wb.weights}
        tag = f" at β = {beta:g}" if len(betas) > 1 else ""
        for name, value in values.items():
            if not math.isfinite(value):
                problems.append(f"{name} = {value}{tag}")
            elif abs(value) > TERM_MAX:
                problems.append(f"{name} = {_g(value)} > {TERM_MAX:g}{tag}")
        if not (math.isfinite(total) and lo <= abs(total) <= hi):
            problems.append(f"total = {_g(total)} outside [{lo:g}, {hi:g}]{tag}")
    batch = pipe.batch
    scale = {
        "tr_R_samp/N": float(torch.diagonal(batch.R_samp, dim1=-2, dim2=-1).real.sum(-1).mean()
                             / pipe.preset.n),
        "tr_R_true/N": float(torch.diagonal(batch.R_true, dim1=-2, dim2=-1).real.sum(-1).mean()
                             / pipe.preset.n),
    }
    evidence = {"runs": runs, "range": list(LOSS_RANGE), "term_max": TERM_MAX, **scale}
    if problems:
        detail = "; ".join(problems)
    else:
        first = runs[f"beta={betas[0]:g}"]
        top = max(first["terms"], key=lambda n: abs(first["terms"][n]))
        detail = (f"total {_g(first['total'])} in [{lo:g}, {hi:g}], every term finite, largest "
                  f"{top} = {_g(first['terms'][top])}" +
                  (f" (β = {', '.join(f'{b:g}' for b in betas)})" if len(betas) > 1 else ""))
    return CheckResult("init-loss-range", not problems, detail, evidence)


def _tensor_fields(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _tensor_fields(getattr(obj, f.name), f"{prefix}.{f.name}")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensor_fields(value, f"{prefix}.{key}")


def check_no_grad_into_inputs(pipe: Pipeline) -> CheckResult:
    clone = pipe.clone()
    batch = pipe.batch_copy()
    loss = clone.forward_loss(batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss.backward()
    watched = [*_tensor_fields(clone.wb.inputs, "inputs"), *_tensor_fields(batch, "batch"),
               *_tensor_fields(pipe.trainer.train_set, "train_set")]
    if pipe.trainer.val_set is not pipe.trainer.train_set:
        watched += list(_tensor_fields(pipe.trainer.val_set, "val_set"))
    watched += [(f"model.{n}", b) for n, b in clone.model.named_buffers()]
    flagged = {}
    for name, tensor in watched:
        why = [w for w, bad in (("requires_grad", tensor.requires_grad),
                                ("has .grad", tensor.grad is not None if tensor.is_leaf else False),
                                ("hangs off a graph", tensor.grad_fn is not None)) if bad]
        if why:
            flagged[name] = why
    evidence = {"flagged": flagged, "watched": [n for n, _ in watched]}
    if flagged:
        detail = "; ".join(f"{n}: {', '.join(w)}" for n, w in flagged.items())
    else:
        detail = (f"{len(watched)} input/target/buffer tensors: no requires_grad, no .grad, no "
                  "graph after backward")
    return CheckResult("no-grad-into-inputs", not flagged, detail, evidence)


def check_batch_independence(pipe: Pipeline) -> CheckResult:
    clone = pipe.clone()
    batch = pipe.batch
    b = len(batch)
    weights = clone.weights
    problems = []
    # 1. through the model: ∂ℓ_0/∂y_j for j ≠ 0
    y = batch.y.detach().clone().requires_grad_()
    leaf_batch = pipe.batch_copy(y=y)
    out = clone.forward(leaf_batch)
    one = slice(0, 1)
    loss0 = _weighted(clone.compute_terms(_slice_output(out, one), batch[torch.tensor([0])]),
                      weights)
    (gy,) = torch.autograd.grad(loss0, [y], allow_unused=True)
    if gy is None:
        gy = torch.zeros_like(y)
    per = torch.view_as_real(gy).flatten(1).double().norm(dim=1) if gy.is_complex() \
        else gy.flatten(1).double().norm(dim=1)
    own = float(per[0])
    leak = {j: float(per[j]) for j in range(1, b)}
    model_mix = {j: v for j, v in leak.items() if v > 1e-6 * max(own, 1e-30)}
    if model_mix:
        problems.append("model mixes samples: ‖∂ℓ_0/∂y_j‖/‖∂ℓ_0/∂y_0‖ = " + ", ".join(
            f"{_g(v / max(own, 1e-30))} (j={j})" for j, v in model_mix.items()))
    # 2. through the terms: B·∂L/∂out_0 (full batch) = ∂ℓ_0/∂out_0 (sample 0 alone)
    detached = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    tensors = [n for n, v in detached.items() if isinstance(v, torch.Tensor)
               and (v.is_floating_point() or v.is_complex())]

    def grads_of(sub_batch, count):
        leaves = {n: detached[n].detach()[:count].clone().requires_grad_() for n in tensors}
        o = dataclasses.replace(out, **leaves)
        total = _weighted(clone.compute_terms(o, sub_batch), weights)
        gs = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
        return {n: (torch.zeros_like(leaves[n]) if g is None else g)[0]
                for n, g in zip(leaves, gs, strict=True)}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = grads_of(batch, b)
        alone = grads_of(batch[torch.tensor([0])], 1)
    term_diff = {}
    for name in tensors:
        a, s = full[name] * b, alone[name]
        a = torch.view_as_real(a) if a.is_complex() else a
        s = torch.view_as_real(s) if s.is_complex() else s
        term_diff[name] = float((a - s).double().norm() / s.double().norm().clamp_min(1e-30))
    term_mix = {n: d for n, d in term_diff.items() if not d <= 1e-3}
    if term_mix:
        problems.append("loss terms mix samples: relative ‖B·∂L/∂out_0 − ∂ℓ_0/∂out_0‖ = " +
                        ", ".join(f"{_g(d)} ({n})" for n, d in term_mix.items()))
    evidence = {"batch": b, "own_grad": own, "cross_grads": leak, "terms_relative": term_diff}
    if problems:
        detail = "; ".join(problems)
    else:
        detail = (f"sample 0's loss: zero gradient into the other {b - 1} inputs, and its "
                  f"output gradient is the same alone (max rel. diff "
                  f"{_g(max(term_diff.values(), default=0.0))})")
    return CheckResult("batch-independence", not problems, detail, evidence)


def check_output_contract(pipe: Pipeline) -> CheckResult:
    clone = pipe.clone()
    batch = pipe.batch
    p = pipe.preset
    b, n, k_max = len(batch), p.n, p.k_max
    with torch.no_grad():
        out = clone.forward(batch)
    problems = []
    R = getattr(out, "R_pred", None)
    stats: dict[str, Any] = {}
    if not isinstance(R, torch.Tensor) or not R.is_complex():
        problems.append(f"R_pred is {getattr(R, 'dtype', type(R).__name__)}, not complex")
    elif tuple(R.shape) != (b, n, n):
        problems.append(f"R_pred shape {tuple(R.shape)} != {(b, n, n)}")
    else:
        R = R.to(torch.complex128)
        scale = torch.linalg.matrix_norm(R).clamp_min(1e-30)
        herm = float((torch.linalg.matrix_norm(R - R.mH) / scale).max())
        lam = torch.linalg.eigvalsh(0.5 * (R + R.mH))
        neg = float((-lam[:, 0] / lam[:, -1].abs().clamp_min(1e-30)).max())
        tr = torch.diagonal(R, dim1=-2, dim2=-1).real.sum(-1)
        tr_err = float(((tr - n).abs() / n).max())
        finite = bool(torch.isfinite(torch.view_as_real(R)).all())
        stats.update(hermitian_error=herm, min_eig_rel=-neg, trace_error=tr_err, finite=finite)
        if not finite:
            problems.append("R_pred not finite")
        if herm > 1e-5:
            problems.append(f"R_pred not Hermitian (‖R − Rᴴ‖/‖R‖ = {_g(herm)})")
        if neg > 1e-4:
            problems.append(f"R_pred not PSD (λ_min/λ_max = {_g(-neg)})")
        if tr_err > 1e-3:
            problems.append(f"tr R_pred ≠ N (relative error {_g(tr_err)})")
    for name, shape in (("k_logits", (b, k_max)), ("aux", (b, k_max, 3))):
        value = getattr(out, name, None)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            problems.append(f"{name} shape {tuple(getattr(value, 'shape', ()))} != {shape}")
        elif not bool(torch.isfinite(value).all()):
            problems.append(f"{name} not finite")
    F = getattr(out, "factor", None)
    if isinstance(F, torch.Tensor):
        stats["factor_shape"] = list(F.shape)
        if not F.is_complex():
            problems.append(f"factor is {F.dtype}, not complex")
    evidence = {"stats": stats, "dtype": str(getattr(R, "dtype", None))}
    detail = "; ".join(problems) if problems else (
        f"R_pred {str(out.R_pred.dtype).replace('torch.', '')} ({b},{n},{n}): Hermitian "
        f"({_g(stats['hermitian_error'])}), PSD, trace N ({_g(stats['trace_error'])}); "
        "k_logits, aux shaped and finite")
    return CheckResult("output-contract", not problems, detail, evidence)


CHECKS: dict[str, Callable[[Pipeline], CheckResult]] = {
    "finite-nonzero-grads": check_finite_nonzero_grads,
    "oracle-values": check_oracle_values,
    "phase-invariance": check_phase_invariance,
    "spectral-gradcheck": check_spectral_gradcheck,
    "rank-deficient-grads": check_rank_deficient_grads,
    "optimizer-coverage": check_optimizer_coverage,
    "step-moves-groups": check_step_moves_groups,
    "init-loss-range": check_init_loss_range,
    "no-grad-into-inputs": check_no_grad_into_inputs,
    "batch-independence": check_batch_independence,
    "output-contract": check_output_contract,
}


# --------------------------------------------------------------------------- running


def _run_one(name: str, pipe: Pipeline) -> CheckResult:
    started = time.perf_counter()
    state = torch.get_rng_state()
    try:
        result = CHECKS[name](pipe)
    except Exception as error:  # noqa: BLE001 - a pipeline that crashes fails the check
        result = CheckResult(name, False, f"raised {_first_line(error)}",
                             {"error": _first_line(error)})
    finally:
        torch.set_rng_state(state)
    result.seconds = time.perf_counter() - started
    return result


def run_checks(trainer: Any, names: list[str] | tuple[str, ...] | None = None, *,
               seed: int = 0, batch_size: int = BATCH) -> list[CheckResult]:
    """Run the named checks (all by default) on an already built trainer."""
    names = list(CHECKS) if names is None else list(names)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise RiswbError(f"unknown litmus check(s) {', '.join(unknown)}; checks are "
                         f"{', '.join(CHECKS)}")
    pipe = Pipeline.of(trainer, batch_size=batch_size, seed=seed)
    return [_run_one(name, pipe) for name in names]


def run_litmus(preset: str = "small", inject: str | None = None, seed: int = 0, *,
               checks: list[str] | tuple[str, ...] | None = None, scenes: int = SCENES,
               batch_size: int = BATCH) -> LitmusResult:
    """Build the (faulty, with `inject`) reference pipeline without running it and check it."""
    from riswb.reference.config import TrainConfig
    from riswb.reference.faults import build_trainer, get_fault
    from riswb.reference.physics.presets import get_preset

    started = time.perf_counter()
    name = get_preset(preset).name  # RiswbError for an unknown preset
    expected = get_fault(inject).litmus if inject is not None else ()
    config = TrainConfig(name="litmus", preset=name, train_scenes=scenes, val_scenes=0,
                         seed=seed, batch_size=batch_size, device="cpu", inject=inject)
    torch.manual_seed(seed)
    trainer = build_trainer(config)
    results = run_checks(trainer, checks, seed=seed, batch_size=batch_size)
    return LitmusResult(preset=name, inject=inject, seed=seed, checks=results,
                        seconds=time.perf_counter() - started,
                        expected_failures=tuple(expected))
