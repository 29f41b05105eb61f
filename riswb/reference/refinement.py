"""The model's physics stage: the network's source positions refined on the likelihood of y.

The network proposes per slot η_net = (φ, θ, r) and a K posterior (k head); this stage has
no parameters and reads only y, the static deployment G_l = H diag(c_l) and the network's
outputs. For each K = 1..K_MAX it moves the network's first K slots to the maximum a
posteriori positions of the measurement model y_l = G_l A s_l + n_l with fresh symbols per
snapshot (docs/design.md §7), the network's proposal taken as the prior mean:
    C(η) = J(η)/σ̂² + ½ Σ_k ‖(η_k − η_net,k)/s‖²,   J = Σ_l ‖P⊥_{B_l} y_l‖²,
B_l = G_l [a(η_1) … a(η_K)], the concentrated cost of `baselines/dml.py`; J/σ² is the
negative log-likelihood with the symbols concentrated out, σ̂² = J/(L(M − K)) its ML
estimate, re-read at the current positions before every sweep. The prior spread s is the
field of view's own, span/√12 per coordinate: the network's guess replaces the centre of
the uniform prior. Each sweep visits the slots in turn, the others held (exact: J with
K − 1 columns fixed is the residual after projecting them out minus what the moved column
explains):
1. re-seat: the MAP score on the MUSIC grid (the residual's coded Bartlett spectrum over σ̂²
   minus the prior term) decides, by the exact cost, between the current position and the
   grid's best: a proposal outside the likelihood's main lobe (about one beamwidth, ~14° on
   the small preset) cannot be repaired by a local search;
2. pattern search on the exact C, batched over scenes (`_common.pattern_search`).
After the sweeps each slot's range is replaced by its posterior mean given its angles
(exp(−C) on a 1/r grid): the mode where the likelihood is sharp (20 dB), close to the
network's range where it is flat (0 dB, √CRB on r above the prior's spread), which is
what an RMSE rewards.

K: the k head's posterior times the BIC approximation of p(y | K) (`dml.bic`). The first k̂
slots are the k̂ fit; the others (`_extend`: distinct from those, so MUSIC with a larger K
given finds K slots) come from the K_MAX fit where that source passes the residual-share
detection test of `_common.count_picks` — a source BIC's penalty dropped (10 dB) — and are
the network's own slots where it does not, rather than a noise peak (0 dB).
Search coordinates are (φ, θ, 1/r) as in the baselines; all of it runs in float64 under
no_grad (inference only: `CovarianceNet` calls it in eval mode).
"""

from __future__ import annotations

import math

import torch

from riswb.reference.physics.baselines import dml
from riswb.reference.physics.baselines._common import (
    SHARE_TAU,
    bounds,
    coded_steering,
    explained,
    grid_atoms,
    grid_coords,
    grid_steps,
    operators,
    orthonormal_basis,
    pattern_search,
    project_out,
    suppress_near,
    to_pos,
    to_search,
    unit_directions,
)
from riswb.reference.physics.baselines._greedy import grid_spectrum
from riswb.reference.physics.music import MusicGrid
from riswb.reference.physics.presets import Preset

ITERATIONS = 10  # pattern-search moves per slot per sweep, as in baselines/dml.py
CHUNK = 32  # scenes per batch: bounds the (L, B, G) grid correlations
RANGE_POINTS = 49  # the 1/r grid of each slot's range posterior


