"""Tests for the environment layer: gymnax and Procgen (envpool) behind `VecEnv`, configs, and `rollout`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.envs import env_config, make_env, rollout
from vidrl_jax.envs.gymnax_env import make_gymnax
from vidrl_jax.envs.procgen import make_procgen
from vidrl_jax.errors import VidrlError


def random_policy(env):
  """A uniform random policy over `env`'s action space, as `policy_fn(params, obs, rng)`."""
  def policy(params, obs, rng):
    del params, obs
    if env.num_actions is not None:
      return jax.random.randint(rng, (env.num_envs,), 0, env.num_actions)
    return jax.random.uniform(rng, (env.num_envs, *env.action_shape), minval=jnp.asarray(env.action_low),
                              maxval=jnp.asarray(env.action_high))
  return policy


def jit_rollout(env, num_steps, seed=0):
  """Resets `env` and runs a random policy for `num_steps` inside one `jax.jit`; returns numpy arrays."""
  env_state, obs = env.reset(jax.random.key(seed))
  fn = jax.jit(lambda s, o, k: rollout(env, random_policy(env), None, s, o, k, num_steps))
  env_state, obs, traj = fn(env_state, obs, jax.random.key(seed + 1))
  return env_state, obs, jax.tree.map(np.asarray, traj)


def check_episodes(traj):
  """Checks `episode_return`/`episode_length` at every done against sums over the trajectory; returns #episodes."""
  reward, done = traj['reward'], traj['done']
  num_episodes = 0
  for i in range(done.shape[1]):
    start = 0
    for t in np.flatnonzero(done[:, i]):
      np.testing.assert_allclose(traj['episode_return'][t, i], reward[start:t + 1, i].sum(), rtol=1e-5)
      assert traj['episode_length'][t, i] == t + 1 - start
      if t + 1 < done.shape[0]:
        assert traj['episode_length'][t + 1, i] == 1  # the next step is the first of a new episode
      start, num_episodes = t + 1, num_episodes + 1
  return num_episodes


def check_step_types(env, obs, reward, done, info):
  n = env.num_envs
  assert obs.shape == (n, *env.obs_shape) and obs.dtype == env.obs_dtype
  assert reward.shape == (n,) and reward.dtype == jnp.float32
  assert done.shape == (n,) and done.dtype == jnp.bool_
  assert info['terminated'].shape == (n,) and info['terminated'].dtype == jnp.bool_
  assert info['episode_return'].dtype == jnp.float32 and info['episode_length'].dtype == jnp.int32


def test_minatar_shapes_and_uint8():
  env = make_gymnax('Breakout-MinAtar', 3)
  assert (env.obs_shape, env.num_actions, env.action_shape) == ((10, 10, 4), 3, ())
  state, obs = env.reset(jax.random.key(0))
  assert obs.shape == (3, 10, 10, 4) and obs.dtype == jnp.uint8
  assert set(np.unique(obs)) <= {0, 255} and (obs == 255).any()
  state, obs, reward, done, info = env.step(state, jnp.zeros(3, jnp.int32), jax.random.key(1))
  check_step_types(env, obs, reward, done, info)


def test_cartpole_time_limit_auto_reset():
  env = make_gymnax('CartPole-v1', 4, {'max_steps_in_episode': 5})
  assert env.obs_dtype == np.float32 and env.num_actions == 2 and env.max_episode_steps == 5
  state, obs = env.reset(jax.random.key(0))
  assert obs.shape == (4, 4)
  step = jax.jit(env.step)
  for t in range(5):  # alternating actions keep the pole up for 5 steps: only the time limit ends the episode
    state, obs, reward, done, info = step(state, jnp.full((4,), t % 2), jax.random.key(t))
  check_step_types(env, obs, reward, done, info)
  assert done.all() and info['truncated'].all() and not info['terminated'].any()
  np.testing.assert_array_equal(info['episode_length'], 5)
  np.testing.assert_allclose(info['episode_return'], 5.0)
  assert (np.abs(obs) <= 0.05).all()  # auto-reset: already the first obs of the next episode
  np.testing.assert_array_equal(state.episode_length, 0)


