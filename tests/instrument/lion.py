"""A hand-written Lion optimizer (the sign of an interpolated momentum) for the tests: its
state holds only a momentum, as SGD's does, yet its update does not scale with the
gradient."""

import torch


class Lion(torch.optim.Optimizer):
    """Lion: θ -= lr · sign(β1·m + (1-β1)·g), then m = β2·m + (1-β2)·g."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.99)):
        super().__init__(params, {"lr": lr, "betas": betas})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                avg = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.add_(torch.sign(avg * beta1 + p.grad * (1 - beta1)), alpha=-group["lr"])
                avg.mul_(beta2).add_(p.grad, alpha=1 - beta2)
