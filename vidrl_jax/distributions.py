"""Diagonal Gaussian and tanh-Gaussian distributions as plain functions of (mean, std) arrays.

Everything here is elementwise over the last axis: log-probabilities and KLs are returned *per dimension* so that a
caller can reweight dimensions (AIME's beta-NLL) before summing. Sum over the last axis for the usual totals.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2 * math.pi)


class Normal(NamedTuple):
  """A diagonal Gaussian; `std` must be positive (callers add a min_std after a softplus)."""
  mean: jax.Array
  std: jax.Array

  def sample(self, rng: jax.Array) -> jax.Array:
    """Reparameterised sample mean + std * eps."""
    return self.mean + self.std * jax.random.normal(rng, self.mean.shape, self.mean.dtype)

  def log_prob(self, x: jax.Array) -> jax.Array:
    """Per-dimension log density."""
    z = (x - self.mean) / self.std
    return -0.5 * z * z - jnp.log(self.std) - 0.5 * _LOG_2PI

  def stop_gradient(self) -> "Normal":
    return Normal(jax.lax.stop_gradient(self.mean), jax.lax.stop_gradient(self.std))


def kl_normal(q: Normal, p: Normal) -> jax.Array:
  """Per-dimension KL[q || p] between diagonal Gaussians."""
  var_ratio = jnp.square(q.std / p.std)
  t = jnp.square((q.mean - p.mean) / p.std)
  return 0.5 * (var_ratio + t - 1.0 - jnp.log(var_ratio))


def kl_balanced(q: Normal, p: Normal, balance: float | None) -> jax.Array:
  """KL balancing (DreamerV2): `b * KL[sg(q) || p] + (1 - b) * KL[q || sg(p)]`; same value, reweighted gradients.

  `balance=None` is the plain KL (AIME's default).
  """
  if balance is None:
    return kl_normal(q, p)
  return balance * kl_normal(q.stop_gradient(), p) + (1 - balance) * kl_normal(q, p.stop_gradient())


class TanhNormal(NamedTuple):
  """tanh(u), u ~ Normal(mean, std): the squashed Gaussian of SAC and AIME's policy. Actions lie in (-1, 1)."""
  mean: jax.Array
  std: jax.Array

  def sample_and_log_prob(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A reparameterised action and its log density (summed over action dimensions)."""
    u = Normal(self.mean, self.std).sample(rng)
    return jnp.tanh(u), self.log_prob_pre_tanh(u)

  def sample(self, rng: jax.Array) -> jax.Array:
    return jnp.tanh(Normal(self.mean, self.std).sample(rng))

  def log_prob_pre_tanh(self, u: jax.Array) -> jax.Array:
    """log p(tanh(u)) = log N(u) - sum log(1 - tanh(u)^2), the last term in the stable form 2(log2 - u - softplus(-2u))."""
    log_det = 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.sum(Normal(self.mean, self.std).log_prob(u) - log_det, axis=-1)

  def log_prob(self, action: jax.Array, eps: float = 1e-6) -> jax.Array:
    """log density of an action in (-1, 1) (clipped by eps away from the boundary)."""
    a = jnp.clip(action, -1 + eps, 1 - eps)
    return self.log_prob_pre_tanh(jnp.arctanh(a))

  def mode(self) -> jax.Array:
    """The deterministic action used for evaluation, tanh(mean) (AIME and SAC convention)."""
    return jnp.tanh(self.mean)


def kl_tanh_normal(q: TanhNormal, p: TanhNormal) -> jax.Array:
  """KL between two tanh-Gaussians, summed over dimensions: tanh is a bijection, so it is the pre-tanh KL."""
  return jnp.sum(kl_normal(Normal(q.mean, q.std), Normal(p.mean, p.std)), axis=-1)
