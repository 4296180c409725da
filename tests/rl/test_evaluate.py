"""The one VecEnv evaluator: discrete and continuous actions through `episode_returns` equal a plain Python loop."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.envs import env_config, make_env
from vidrl_jax.envs.base import VecEnv, env_action, track_episodes
from vidrl_jax.errors import VidrlError
from vidrl_jax.rl.evaluate import continuous_act, discrete_act, episode_returns, evaluate_policy


def _parity_env(num_envs):
  """Copy i's episodes last i + 2 steps; obs (parity of the step, step); reward 1 where the action is the parity."""
  lengths = jnp.arange(num_envs) + 2
  obs_of = lambda t: jnp.stack([t % 2, t], -1).astype(jnp.float32)

  def reset(rng):
    t = jnp.zeros(num_envs, jnp.int32)
    return (t, jnp.zeros(num_envs), t), obs_of(t)

  def step(state, action, rng):
    t, ret, length = state
    reward = (action == t % 2).astype(jnp.float32)
    done = t + 1 >= lengths
    ret, length, info = track_episodes(ret, length, reward, done, done, jnp.zeros_like(done))
    t = jnp.where(done, 0, t + 1)
    return (t, ret, length), obs_of(t), reward, done, info

  return VecEnv("parity", num_envs, (2,), np.float32, 2, (), reset, step, max_episode_steps=num_envs + 1)


def _parity_logits(params, obs):
  """Logits for the action equal to the parity, sharper with `params`."""
  return params * jnp.stack([1.0 - 2.0 * obs[:, 0], 2.0 * obs[:, 0] - 1.0], -1), jnp.zeros(obs.shape[:1])


def _python_returns(env, act, params, rng, num_episodes):
  """The evaluator's semantics stepped one call at a time: each copy's first ceil(n / N) episodes, in the order
  they end (copy order within a step), the same keys."""
  quota = math.ceil(num_episodes / env.num_envs)
  rng_reset, rng = jax.random.split(rng)
  env_state, obs = env.reset(rng_reset)
  taken, out = np.zeros(env.num_envs, int), []
  while len(out) < num_episodes:
    rng, k_act, k_env = jax.random.split(rng, 3)
    env_state, obs, _, done, info = env.step(env_state, act(params, obs, k_act), k_env)
    for i in np.flatnonzero(np.asarray(done)):
      if taken[i] < quota:
        out.append(float(info["episode_return"][i]))
        taken[i] += 1
  return np.asarray(out[:num_episodes])


@pytest.mark.parametrize("num_episodes", [3, 7])
def test_discrete_sampled_and_greedy_match_a_python_loop(num_episodes):
  env, rng = _parity_env(3), jax.random.PRNGKey(4)
  for greedy in (False, True):
    act = discrete_act(_parity_logits, greedy)
    assert act is discrete_act(_parity_logits, greedy)   # one function, one compilation per setup
    returns, count = episode_returns(env, act, num_episodes)(jnp.float32(0.5), rng)
    assert int(count) == num_episodes
    want = _python_returns(env, act, jnp.float32(0.5), rng, num_episodes)
    np.testing.assert_array_equal(np.asarray(returns), want)
  # greedy: every action is right, the copies' lengths in the order they end (copy 0 ends first and most often)
  if num_episodes == 3:
    np.testing.assert_array_equal(want, [2.0, 3.0, 4.0])
  out = evaluate_policy(env, act, jnp.float32(0.5), rng, num_episodes)
  assert out["num_episodes"] == num_episodes and out["mean_return"] == pytest.approx(want.mean())


def test_continuous_matches_a_python_loop_and_vmaps():
  env = make_env(env_config("gymnax", "Pendulum-v1", 2, params=dict(max_steps_in_episode=5)))
  policy = lambda s, obs, rng: jnp.clip(obs["state"][:, :1] * s + 0.1 * jax.random.normal(rng, (2, 1)), -1, 1)
  act = continuous_act(env, policy)
  rng = jax.random.PRNGKey(0)
  returns, count = episode_returns(env, act)(jnp.float32(0.5), rng)   # default: one episode per copy
  want = _python_returns(env, lambda s, obs, k: env_action(env, policy(s, {"state": obs}, k)), jnp.float32(0.5),
                         rng, 2)
  assert int(count) == 2 and np.all(want < 0)
  np.testing.assert_allclose(returns, want, rtol=1e-5, atol=1e-5)   # jitted float32 steps vs one call at a time
  keys = jax.random.split(rng, 3)
  batched = jax.vmap(lambda k: episode_returns(env, act)(jnp.float32(0.5), k)[0])(keys)
  for k, row in zip(keys, batched):
    np.testing.assert_allclose(row, episode_returns(env, act)(jnp.float32(0.5), k)[0], rtol=1e-6, atol=1e-5)


def test_no_finished_episode_is_an_error():
  with pytest.raises(VidrlError, match="no episode"):
    evaluate_policy(_parity_env(2), discrete_act(_parity_logits), jnp.float32(1.0), jax.random.PRNGKey(0),
                    max_steps=1)
