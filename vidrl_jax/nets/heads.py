"""Distribution heads on top of MLPs: a Gaussian decoder for vector observations and THE tanh-Gaussian policy.

`TanhGaussianPolicy` is the project's only tanh-Gaussian actor (SAC's actor, AIME's phase-2 policy and IDM head,
BCO(0)'s networks); every sample and log-probability goes through `distributions.TanhNormal`. Two choices make
the variants:
- `torso`: "separate" mean and std MLPs (AIME's `TanhGaussianPolicy`, params under `gaussian/{mean,std}`) or one
  "shared" MLP with a 2A-wide output split into mean and raw std (SAC's actor as Haarnoja et al. and most SAC
  code, params under `torso`);
- `std`: "softplus" (std = softplus(raw) + min_std, AIME) or "tanh_log_std" (log std squashed into
  [log_std_min, log_std_max] by a rescaled tanh, smooth unlike a clip: SAC-AE/DrQ's convention).
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrl_jax.distributions import Normal, TanhNormal
from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.mlp import MLP

TORSOS = ("separate", "shared")
STDS = ("softplus", "tanh_log_std")


class GaussianMLP(nn.Module):
  """x -> N(mu(x), sigma(x)): separate mean and std MLPs, std = softplus + min_std (AIME's `MLPStochasticDecoder`).

  `learn_std=False` gives unit std (AIME's `MLPDeterministicDecoder`, the cheetah setting: an L2 loss).
  """
  out: int
  hidden: Sequence[int] = (128, 128)
  activation: Callable[[jax.Array], jax.Array] = nn.elu
  layer_norm: bool = False
  learn_std: bool = True
  min_std: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> Normal:
    kw = dict(hidden=self.hidden, out=self.out, activation=self.activation, layer_norm=self.layer_norm)
    mean = MLP(name="mean", **kw)(x)
    if not self.learn_std:
      return Normal(mean, jnp.ones_like(mean))
    return Normal(mean, nn.softplus(MLP(name="std", **kw)(x)) + self.min_std)


def squash_log_std(raw: jax.Array, log_std_min: float, log_std_max: float) -> jax.Array:
  """raw -> log std in [log_std_min, log_std_max]: min + (max - min) (tanh(raw) + 1) / 2."""
  return log_std_min + 0.5 * (log_std_max - log_std_min) * (jnp.tanh(raw) + 1.0)


class TanhGaussianPolicy(nn.Module):
  """x (..., F) -> TanhNormal over actions (..., A) in (-1, 1).

  Defaults are AIME's policy (separate 2x128 ELU MLPs, softplus std + 1e-6); SAC's actor is
  `torso="shared", std="tanh_log_std", activation=nn.relu` (see `vidrl_jax.rl.sac.actor_module`).
  """
  action_dim: int
  hidden: Sequence[int] = (128, 128)
  activation: Callable[[jax.Array], jax.Array] = nn.elu
  torso: str = "separate"
  std: str = "softplus"
  min_std: float = 1e-6
  log_std_min: float = -5.0
  log_std_max: float = 2.0

  @nn.compact
  def __call__(self, x: jax.Array) -> TanhNormal:
    if self.torso not in TORSOS or self.std not in STDS:
      raise VidrlError(f"TanhGaussianPolicy takes torso in {TORSOS} and std in {STDS}, got {self.torso!r} and "
                       f"{self.std!r}")
    if self.torso == "separate":
      if self.std != "softplus":
        raise VidrlError("TanhGaussianPolicy(torso='separate') has a softplus std MLP; use std='softplus' or "
                         "torso='shared'")
      dist = GaussianMLP(self.action_dim, self.hidden, self.activation, min_std=self.min_std, name="gaussian")(x)
      return TanhNormal(dist.mean, dist.std)
    out = MLP(hidden=tuple(self.hidden), out=2 * self.action_dim, activation=self.activation, name="torso")(x)
    mean, raw = jnp.split(out, 2, axis=-1)
    if self.std == "softplus":
      return TanhNormal(mean, nn.softplus(raw) + self.min_std)
    return TanhNormal(mean, jnp.exp(squash_log_std(raw, self.log_std_min, self.log_std_max)))
