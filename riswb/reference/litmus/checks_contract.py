"""Litmus checks on contracts: the oracle scores zero, the optimizer covers every trainable
tensor and one step moves every group, the initial loss is in range, no gradient flows into
the inputs, and the model's outputs have the shapes and properties the terms assume
(docs/design.md §6)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from riswb.probes.params import audit_coverage, group_label
from riswb.reference.litmus.pipeline import Pipeline, written_events
from riswb.reference.litmus.results import CheckResult, g3

ORACLE_TOL = 1e-2  # covariance terms at the oracle (the factor projector's δ costs ~1e-3)
MOVE_TOL = 1e-9  # ‖Δθ‖/‖θ‖ of a group after one step (AdamW's first step gives ~1e-4)
LOSS_RANGE = (1e-3, 1e3)
TERM_MAX = 1e3
NON_COVARIANCE = frozenset({"K", "aux"})  # terms that do not read R_pred or the factor


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
    batch = pipe.batch
    with pipe.copy(beta=0.0) as (clone, _), torch.no_grad():
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
            problems.append(f"{name}(R_true) = {g3(value)}")
    for name in ("nmse", "nmse_pred"):
        if name not in at_zero:
            if name in at_truth or name == "nmse":
                problems.append(f"{name} missing from the terms")
            continue
        if not (math.isfinite(at_zero[name]) and abs(at_zero[name] - 1) <= 1e-4):
            problems.append(f"{name}(0, R) = {g3(at_zero[name])} (expected 1)")
    cov = {n: v for n, v in at_truth.items() if n not in NON_COVARIANCE}
    evidence = {"at_truth": at_truth, "at_zero": at_zero, "tol": ORACLE_TOL, "beta": 0.0}
    if problems:
        detail = "; ".join(problems) + f" (tol {ORACLE_TOL:g})"
    else:
        worst = max(cov, key=lambda n: abs(cov[n])) if cov else "-"
        detail = (f"{len(cov)} covariance terms ≤ {g3(abs(cov.get(worst, 0.0)))} ({worst}) at "
                  f"R_pred = R_true; nmse(0, R) = {g3(at_zero.get('nmse', math.nan))}")
    return CheckResult("oracle-values", not problems, detail, evidence)


def check_optimizer_coverage(pipe: Pipeline) -> CheckResult:
    t = pipe.trainer
    audit = audit_coverage(t.model, t.optimizer)
    trainable = sum(1 for p in t.model.parameters() if p.requires_grad)
    settings = {group_label(g, i): {"tensors": len(g["params"]), "lr": float(g["lr"]),
                                    "initial_lr": float(g.get("initial_lr", g["lr"]))}
                for i, g in enumerate(t.optimizer.param_groups)}
    # before any step, a group standing at lr 0 now cannot take the first step either
    zero_lr = list(dict.fromkeys([*audit.zero_lr_groups,
                                  *(n for n, lr in audit.group_lr.items() if lr == 0.0)]))
    empty = [n for n, g in settings.items() if g["tensors"] == 0]
    evidence = {**audit.to_payload(), "zero_lr_groups": zero_lr, "settings": settings,
                "empty_groups": empty, "trainable": trainable}
    problems = []
    missing = audit.missing
    if missing:
        problems.append(f"{len(missing)} trainable tensor(s) in no group "
                        f"({', '.join(missing[:4])}{', …' if len(missing) > 4 else ''})")
    if audit.duplicated:
        problems.append(f"{len(audit.duplicated)} in several groups "
                        f"({', '.join(audit.duplicated[:4])})")
    if audit.stale:
        problems.append(f"{len(audit.stale)} optimizer tensor(s) not in the model")
    if zero_lr:
        problems.append("lr = 0 in group(s) " + ", ".join(
            f"{n} (lr {g3(settings[n]['lr'])}, initial {g3(settings[n]['initial_lr'])})"
            for n in zero_lr))
    if empty:
        problems.append(f"empty group(s) {', '.join(empty)}")
    if problems:
        detail = "; ".join(problems)
    else:
        detail = (f"{trainable} trainable tensors, each in one of {len(settings)} groups (" +
                  ", ".join(f"{n}: {g['tensors']} @ lr {g3(g['lr'])}"
                            for n, g in settings.items()) + ")")
    return CheckResult("optimizer-coverage", not problems, detail, evidence)


def check_step_moves_groups(pipe: Pipeline) -> CheckResult:
    with pipe.copy() as (clone, _):
        groups = [(group_label(g, i), list(g["params"]))
                  for i, g in enumerate(clone.optimizer.param_groups)]
        if not any(params for _, params in groups):
            return CheckResult("step-moves-groups", False,
                               "the optimizer holds no model parameter", {"groups": {}})
        before = [[p.detach().clone() for p in params] for _, params in groups]
        loss = clone.forward_loss(pipe.batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stepped = clone.backward_and_step(loss)
        lrs = [float(g["lr"]) for g in clone.optimizer.param_groups]
        events = written_events(clone.wb)
    stats = {}
    for (name, params), old, lr in zip(groups, before, lrs, strict=True):
        delta = math.sqrt(sum(float((p.detach() - o).double().square().sum())
                              for p, o in zip(params, old, strict=True)))
        norm = math.sqrt(sum(float(o.double().square().sum()) for o in old))
        moving = sum(bool(torch.any(p.detach() != o)) for p, o in zip(params, old, strict=True))
        stats[name] = {"ratio": delta / max(norm, 1e-30), "update_norm": delta,
                       "param_norm": norm, "tensors": len(params), "moving": moving, "lr": lr}
    still = [n for n, s in stats.items() if not (s["ratio"] > MOVE_TOL)]
    evidence = {"groups": stats, "stepped": stepped, "events": events, "tol": MOVE_TOL,
                "loss": float(loss.detach())}
    if still:
        detail = ("one step left group(s) unmoved: " +
                  ", ".join(f"{n} (‖Δθ‖/‖θ‖ = {g3(stats[n]['ratio'])}, lr {g3(stats[n]['lr'])})"
                            for n in still))
        if stepped is False:
            detail += "; the step reported it did not step" + (
                f" ({', '.join(events)})" if events else "")
    else:
        detail = "one step moves every group: " + ", ".join(
            f"{n} ‖Δθ‖/‖θ‖ = {g3(s['ratio'])}" for n, s in stats.items())
    return CheckResult("step-moves-groups", not still, detail, evidence)


def check_init_loss_range(pipe: Pipeline) -> CheckResult:
    cfg = pipe.trainer.cfg
    betas = sorted({float(pipe.trainer.beta(pipe.trainer.epoch)), float(cfg.beta_end)})
    lo, hi = LOSS_RANGE
    runs = {}
    problems = []
    for beta in betas:
        with pipe.copy(beta=beta) as (clone, seen), torch.no_grad():
            total = float(clone.forward_loss(pipe.batch))
        values = {n: float(v) for n, v in seen.terms.items()}
        runs[f"beta={beta:g}"] = {"total": total, "terms": values, "weights": seen.weights}
        tag = f" at β = {beta:g}" if len(betas) > 1 else ""
        for name, value in values.items():
            if not math.isfinite(value):
                problems.append(f"{name} = {value}{tag}")
            elif abs(value) > TERM_MAX:
                problems.append(f"{name} = {g3(value)} > {TERM_MAX:g}{tag}")
        if not (math.isfinite(total) and lo <= abs(total) <= hi):
            problems.append(f"total = {g3(total)} outside [{lo:g}, {hi:g}]{tag}")
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
        detail = (f"total {g3(first['total'])} in [{lo:g}, {hi:g}], every term finite, largest "
                  f"{top} = {g3(first['terms'][top])}" +
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
    batch = pipe.batch_copy()
    with pipe.copy() as (clone, seen):
        loss = clone.forward_loss(batch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss.backward()
    watched = [*_tensor_fields(seen.inputs, "inputs"), *_tensor_fields(batch, "batch"),
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



def check_output_contract(pipe: Pipeline) -> CheckResult:
    batch = pipe.batch
    p = pipe.preset
    b, n, k_max = len(batch), p.n, p.k_max
    with pipe.copy() as (clone, _), torch.no_grad():
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
            problems.append(f"R_pred not Hermitian (‖R − Rᴴ‖/‖R‖ = {g3(herm)})")
        if neg > 1e-4:
            problems.append(f"R_pred not PSD (λ_min/λ_max = {g3(-neg)})")
        if tr_err > 1e-3:
            problems.append(f"tr R_pred ≠ N (relative error {g3(tr_err)})")
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
        f"({g3(stats['hermitian_error'])}), PSD, trace N ({g3(stats['trace_error'])}); "
        "k_logits, aux shaped and finite")
    return CheckResult("output-contract", not problems, detail, evidence)
