"""Litmus checks on gradients: every term reaches the params, eigenvector gauges do not
matter, the spectral backward matches finite differences, rank-deficient outputs keep
gradients bounded, and no sample's loss reaches another sample (docs/design.md §6)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from riswb.reference.litmus.pipeline import Pipeline
from riswb.reference.litmus.results import CheckResult, first_line, g3
from riswb.reference.losses import weighted_total

PHASE_RTOL = 1e-3  # relative change of a term under a gauge change (float32 rounding ~1e-6)
RANK_GRAD_MAX = 1e4  # ‖∂term/∂(R_pred, outputs)‖ at rank-1 R_pred (clean: < 1; eigh: ~1e5+)


def _slice_output(out: Any, index: slice) -> Any:
    values = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    return dataclasses.replace(out, **{n: v[index] if isinstance(v, torch.Tensor) else v
                                       for n, v in values.items()})


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
            report[name] = {"norm": math.nan, "nonfinite": -1, "error": first_line(error)}
            continue
        norm, bad = _grad_norm(list(grads))
        report[name] = {"norm": norm, "nonfinite": bad}
    return report



def check_finite_nonzero_grads(pipe: Pipeline) -> CheckResult:
    with pipe.copy() as (clone, seen):
        total = clone.forward_loss(pipe.batch)
    terms, weights = seen.terms, seen.weights
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
            bad[name] = f"zero gradient (‖g‖ = {g3(r['norm'])})"
        elif weights.get(name, 1.0) == 0.0:
            bad[name] = "weight 0"
    zero_weight = [n for n in per if weights.get(n, 1.0) == 0.0]
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
        bad.setdefault("total", f"backward raised {first_line(error)}")
    evidence = {"terms": per, "weights": weights, "offending": bad, "dead_params": dead}
    passed = not bad and not dead
    if passed:
        norms = [r["norm"] for r in per.values()]
        detail = (f"{len(per)} terms, ‖∂term/∂θ‖ in [{g3(min(norms))}, {g3(max(norms))}], "
                  f"all {len(params)} trainable tensors reached")
    else:
        parts = [f"{n}: {why}" for n, why in bad.items()]
        if dead:
            parts.append(f"{len(dead)} trainable tensor(s) get no gradient "
                         f"({', '.join(dead[:4])}{', …' if len(dead) > 4 else ''})")
        detail = "; ".join(parts)
    return CheckResult("finite-nonzero-grads", passed, detail, evidence)


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
    with pipe.copy() as (clone, _):
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
                    graph = {n: v for n, v in terms.items() if v.requires_grad}
                    if graph:
                        torch.autograd.grad(weighted_total(graph, clone.weights),
                                            [rotated.R_pred, rotated.factor], allow_unused=True)
            except RuntimeError as error:
                raised = first_line(error)
    changes = {n: abs(moved[n] - base[n]) / max(1.0, abs(base[n])) for n in base if n in moved}
    bad = {n: c for n, c in changes.items() if not (c <= PHASE_RTOL)}
    evidence = {"relative_change": changes, "before": base, "after": moved, "rtol": PHASE_RTOL,
                "backward_error": raised}
    passed = not bad and raised is None
    if passed:
        worst = max(changes, key=changes.get) if changes else "-"
        detail = (f"{len(changes)} terms unchanged under random eigenvector/factor phases "
                  f"(max relative change {g3(changes.get(worst, 0.0))}, {worst})")
    else:
        parts = [f"{n} {g3(base[n])} → {g3(moved[n])}" for n in bad]
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
            results[path] = {"passed": False, "error": first_line(error)}
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
    with pipe.copy() as (clone, _):
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
                    why = f"‖g‖ = {g3(r['norm'])} > {RANK_GRAD_MAX:g} ({variant})"
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
                  f"bounded gradients for all {len(values['generic'])} terms (max ‖g‖ {g3(top)})")
    return CheckResult("rank-deficient-grads", not bad, detail, evidence)



def check_batch_independence(pipe: Pipeline) -> CheckResult:
    with pipe.copy() as (clone, _):
        batch = pipe.batch
        b = len(batch)
        weights = clone.weights
        problems = []
        # 1. through the model: ∂ℓ_0/∂y_j for j ≠ 0
        y = batch.y.detach().clone().requires_grad_()
        leaf_batch = pipe.batch_copy(y=y)
        out = clone.forward(leaf_batch)
        one = slice(0, 1)
        loss0 = weighted_total(
            clone.compute_terms(_slice_output(out, one), batch[torch.tensor([0])]), weights)
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
                f"{g3(v / max(own, 1e-30))} (j={j})" for j, v in model_mix.items()))
        # 2. through the terms: B·∂L/∂out_0 (full batch) = ∂ℓ_0/∂out_0 (sample 0 alone)
        detached = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
        tensors = [n for n, v in detached.items() if isinstance(v, torch.Tensor)
                   and (v.is_floating_point() or v.is_complex())]

        def grads_of(sub_batch, count):
            leaves = {n: detached[n].detach()[:count].clone().requires_grad_() for n in tensors}
            o = dataclasses.replace(out, **leaves)
            total = weighted_total(clone.compute_terms(o, sub_batch), weights)
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
                        ", ".join(f"{g3(d)} ({n})" for n, d in term_mix.items()))
    evidence = {"batch": b, "own_grad": own, "cross_grads": leak, "terms_relative": term_diff}
    if problems:
        detail = "; ".join(problems)
    else:
        detail = (f"sample 0's loss: zero gradient into the other {b - 1} inputs, and its "
                  f"output gradient is the same alone (max rel. diff "
                  f"{g3(max(term_diff.values(), default=0.0))})")
    return CheckResult("batch-independence", not problems, detail, evidence)

