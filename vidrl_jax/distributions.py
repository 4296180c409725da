"""Diagonal Gaussian, truncated Gaussian, tanh-Gaussian and one-hot categorical distributions as plain functions
of arrays.

The two kinds of latent state, both with one KL (`kl`, dispatching on the kind) and DreamerV2's KL balancing
(`kl_balanced`): a diagonal Gaussian `Normal` (AIME, PlaNet) over (..., Z), and `OneHotCategorical`, DreamerV2's
discrete latent of 32 variables x 32 classes, logits (..., vars, classes), sampled as one-hot vectors with
straight-through gradients.

Log-probabilities, entropies and KLs are returned *per dimension* of the latent's last axis: per Gaussian
dimension (..., Z), so that a caller can reweight dimensions (AIME's beta-NLL) before summing, and per categorical
variable (..., vars), summed over its classes. Sum over the last axis for the totals (the KL of the whole latent:
DreamerV2's `Independent(OneHotCategorical, 1)`), the same line for both kinds.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr, ndtri

from vidrl_jax.errors import VidrlError

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


class OneHotCategorical(NamedTuple):
  """Independent categoricals, one per variable: logits (..., vars, classes) (DreamerV2: 32 x 32).

  Samples and the mode are one-hot (..., vars, classes); log-probabilities and entropies are per variable
  (..., vars). Sampling is straight-through (Bengio et al. 2013, as in DreamerV2): the value is the one-hot
  sample, the gradient that of the probabilities.
  """
  logits: jax.Array

  @classmethod
  def from_flat(cls, logits: jax.Array, classes: int = 32) -> "OneHotCategorical":
    """From a layer's flat output (..., vars * classes), e.g. 1024 = 32 x 32 as DreamerV2's RSSM reshapes it."""
    if logits.shape[-1] % classes:
      raise VidrlError(f"{logits.shape[-1]} logits do not split into variables of {classes} classes")
    return cls(logits.reshape(*logits.shape[:-1], logits.shape[-1] // classes, classes))

  @property
  def probs(self) -> jax.Array:
    return jax.nn.softmax(self.logits, axis=-1)

  def sample(self, rng: jax.Array) -> jax.Array:
    """One-hot samples with the straight-through gradient: onehot + (probs - sg(probs))."""
    index = jax.random.categorical(rng, self.logits, axis=-1)
    onehot = jax.nn.one_hot(index, self.logits.shape[-1], dtype=self.logits.dtype)
    probs = self.probs
    return onehot + (probs - jax.lax.stop_gradient(probs))   # parenthesised: the value stays exactly one-hot

  def mode(self) -> jax.Array:
    """The most probable class of each variable, one-hot (no gradient)."""
    return jax.nn.one_hot(jnp.argmax(self.logits, axis=-1), self.logits.shape[-1], dtype=self.logits.dtype)

  def log_prob(self, x: jax.Array) -> jax.Array:
    """Per-variable log-probability of one-hot x (..., vars, classes)."""
    return jnp.sum(x * jax.nn.log_softmax(self.logits, axis=-1), axis=-1)

  def entropy(self) -> jax.Array:
    """Per-variable entropy -sum_c p_c log p_c."""
    return -jnp.sum(self.probs * jax.nn.log_softmax(self.logits, axis=-1), axis=-1)

  def stop_gradient(self) -> "OneHotCategorical":
    return OneHotCategorical(jax.lax.stop_gradient(self.logits))


def kl_categorical(q: OneHotCategorical, p: OneHotCategorical) -> jax.Array:
  """Per-variable KL[q || p] = sum_c q_c (log q_c - log p_c), (..., vars)."""
  log_q = jax.nn.log_softmax(q.logits, axis=-1)
  return jnp.sum(jnp.exp(log_q) * (log_q - jax.nn.log_softmax(p.logits, axis=-1)), axis=-1)


Latent = Union[Normal, OneHotCategorical]


def kl(q: Latent, p: Latent) -> jax.Array:
  """KL[q || p] of two latents of the same kind, per dimension (Gaussian, (..., Z)) or per variable (categorical,
  (..., vars))."""
  if isinstance(q, Normal) and isinstance(p, Normal):
    return kl_normal(q, p)
  if isinstance(q, OneHotCategorical) and isinstance(p, OneHotCategorical):
    return kl_categorical(q, p)
  raise VidrlError(f"no KL between a {type(q).__name__} and a {type(p).__name__}: the posterior and the prior must "
                   "be both Normal or both OneHotCategorical")


def kl_balanced(q: Latent, p: Latent, balance: float | None) -> jax.Array:
  """DreamerV2's KL balancing: `b * KL[sg(q) || p] + (1 - b) * KL[q || sg(p)]`, for either kind of latent: the
  value of the KL, with the prior's gradient scaled by b and the posterior's by 1 - b (b = 0.8 in DreamerV2, APV).

  `balance=None` is the plain KL (AIME's default).
  """
  if balance is None:
    return kl(q, p)
  return balance * kl(q.stop_gradient(), p) + (1 - balance) * kl(q, p.stop_gradient())


class TruncNormal(NamedTuple):
  """A Gaussian N(mean, std) truncated to [low, high] per dimension: DreamerV2's continuous actor (`trunc_normal`,
  on [-1, 1]). Log-probabilities and entropies per dimension (..., A); samples by the inverse CDF, so they are
  reparameterised (the gradient reaches mean and std: Dreamer's dynamics backpropagation)."""
  mean: jax.Array
  std: jax.Array
  low: float = -1.0
  high: float = 1.0

  def _bounds(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    a, b = (self.low - self.mean) / self.std, (self.high - self.mean) / self.std
    return a, b, jnp.maximum(ndtr(b) - ndtr(a), 1e-12)   # Z = Phi(b) - Phi(a)

  def sample(self, rng: jax.Array, clip: float = 1e-6) -> jax.Array:
    """A reparameterised sample, kept `clip` inside the interval (the value clipped, the gradient not: DreamerV2's
    TruncNormalDist)."""
    return self.from_uniform(jax.random.uniform(rng, self.mean.shape, self.mean.dtype), clip)

  def from_uniform(self, u: jax.Array, clip: float = 1e-6) -> jax.Array:
    """The sample at CDF level u in [0, 1]: mean + std z, z the u-quantile of the standard normal truncated to the
    standardised bounds [a, b]. The quantile is taken from the nearer tail (no rounding of Phi to 0 or 1, where
    ndtri is infinite), the bound itself at u = 0 or 1; its gradient is the implicit one (TFP's TruncatedNormal),
    dz/da = (1 - u) phi(a) / phi(z) and dz/db = u phi(b) / phi(z), finite everywhere, where differentiating
    ndtri(Phi(a) + u Z) gives inf * 0 once Phi(a) underflows (a std-0.1 actor whose mean sits at a bound)."""
    a, b, _ = self._bounds()
    a0, b0 = jax.lax.stop_gradient(a), jax.lax.stop_gradient(b)
    lower, upper = ndtr(a0), ndtr(-b0)                                  # the mass below a and above b
    mass = jnp.maximum(1.0 - lower - upper, 1e-12)
    tiny = jnp.finfo(self.mean.dtype).tiny
    below = lower + u * mass                                            # Phi(z), accurate where small
    above = upper + (1.0 - u) * mass                                    # 1 - Phi(z), accurate where small
    z = jnp.where(below < 0.5, ndtri(jnp.maximum(below, tiny)), -ndtri(jnp.maximum(above, tiny)))
    z = jnp.clip(jnp.where(u <= 0.0, a0, jnp.where(u >= 1.0, b0, z)), a0, b0)   # u = 0 or 1: the bound itself
    # d z / d bound as exp(log weight): (1 - u) phi(a) / phi(z) = exp(log(1 - u) + (z^2 - a^2) / 2), likewise b
    w_a = jnp.exp(jnp.minimum(jnp.log1p(-jnp.minimum(u, 1.0)) + 0.5 * (z * z - a0 * a0), 80.0))
    w_b = jnp.exp(jnp.minimum(jnp.log(jnp.maximum(u, 0.0)) + 0.5 * (z * z - b0 * b0), 80.0))
    z = z + jax.lax.stop_gradient(w_a) * (a - a0) + jax.lax.stop_gradient(w_b) * (b - b0)
    x = self.mean + self.std * z
    clipped = jnp.clip(x, self.low + clip, self.high - clip)
    return x + jax.lax.stop_gradient(clipped - x)

  def mode(self) -> jax.Array:
    """The most probable value: the mean clipped to the interval."""
    return jnp.clip(self.mean, self.low, self.high)

  def log_prob(self, x: jax.Array) -> jax.Array:
    _, _, z = self._bounds()
    return Normal(self.mean, self.std).log_prob(x) - jnp.log(z)

  def entropy(self) -> jax.Array:
    """log(sqrt(2 pi e) std Z) + (a phi(a) - b phi(b)) / (2 Z), per dimension."""
    a, b, z = self._bounds()
    phi = lambda t: jnp.exp(-0.5 * t * t - 0.5 * _LOG_2PI)
    return 0.5 * (_LOG_2PI + 1.0) + jnp.log(self.std * z) + (a * phi(a) - b * phi(b)) / (2.0 * z)


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