def _extend(fit: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """The k̂ slots of `fit` (B, k̂, 3), then those of `full` (B, K_MAX, 3) that are not
    theirs: each `fit` slot claims the nearest unclaimed direction of `full`, in order, so
    no source appears twice."""
    b, k = fit.shape[:2]
    cos = unit_directions(fit) @ unit_directions(full).mT  # (B, k̂, K_MAX)
    free = torch.ones(b, full.shape[1], dtype=torch.bool)
    rows = torch.arange(b)
    for j in range(k):
        claim = cos[:, j].masked_fill(~free, -torch.inf).argmax(-1)
        free[rows, claim] = False
    rest = full[free].reshape(b, full.shape[1] - k, 3)
    return torch.cat([fit, rest], 1)


class Refiner:
    """MAP refinement of slot positions for one preset and its static deployment (H, codes).

    refiner(y (B, L, M), pos (B, K_MAX, 3) as (φ, θ, r), k_logits (B, K_MAX), sweeps) ->
    (refined pos, fused K log-posterior); see `__call__`."""

    def __init__(self, preset: Preset, h: torch.Tensor, codes: torch.Tensor,
                 grid: MusicGrid | None = None):
        self.preset = preset
        grid = grid or MusicGrid.for_preset(preset)
        self.g_ops = operators(h, codes)
        self.atoms = grid_atoms(preset, self.g_ops, grid)
        self.coords = grid_coords(grid)  # (G, 3) in (φ, θ, 1/r)
        self.grid_u = unit_directions(self.coords)
        self.step0 = grid_steps(grid)
        self.lo, self.hi = bounds(preset)
        spans = [hi - lo for lo, hi in (preset.phi_range, preset.theta_range, preset.r_range)]
        self.scale = torch.tensor(spans, dtype=torch.float64) / math.sqrt(12)

    def prior(self, x: torch.Tensor, x_net: torch.Tensor) -> torch.Tensor:
        """½‖(η − η_net)/s‖² in (φ, θ, r) for x (B, C, 3) or (G, 3) and x_net (B, 3), both
        in (φ, θ, 1/r)."""
        d = (to_pos(x) - to_pos(x_net)[:, None, :]) / self.scale
        return 0.5 * d.square().sum(-1)

    def cost(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """J (B,) at sources x (B, K, 3) in (φ, θ, 1/r)."""
        return dml.residual_energy(y, dml.columns(self.preset, self.g_ops, x))

    @torch.no_grad()
    def __call__(self, y: torch.Tensor, pos: torch.Tensor, k_logits: torch.Tensor,
                 sweeps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(refined positions (B, K_MAX, 3), fused K log-posterior (B, K_MAX)): one fit per
        K = 1..K_MAX from the network's first K slots; the first k̂ slots are the k̂ fit,
        the others unclaimed spare slots (`_extend`): a detected source of the K_MAX fit,
        else the network's own slot."""
        k_max = pos.shape[1]
        y = y.detach().to(torch.complex128).cpu()
        x_net = to_search(pos.detach().to(torch.float64).cpu())
        fits, bic = [], []
        for kk in range(1, k_max + 1):
            x = torch.cat([self._refine(y[i:i + CHUNK], x_net[i:i + CHUNK, :kk], sweeps)
                           for i in range(0, len(y), CHUNK)])
            fits.append(x)
            bic.append(dml.bic(self.cost(y, x), kk, self.preset.l, self.preset.m))
        # the k head's posterior times the BIC approximation of the evidence p(y | K)
        log_prior = torch.log_softmax(k_logits.detach().cpu().double(), -1)
        log_post = torch.log_softmax(log_prior - 0.5 * torch.stack(bic, -1), -1)
        k_hat = log_post.argmax(-1) + 1
        # beyond k̂: the K_MAX fit's slots that pass the detection test, else the network's
        spare = torch.where(self._detected(y, fits[-1])[..., None], fits[-1], x_net)
        out = x_net.clone()
        for kk in range(1, k_max + 1):
            sel = k_hat == kk
            out[sel] = _extend(fits[kk - 1][sel], spare[sel])
        return (to_pos(out).to(pos.dtype).to(pos.device),
                log_post.to(k_logits.dtype).to(k_logits.device))

    def _detected(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, K) whether each source of the fit x explains, with the others projected out,
        the residual share that `_common.count_picks` asks of a last pick: τ/(M − K + 1),
        τ× what a fixed direction takes from white noise."""
        k = x.shape[1]
        share = torch.zeros(x.shape[:2], dtype=torch.float64)
        for j in range(k):
            cost, res = self._slot_cost(y, x, j, torch.ones(len(y), dtype=torch.float64), None)
            share[:, j] = -cost(x[:, j, None])[:, 0] / res.abs().square().sum((1, 2))
        return share >= SHARE_TAU / (self.preset.m - k + 1)

    def _slot_cost(self, y, x, j, noise, net):
        """(cost(cand) = −explained/σ̂² + prior, residual) for slot j, the others held:
        the exact change of C when slot j moves to cand (B, C, 3); net=None: no prior."""
        others = [i for i in range(x.shape[1]) if i != j]
        q = orthonormal_basis(dml.columns(self.preset, self.g_ops, x[:, others]))
        res = project_out(q, y)

        def cost(cand):
            fit = explained(res, project_out(q, coded_steering(self.preset, self.g_ops, cand)))
            return -fit / noise[:, None] + (0 if net is None else self.prior(cand, net))

        return cost, res

    def _refine(self, y: torch.Tensor, x_net: torch.Tensor, sweeps: int) -> torch.Tensor:
        b, k = x_net.shape[:2]
        x = x_net.clone()
        step = self.step0.expand(b, 3)
        dof = self.preset.l * (self.preset.m - k)
        for _ in range(sweeps):
            noise = (self.cost(y, x) / dof).clamp_min(1e-300)  # σ̂² at the current positions
            for j in range(k):
                net = x_net[:, j]
                cost, res = self._slot_cost(y, x, j, noise, net)
                others = [i for i in range(k) if i != j]
                score = grid_spectrum(res, self.atoms) / noise[:, None] - self.prior(
                    self.coords, net)
                score = suppress_near(score, self.grid_u, unit_directions(x[:, others]),
                                      0.5 * self.preset.min_separation)
                cand = torch.stack([x[:, j], self.coords[score.argmax(-1)]], 1)  # (B, 2, 3)
                start = cand[torch.arange(b), cost(cand).argmin(-1)]
                x[:, j], _ = pattern_search(cost, start, step, self.lo, self.hi, ITERATIONS)
        return self._range_mean(y, x, x_net, noise)

    def _range_mean(self, y, x, x_net, noise):
        """Each slot's range replaced by its posterior mean given its angles, the others
        held: exp(−C) summed on a 1/r grid (the RMSE-optimal range where the likelihood
        is broad; the mode where it is sharp)."""
        b, k = x.shape[:2]
        inv_r = torch.linspace(float(self.lo[2]), float(self.hi[2]), RANGE_POINTS,
                               dtype=torch.float64)
        out = x.clone()
        for j in range(k):
            cost, _ = self._slot_cost(y, x, j, noise, x_net[:, j])
            cand = x[:, j, None, :].repeat(1, RANGE_POINTS, 1)
            cand[..., 2] = inv_r
            w = torch.softmax(-cost(cand), -1)
            out[:, j, 2] = 1 / (w / inv_r).sum(-1)
        return out
