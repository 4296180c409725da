"""The one tanh-Gaussian actor: both torsos and both std squashings against hand-computed densities."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.heads import TanhGaussianPolicy

KEY = jax.random.PRNGKey(0)


def _np_mlp(p, x, act):
  n = len(p) - 1
  for j in range(n):
    x = act(x @ np.asarray(p[f"dense{j}"]["kernel"], np.float64) + np.asarray(p[f"dense{j}"]["bias"], np.float64))
  return x @ np.asarray(p["out"]["kernel"], np.float64) + np.asarray(p["out"]["bias"], np.float64)


def _np_tanh_gauss_log_prob(a, mean, std):
  u = np.arctanh(a)
  return np.sum(-0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi) - np.log(1 - a ** 2), -1)


@pytest.mark.parametrize("std", ["tanh_log_std", "softplus"])
def test_shared_torso_log_prob_and_mode_by_hand(std):
  net = TanhGaussianPolicy(2, (8, 8), nn.relu, torso="shared", std=std, log_std_min=-4.0, log_std_max=1.0,
                           min_std=0.01)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
  params = net.init(KEY, x)
  assert set(params["params"]) == {"torso"}
  out = _np_mlp(params["params"]["torso"], np.asarray(x, np.float64), lambda v: np.maximum(v, 0))
  mean, raw = out[:, :2], out[:, 2:]
  if std == "tanh_log_std":
    sd = np.exp(-4.0 + 0.5 * 5.0 * (np.tanh(raw) + 1.0))
  else:
    sd = np.log1p(np.exp(raw)) + 0.01
  a = np.random.default_rng(1).uniform(-0.95, 0.95, (5, 2))
  dist = net.apply(params, x)
  np.testing.assert_allclose(dist.log_prob(jnp.asarray(a, jnp.float32)), _np_tanh_gauss_log_prob(a, mean, sd),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dist.mode(), np.tanh(mean), rtol=1e-5, atol=1e-6)


def test_separate_torso_is_aimes_policy():
  net = TanhGaussianPolicy(2, (8,))
  x = jnp.ones((3, 4))
  params = net.init(KEY, x)
  g = params["params"]["gaussian"]
  assert set(g) == {"mean", "std"}
  elu = lambda v: np.where(v > 0, v, np.expm1(v))
  mean, sd = _np_mlp(g["mean"], np.ones((3, 4)), elu), np.log1p(np.exp(_np_mlp(g["std"], np.ones((3, 4)), elu))) + 1e-6
  a = np.full((3, 2), 0.3)
  np.testing.assert_allclose(net.apply(params, x).log_prob(jnp.asarray(a, jnp.float32)),
                             _np_tanh_gauss_log_prob(a, mean, sd), rtol=1e-4, atol=1e-4)
  with pytest.raises(VidrlError, match="torso"):
    TanhGaussianPolicy(2, torso="separate", std="tanh_log_std").init(KEY, x)
