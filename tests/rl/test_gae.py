"""The scanned GAE equals the textbook backward loop (Schulman et al., 2016, Eq. 16); so do the lambda-returns
with per-step discounts (DreamerV2), of which GAE's returns are a case."""

import jax
import numpy as np

from vidrl_jax.rl.gae import gae, lambda_returns


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


# ---------------------------------------------------------------- lambda-returns (DreamerV2's lambda-target)

def _lambda_loop(rewards, values, discounts, bootstrap, lam):
  """R_t = r_t + g_t ((1 - lam) V_{t+1} + lam R_{t+1}), R_T = V_T, one float64 scalar at a time."""
  T, N = rewards.shape
  discounts = np.broadcast_to(discounts, (T, N))
  next_values = np.concatenate([values[1:], bootstrap[None]], axis=0).astype(np.float64)
  out = np.zeros((T, N), np.float64)
  for n in range(N):
    running = float(bootstrap[n])
    for t in reversed(range(T)):
      running = rewards[t, n] + discounts[t, n] * ((1 - lam) * next_values[t, n] + lam * running)
      out[t, n] = running
  return out


def _lambda_inputs(rs, T=37, N=5):
  rewards, values, _, bootstrap = (rs.standard_normal(s).astype(np.float32) for s in ((T, N), (T, N), (), (N,)))
  # Per-step discounts as DreamerV2's: gamma times a predicted continuation probability, some steps near 0.
  discounts = (0.99 * rs.uniform(0.0, 1.0, (T, N)) ** 0.2).astype(np.float32)
  return rewards, values, discounts, bootstrap


def test_lambda_returns_match_python_loop():
  returns = jax.jit(lambda_returns, static_argnums=4)
  rs = np.random.default_rng(11)
  for lam in (0.0, 0.5, 0.95, 1.0):
    rewards, values, discounts, bootstrap = _lambda_inputs(rs)
    for disc in (discounts, 0.97):   # per-step (T, N) and a scalar
      got = returns(rewards, values, disc, bootstrap, lam)
      assert got.shape == (37, 5) and got.dtype == np.float32
      # float32 against float64 over 37 steps: errors <= 1.6e-6 measured on |R| <= 6.3.
      np.testing.assert_allclose(got, _lambda_loop(rewards, values, disc, bootstrap, lam), atol=1e-5, rtol=1e-5)


def test_lambda_zero_is_one_step_td_and_one_is_monte_carlo_plus_tail():
  rs = np.random.default_rng(12)
  rewards, values, discounts, bootstrap = _lambda_inputs(rs, T=9, N=3)
  next_values = np.concatenate([values[1:], bootstrap[None]], axis=0).astype(np.float64)
  np.testing.assert_allclose(lambda_returns(rewards, values, discounts, bootstrap, 0.0),
                             rewards + discounts.astype(np.float64) * next_values, atol=1e-6, rtol=1e-6)
  # lam = 1: R_t = sum_{k>=t} (prod_{t<=j<k} g_j) r_k + (prod_{j>=t} g_j) V_T, written out term by term.
  g = discounts.astype(np.float64)
  want = np.zeros((9, 3))
  for t in range(9):
    weight = np.ones(3)
    for k in range(t, 9):
      want[t] += weight * rewards[k]
      weight = weight * g[k]
    want[t] += weight * bootstrap
  np.testing.assert_allclose(lambda_returns(rewards, values, discounts, bootstrap, 1.0), want, atol=1e-5, rtol=1e-5)
  # values[0] enters no target.
  moved = values.copy()
  moved[0] += 100.0
  np.testing.assert_array_equal(lambda_returns(rewards, moved, discounts, bootstrap, 0.7),
                                lambda_returns(rewards, values, discounts, bootstrap, 0.7))


def test_lambda_returns_three_steps_by_hand():
  rewards = np.array([1.0, 2.0, 3.0], np.float32)
  values = np.array([100.0, 4.0, 8.0], np.float32)   # V(s_0) unused; V(s_1), V(s_2)
  bootstrap = np.array(16.0, np.float32)              # V(s_3)
  # lam = 0.5, discounts (0.5, 0.5, 0.25):
  #   R_2 = 3 + 0.25 * 16 = 7;  R_1 = 2 + 0.5 (0.5 * 8 + 0.5 * 7) = 5.75;
  #   R_0 = 1 + 0.5 (0.5 * 4 + 0.5 * 5.75) = 3.4375.
  got = lambda_returns(rewards, values, np.array([0.5, 0.5, 0.25], np.float32), bootstrap, 0.5)
  np.testing.assert_allclose(got, [3.4375, 5.75, 7.0], atol=1e-6, rtol=1e-6)
  # An end at step 1 (discount 0) stops the bootstrap and the recursion: R_1 = 2, R_0 = 1 + 0.5 (2 + 1) = 2.5.
  got = lambda_returns(rewards, values, np.array([0.5, 0.0, 0.25], np.float32), bootstrap, 0.5)
  np.testing.assert_allclose(got, [2.5, 2.0, 7.0], atol=1e-6, rtol=1e-6)


def test_gae_returns_are_lambda_returns_of_the_done_discounts():
  """The one recursion: GAE's advantages + values are the lambda-returns with gamma_t = gamma (1 - done_t)."""
  rewards, values, dones, last_value = _inputs(13)
  _, ret = gae(rewards, values, dones, last_value, 0.99, 0.95)
  want = lambda_returns(rewards, values, 0.99 * (1.0 - dones.astype(np.float32)), last_value, 0.95)
  # Two float32 orders of the same sums (A_t + V_t against R_t directly), |R| <~ 10.
  np.testing.assert_allclose(ret, want, atol=1e-5, rtol=1e-5)


def test_lambda_returns_keep_trailing_axes():
  rs = np.random.default_rng(14)
  rewards, values = rs.standard_normal((2, 6, 2, 3)).astype(np.float32)
  bootstrap = rs.standard_normal((2, 3)).astype(np.float32)
  got = lambda_returns(rewards, values, 0.9, bootstrap, 0.8)
  assert got.shape == (6, 2, 3)
  flat = _lambda_loop(rewards.reshape(6, 6), values.reshape(6, 6), 0.9, bootstrap.reshape(6), 0.8)
  np.testing.assert_allclose(got.reshape(6, 6), flat, atol=1e-5, rtol=1e-5)
