"""Near-field RIS steering vectors: exact spherical, Fresnel, and far-field.

With u = (cosθ sinφ, sinθ, cosθ cosφ), element p_n = (x_n, y_n, 0) and source at r·u:
  exact     r_n − r = ‖r·u − p_n‖ − r = (‖p_n‖² − 2r·q_n) / (r_n + r)  (no cancellation)
  Fresnel   r_n − r ≈ −q_n + (x_n² + y_n² − q_n²) / (2r)                 (keeps −q_n²/(2r))
  far field r_n − r ≈ −q_n
with q_n = x_n u_x + y_n u_y, and a_n = exp(−j k (r_n − r)) / √N, k = 2π/λ, so ‖a‖ = 1.
Inputs broadcast; the output is (..., N), complex64 for float32 inputs and complex128 for
float64 inputs, and differentiable in φ, θ, r.
"""

from __future__ import annotations

import math

import torch

from riswb.reference.physics.geometry import direction


def _as_tensors(positions, phi, theta, r=None):
    dtype = torch.promote_types(torch.as_tensor(phi).dtype, positions.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    cast = [torch.as_tensor(t, dtype=dtype, device=positions.device) for t in (phi, theta, r)
            if t is not None]
    return positions.to(dtype), torch.broadcast_tensors(*cast)


def _phasor(delta: torch.Tensor, wavelength: float, n: int) -> torch.Tensor:
    phase = (-2 * math.pi / wavelength) * delta
    return torch.polar(torch.full_like(phase, 1 / math.sqrt(n)), phase)


def _projection(positions, phi, theta):
    """q_n = x_n u_x + y_n u_y, shape (..., N)."""
    u = direction(phi, theta)
    return u[..., None, 0] * positions[:, 0] + u[..., None, 1] * positions[:, 1]


def steering_exact(positions, phi, theta, r, wavelength: float) -> torch.Tensor:
    """Exact spherical-wavefront steering, a_n = exp(−jk(‖r·u − p_n‖ − r))/√N."""
    positions, (phi, theta, r) = _as_tensors(positions, phi, theta, r)
    q = _projection(positions, phi, theta)
    p2 = (positions**2).sum(-1)
    r = r[..., None]
    r_n = torch.sqrt(torch.clamp(r * r - 2 * r * q + p2, min=0.0))
    return _phasor((p2 - 2 * r * q) / (r_n + r), wavelength, positions.shape[0])


def steering_fresnel(positions, phi, theta, r, wavelength: float) -> torch.Tensor:
    """Second-order (Fresnel) steering: r_n − r ≈ −q_n + (x_n² + y_n² − q_n²)/(2r)."""
    positions, (phi, theta, r) = _as_tensors(positions, phi, theta, r)
    q = _projection(positions, phi, theta)
    p2 = (positions**2).sum(-1)
    return _phasor(-q + (p2 - q * q) / (2 * r[..., None]), wavelength, positions.shape[0])


def steering_farfield(positions, phi, theta, wavelength: float) -> torch.Tensor:
    """Plane-wave steering, the r → ∞ limit: r_n − r ≈ −q_n."""
    positions, (phi, theta) = _as_tensors(positions, phi, theta)
    return _phasor(-_projection(positions, phi, theta), wavelength, positions.shape[0])
