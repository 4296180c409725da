"""The state-based domain shift of RLV's Sec. 3.1: the observation MDP is the interaction MDP seen through an
unknown invertible map of states, so observation data can be made from interaction-style data by a fixed random
invertible transform of its state vectors.

The map, from a seed and a `strength` s in [0, 1] (0: the identity; 1: the full map; in between the same map's
fraction, so two strengths are two distances from the robot's domain, not two unrelated maps):

  z = R_s (exp(s g) * x) + s b,    y = asinh(k_s z) / k_s   (k_s = s kappa; y = z when kappa = 0)

with R_s = expm(s K) a rotation (K a random skew-symmetric matrix), g a random per-dimension log scale, b a random
offset and asinh an elementwise monotone squashing of curvature kappa. Every part is invertible in closed form
(`inverse`), well-conditioned (scales within exp(+-s |g|)), and the functions work on numpy arrays and on jax arrays
(traced or not) alike, on states (..., D).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from vidrl_jax.errors import VidrlError

STRENGTHS = {"none": 0.0, "weak": 0.5, "strong": 1.0}   # the two shifts the experiments use, and the control


@dataclasses.dataclass(frozen=True)
class StateShift:
  """One fixed map (see the module docstring): rotation (D, D), log_scale (D,), offset (D,), curvature k_s."""
  rotation: np.ndarray
  log_scale: np.ndarray
  offset: np.ndarray
  curvature: float
  strength: float


def make_shift(dim: int, seed: int, strength: float = 1.0, kappa: float = 0.5, scale_std: float = 0.5,
               offset_std: float = 1.0) -> StateShift:
  """The map of `strength` in [0, 1] for states of width `dim`; equal seeds give the same K, g, b at every
  strength."""
  if dim < 1 or not 0.0 <= strength <= 1.0 or kappa < 0 or scale_std < 0 or offset_std < 0:
    raise VidrlError(f"a state shift needs dim >= 1, strength in [0, 1] and non-negative kappa and stds, got dim "
                     f"{dim}, strength {strength}, kappa {kappa}, stds {scale_std}, {offset_std}")
  r = np.random.default_rng([int(seed), int(dim)])
  m = r.normal(size=(dim, dim))
  skew = (m - m.T) / 2.0
  g, b = r.normal(scale=scale_std, size=dim), r.normal(scale=offset_std, size=dim)
  return StateShift(rotation=scipy.linalg.expm(strength * skew), log_scale=strength * g, offset=strength * b,
                    curvature=float(strength * kappa), strength=float(strength))


def _backend(x):
  return jnp if isinstance(x, jax.Array) else np


def _check(shift: StateShift, x) -> None:
  if x.shape[-1:] != shift.offset.shape:
    raise VidrlError(f"the state shift maps vectors of width {shift.offset.shape[0]} but got shape {x.shape}; "
                     f"make the shift with the state width")


def apply(shift: StateShift, states):
  """The observation domain's view of interaction states (..., D), in their dtype and array library."""
  _check(shift, states)
  xp, dtype = _backend(states), states.dtype
  rot, scale, offset = (xp.asarray(a, dtype) for a in (shift.rotation, np.exp(shift.log_scale), shift.offset))
  z = (states * scale) @ rot.T + offset
  k = shift.curvature
  return xp.arcsinh(k * z) / k if k > 0 else z


def inverse(shift: StateShift, shifted):
  """The interaction states (..., D) that `apply` maps to `shifted`."""
  _check(shift, shifted)
  xp, dtype = _backend(shifted), shifted.dtype
  rot, inv_scale, offset = (xp.asarray(a, dtype) for a in (shift.rotation, np.exp(-shift.log_scale), shift.offset))
  k = shift.curvature
  z = xp.sinh(k * shifted) / k if k > 0 else shifted
  return ((z - offset) @ rot) * inv_scale
