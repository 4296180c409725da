"""Distribution heads on top of MLPs: a Gaussian decoder for vector observations and a tanh-Gaussian policy."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

from vidrl_jax.distributions import Normal, TanhNormal
from vidrl_jax.nets.mlp import MLP


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
      return Normal(mean, jax.numpy.ones_like(mean))
    return Normal(mean, nn.softplus(MLP(name="std", **kw)(x)) + self.min_std)


class TanhGaussianPolicy(nn.Module):
  """x -> tanh(N(mu(x), sigma(x))): separate mean and std MLPs as AIME's `TanhGaussianPolicy` (min_std 1e-6)."""
  action_dim: int
  hidden: Sequence[int] = (128, 128)
  activation: Callable[[jax.Array], jax.Array] = nn.elu
  min_std: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> TanhNormal:
    dist = GaussianMLP(self.action_dim, self.hidden, self.activation, min_std=self.min_std, name="gaussian")(x)
    return TanhNormal(dist.mean, dist.std)