def test_pendulum_continuous_actions():
  env = make_gymnax('Pendulum-v1', 2)
  assert env.num_actions is None and env.action_shape == (1,)
  assert env.action_low == (-2.0,) and env.action_high == (2.0,)
  state, obs = env.reset(jax.random.key(0))
  state, obs, reward, done, info = env.step(state, jnp.ones((2, 1)), jax.random.key(1))
  check_step_types(env, obs, reward, done, info)
  assert obs.shape == (2, 3)


def test_gymnax_rollout_in_jit_episode_bookkeeping():
  env = make_gymnax('Breakout-MinAtar', 4, {'sticky_action_prob': 0.1})
  _, obs, traj = jit_rollout(env, 200)
  assert traj['obs'].shape == (200, 4, 10, 10, 4) and traj['obs'].dtype == np.uint8
  assert traj['action'].shape == traj['reward'].shape == traj['done'].shape == (200, 4)
  assert check_episodes(traj) >= 4 and traj['reward'].sum() > 0
  np.testing.assert_array_equal(traj['terminated'], traj['done'])  # Breakout ends by losing the ball


def test_procgen_step_and_rollout_in_jit():
  env = make_procgen('starpilot', 4, seed=1)
  assert (env.obs_shape, env.obs_dtype, env.num_actions, env.max_episode_steps) == ((64, 64, 3), np.uint8, 15, 1000)
  state, obs = env.reset(jax.random.key(0))
  state, obs, reward, done, info = env.step(state, jnp.zeros(4, jnp.int32), jax.random.key(0))
  check_step_types(env, obs, reward, done, info)
  _, _, traj = jit_rollout(env, 200)
  assert traj['obs'].shape == (200, 4, 64, 64, 3) and traj['obs'].dtype == np.uint8
  assert check_episodes(traj) >= 4 and traj['reward'].sum() > 0  # random starpilot episodes last ~80 steps


def test_procgen_time_limit():
  env = make_procgen('maze', 2)  # standing still (action 4) never finds the cheese: the 500-step limit ends it
  state, obs = env.reset(jax.random.key(0))
  noop = lambda params, obs, rng: jnp.full((2,), 4)
  _, _, traj = jax.jit(lambda s, o, k: rollout(env, noop, None, s, o, k, 502))(state, obs, jax.random.key(1))
  done, terminated = np.asarray(traj['done']), np.asarray(traj['terminated'])
  np.testing.assert_array_equal(np.flatnonzero(done.any(1)), [499])
  assert done[499].all() and not terminated.any()
  np.testing.assert_array_equal(traj['episode_length'][499], 500)
  np.testing.assert_array_equal(traj['episode_length'][500], 1)


def test_env_config_and_make_env():
  cfg = env_config('gymnax', 'CartPole-v1', 2, params={'max_steps_in_episode': 7})
  assert set(cfg.keys()) == {'kind', 'name', 'num_envs', 'seed', 'params', 'distractors'}
  assert make_env(cfg).max_episode_steps == 7
  assert env_config('gymnax', 'CartPole-v1', 2).params.to_dict() == {}
  cfg = env_config('procgen', 'coinrun', 2, distribution_mode='hard')
  assert {'distribution_mode', 'num_levels', 'start_level', 'use_backgrounds', 'restrict_themes',
          'use_monochrome_assets', 'seed'} <= set(cfg.keys())
  env = make_env(cfg)
  assert env.name == 'CoinrunHard-v0' and env.num_envs == 2


def test_errors():
  with pytest.raises(VidrlError, match='max_steps_in_episode'):
    make_gymnax('CartPole-v1', 2, {'not_a_param': 1})
  with pytest.raises(VidrlError, match='Unknown gymnax env'):
    make_gymnax('NoSuchEnv-v0', 2)
  with pytest.raises(VidrlError, match='Unknown env kind'):
    env_config('atari', 'Pong', 2)
  cfg = env_config('gymnax', 'CartPole-v1', 2)
  cfg.kind = 'atari'
  with pytest.raises(VidrlError, match='Unknown env kind'):
    make_env(cfg)
  with pytest.raises(VidrlError, match='Unknown Procgen game'):
    make_procgen('pong', 2)
  with pytest.raises(VidrlError, match='modes are easy, hard'):
    make_procgen('bigfish', 2, distribution_mode='memory')
  with pytest.raises(VidrlError, match='paint_vel_info'):
    make_procgen('coinrun', 2, not_an_option=True)
  with pytest.raises(VidrlError, match='max_episode_steps'):
    make_procgen('coinrun', 2, max_episode_steps=10)
