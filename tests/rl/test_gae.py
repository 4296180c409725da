"""The scanned GAE equals the textbook backward loop (Schulman et al., 2016, Eq. 16)."""

import jax
import numpy as np

from vidrl_jax.rl.gae import gae


def _gae_loop(rewards, values, dones, last_value, gamma, lam, terminated=None, next_values=None):
  T, N = rewards.shape
  terminated = dones if terminated is None else terminated
  if next_values is None:
    next_values = np.concatenate([values[1:], last_value[None]], axis=0)
  adv = np.zeros((T, N), np.float64)
  for n in range(N):
    running = 0.0
    for t in reversed(range(T)):
      bootstrap = 0.0 if terminated[t, n] else gamma * next_values[t, n]
      delta = rewards[t, n] + bootstrap - values[t, n]
      running = delta + (0.0 if dones[t, n] else gamma * lam * running)
      adv[t, n] = running
  return adv, adv + values


def _inputs(seed, T=37, N=5):
  rs = np.random.RandomState(seed)
  rewards = rs.randn(T, N).astype(np.float32)
  values = rs.randn(T, N).astype(np.float32)
  dones = rs.rand(T, N) < 0.15
  last_value = rs.randn(N).astype(np.float32)
  return rewards, values, dones, last_value


def test_gae_matches_python_loop():
  for seed in range(3):
    rewards, values, dones, last_value = _inputs(seed)
    adv, ret = jax.jit(gae, static_argnums=(4, 5))(rewards, values, dones, last_value, 0.99, 0.95)
    want_adv, want_ret = _gae_loop(rewards, values, dones, last_value, 0.99, 0.95)
    # float32 recursion over 37 steps against float64: errors of a few ulps of the running sums (|A| up to ~10).
    np.testing.assert_allclose(adv, want_adv, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ret, want_ret, atol=1e-5, rtol=1e-5)


def test_gae_done_stops_bootstrap_and_recursion():
  rewards = np.ones((3, 1), np.float32)
  values = np.full((3, 1), 10.0, np.float32)
  dones = np.array([[False], [True], [False]])
  adv, _ = gae(rewards, values, dones, np.full((1,), 10.0, np.float32), 0.5, 1.0)
  # t=1 ends the episode: A_1 = r - V = -9; t=0 bootstraps from V_1: delta_0 = 1 + 5 - 10 = -4, A_0 = -4 - 4.5.
  np.testing.assert_allclose(np.asarray(adv)[:, 0], [-8.5, -9.0, 1.0 + 5.0 - 10.0], atol=1e-6)


def test_gae_truncation_bootstraps_from_next_values():
  rewards, values, dones, last_value = _inputs(7)
  rs = np.random.RandomState(8)
  terminated = dones & (rs.rand(*dones.shape) < 0.5)  # the other ends are time-outs
  next_values = rs.randn(*values.shape).astype(np.float32)
  adv, ret = gae(rewards, values, dones, last_value, 0.999, 0.9, terminated=terminated, next_values=next_values)
  want_adv, want_ret = _gae_loop(rewards, values, dones, last_value, 0.999, 0.9, terminated, next_values)
  np.testing.assert_allclose(adv, want_adv, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(ret, want_ret, atol=1e-5, rtol=1e-5)
  assert not np.allclose(adv, gae(rewards, values, dones, last_value, 0.999, 0.9)[0])
