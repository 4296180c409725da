"""Tests for the host-side envs: DMC and gymnax `HostEnv`s, `BatchEnv`, `EpisodeRecorder` and `run_episodes`."""

import numpy as np
import pytest

from vidrl_jax.envs.dmc import FAST_RENDER_FLAGS, NAMES, make_host_env, sensor_keys
from vidrl_jax.envs.gymnax_host import GymnaxHostEnv
from vidrl_jax.envs.host import (BatchEnv, EpisodeRecorder, HostEnv, RecurrentPolicy, bind, episode_seed,
                                 random_policy, run_episodes)
from vidrl_jax.errors import VidrlError

PENDULUM_KEYS = {'position': (0, 2), 'velocity': (2, 3)}


def make_env(name, **kwargs):
  """A DMC task, or 'pendulum' (gymnax Pendulum-v1 on the host, its obs split into position and velocity)."""
  if name == 'pendulum':
    return GymnaxHostEnv('Pendulum-v1', obs_keys=PENDULUM_KEYS, name='pendulum', **kwargs)
  return make_host_env(name, **kwargs)


def rollout(env, seed, actions):
  """Resets `env` with `seed`, applies `actions`; returns the list of obs dicts and the rewards."""
  obs = [env.reset(seed)]
  rewards = []
  for a in actions:
    o, r, term = env.step(a)
    assert term is False
    obs.append(o)
    rewards.append(r)
  return obs, np.asarray(rewards)


def random_actions(n, dim, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (n, dim)).astype(np.float32)


@pytest.mark.parametrize('name, spec', [
    ('walker-walk', {'orientations': (14,), 'height': (1,), 'velocity': (9,)}),
    ('cheetah-run', {'position': (8,), 'velocity': (9,)}),
    ('pendulum', {'position': (2,), 'velocity': (1,)}),
])
def test_obs_shapes_and_dtypes(name, spec):
  env = make_env(name)
  assert isinstance(env, HostEnv)
  assert {k: s for k, (s, _) in env.obs_spec.items()} == spec
  if name != 'pendulum':
    assert list(env.obs_spec) == sensor_keys(name)
  obs = env.reset(0)
  obs2, reward, terminal = env.step(np.zeros(env.action_dim, np.float32))
  for o in (obs, obs2):
    assert list(o) == list(spec)
    for k, shape in spec.items():
      assert o[k].shape == shape and o[k].dtype == np.float32
  assert isinstance(reward, float) and terminal is False
  if name != 'pendulum':   # the hard-coded tables match dm_control's own specs
    dm = env.dm_env
    assert list(dm.observation_spec()) == list(spec)
    assert dm.action_spec().shape == (env.action_dim,)
    np.testing.assert_array_equal(dm.action_spec().minimum, -1.0)
    np.testing.assert_array_equal(dm.action_spec().maximum, 1.0)
  else:
    np.testing.assert_allclose(np.sum(obs['position'] ** 2), 1.0, rtol=1e-5)   # [cos, sin]


def test_defaults():
  assert (make_host_env('walker-run').max_steps, make_host_env('walker-run').action_repeat) == (500, 2)
  assert make_host_env('cheetah-run', action_repeat=4).max_steps == 250
  assert (make_env('pendulum').max_steps, make_env('pendulum').action_repeat) == (200, 1)   # gymnax's 200 steps
  assert make_env('pendulum', action_repeat=2).max_steps == 100
  assert list(GymnaxHostEnv('Pendulum-v1').obs_spec) == ['state']   # no obs_keys: one flat vector


@pytest.mark.parametrize('name', ['walker-walk', 'pendulum'])
def test_reset_is_deterministic(name):
  env = make_env(name)
  actions = random_actions(10, env.action_dim)
  obs_a, rew_a = rollout(env, 7, actions)
  rollout(env, 8, actions)                        # a different episode in between
  obs_b, rew_b = rollout(env, 7, actions)         # same env, re-seeded
  obs_c, rew_c = rollout(make_env(name), 7, actions)   # fresh env
  for obs, rew in ((obs_b, rew_b), (obs_c, rew_c)):
    np.testing.assert_array_equal(rew, rew_a)
    for oa, ob in zip(obs_a, obs):
      for k in oa:
        np.testing.assert_array_equal(oa[k], ob[k])
  obs_d, _ = rollout(env, 8, actions[:0])
  assert not all(np.array_equal(obs_d[0][k], obs_a[0][k]) for k in obs_a[0])   # another seed, another start


def test_dmc_seed_matches_suite_load():
  from dm_control import suite
  env = make_host_env('walker-stand')
  env.reset(3)
  obs = env.reset(5)
  ref = suite.load('walker', 'stand', task_kwargs={'random': 5}).reset().observation
  np.testing.assert_array_equal(obs['orientations'], ref['orientations'].astype(np.float32))


@pytest.mark.parametrize('name', ['cheetah-run', 'pendulum'])
def test_action_repeat_sums_rewards(name):
  actions = random_actions(4, 6 if name.startswith('cheetah') else 1)
  env2 = make_env(name, action_repeat=2)
  env1 = make_env(name, action_repeat=1)
  obs2, rew2 = rollout(env2, 1, actions)
  obs1, rew1 = rollout(env1, 1, np.repeat(actions, 2, axis=0))
  np.testing.assert_allclose(rew2, rew1.reshape(-1, 2).sum(1), rtol=1e-5, atol=1e-7)
  for t in range(len(actions) + 1):
    for k in obs2[t]:
      np.testing.assert_allclose(obs2[t][k], obs1[2 * t][k], rtol=1e-5, atol=1e-6)


def test_max_steps_cut_and_step_errors():
  env = make_host_env('cheetah-run', max_steps=3)
  with pytest.raises(VidrlError, match='before reset'):
    env.step(np.zeros(6, np.float32))
  rollout(env, 0, np.zeros((3, 6), np.float32))
  with pytest.raises(VidrlError, match='episode limit of 3'):
    env.step(np.zeros(6, np.float32))
  env.reset(0)
  with pytest.raises(VidrlError, match='shape'):
    env.step(np.zeros(5, np.float32))


def test_cheetah_custom_rewards():
  from dm_control.utils import rewards
  actions = random_actions(20, 6)
  for name in ('cheetah-run_backwards', 'cheetah-flip', 'cheetah-flip_backwards'):
    _, rew = rollout(make_host_env(name), 0, actions)
    assert np.all((rew >= 0) & (rew <= 2.0))   # two control steps of rewards in [0, 1] each
  env = make_host_env('cheetah-flip', action_repeat=1)
  env.reset(0)
  for a in actions:
    _, r, _ = env.step(a)
    angmom = env.physics.named.data.subtree_angmom['torso'][1]
    expected = rewards.tolerance(angmom, bounds=(5, float('inf')), margin=5, value_at_margin=0, sigmoid='linear')
    assert 0.0 <= r <= 1.0 and r == pytest.approx(float(expected), abs=1e-12)
  # Spin the torso forward / backward by hand: flip rewards it, flip_backwards does not, and vice versa.
  flip, back = make_host_env('cheetah-flip'), make_host_env('cheetah-flip_backwards')
  for env in (flip, back):
    env.reset(0)
  for spin, want_flip in ((8.0, True), (-8.0, False)):
    values = []
    for env in (flip, back):
      physics = env.physics
      physics.named.data.qvel['rooty'] = spin
      physics.forward()
      values.append(env.dm_env.task.get_reward(physics))
      angmom = physics.named.data.subtree_angmom['torso'][1]
      sign = 1.0 if env is flip else -1.0
      assert values[-1] == pytest.approx(float(np.clip((sign * angmom) / 5.0, 0.0, 1.0)), abs=1e-9)
    assert (values[0] > 0) == want_flip and (values[1] > 0) == (not want_flip)
  # run_backwards: full reward at backward speed >= 10.
  env = make_host_env('cheetah-run_backwards')
  env.reset(0)
  physics = env.physics
  speed = physics.speed()
  assert env.dm_env.task.get_reward(physics) == pytest.approx(
      float(rewards.tolerance(-speed, bounds=(10, float('inf')), margin=10, value_at_margin=0, sigmoid='linear')))


def test_batch_env_and_recorder_layout():
  envs = BatchEnv([make_env('pendulum', max_steps=5) for _ in range(2)])
  assert (envs.num_envs, envs.action_dim, envs.max_steps, envs.name) == (2, 1, 5, 'pendulum')
  rec = EpisodeRecorder(2, 1)
  obs = envs.reset([1, 2])
  assert obs['position'].shape == (2, 2) and obs['velocity'].shape == (2, 1)
  first = obs
  rec.reset(obs)
  actions = random_actions(5, 2, seed=3).reshape(5, 2, 1) * 2   # some outside [-1, 1]: clipped
  rewards = []
  for a in actions:
    obs, reward, terminal = envs.step(a)
    assert reward.dtype == np.float32 and reward.shape == (2,) and terminal.dtype == bool and not terminal.any()
    rec.step(a, obs, reward, terminal)
    rewards.append(reward)
  with pytest.raises(VidrlError, match='episode limit'):
    envs.step(actions[0])
  with pytest.raises(VidrlError, match='shape'):
    envs.reset([0, 1])
    envs.step(np.zeros((3, 1), np.float32))
  episodes = rec.finish()
  assert len(episodes) == 2
  for i, episode in enumerate(episodes):   # plain episodes: T+1 observations, T actions and rewards
    assert set(episode) == {'obs', 'action', 'reward', 'terminal'} and set(episode['obs']) == {'position', 'velocity'}
    assert all(len(v) == 6 for v in episode['obs'].values()) and episode['obs']['position'].dtype == np.float32
    np.testing.assert_array_equal(episode['obs']['velocity'][0], first['velocity'][i])
    np.testing.assert_array_equal(episode['obs']['velocity'][-1], obs['velocity'][i])
    assert episode['action'].shape == (5, 1) and episode['action'].dtype == np.float32
    np.testing.assert_array_equal(episode['action'], np.clip(actions[:, i], -1, 1))
    assert episode['reward'].dtype == np.float32
    np.testing.assert_array_equal(episode['reward'], np.asarray(rewards)[:, i])
    assert episode['terminal'] is False
  # Clipping: the env saw the clipped action (same result as passing it clipped).
  single = make_env('pendulum')
  single.reset(1)
  _, r_clip, _ = single.step(np.clip(actions[0, 0], -1, 1))
  assert r_clip == pytest.approx(float(rewards[0][0]), rel=1e-6)


class _Terminating:
  """A toy HostEnv that is terminal after `length` steps, to test terminal handling."""

  def __init__(self, length):
    self.name, self.action_dim, self.max_steps, self.length = 'toy', 1, 10, length
    self.obs_spec = {'x': ((1,), np.dtype(np.float32))}

  def reset(self, seed):
    self.t = 0
    return {'x': np.zeros(1, np.float32)}

  def step(self, action):
    self.t += 1
    return {'x': np.full(1, self.t, np.float32)}, 1.0, self.t >= self.length


def test_terminal_copies_freeze_and_recorder_ignores_them():
  env = BatchEnv([_Terminating(2), _Terminating(4)])
  trajs = {}
  returns = run_episodes(env, random_policy(1, 0), 2, 0, on_episode=lambda i, t: trajs.__setitem__(i, t))
  np.testing.assert_array_equal(returns, [2.0, 4.0])
  assert len(trajs[0]['obs']['x']) == 3 and len(trajs[1]['obs']['x']) == 5 and len(trajs[1]['action']) == 4
  assert trajs[0]['terminal'] is True and trajs[1]['terminal'] is True
  env.reset([0, 0])
  for _ in range(3):
    obs, reward, terminal = env.step(np.zeros((2, 1), np.float32))
  np.testing.assert_array_equal(obs['x'][:, 0], [2, 3])
  np.testing.assert_array_equal(reward, [0, 1])
  np.testing.assert_array_equal(terminal, [True, False])


def test_run_episodes_returns_and_determinism():
  def run(seed):
    env = BatchEnv([make_env('pendulum', max_steps=8) for _ in range(2)])
    trajs = {}
    returns = run_episodes(env, random_policy(1, seed), 3, seed, on_episode=lambda i, t: trajs.__setitem__(i, t))
    return returns, trajs

  returns, trajs = run(0)
  assert returns.shape == (3,) and returns.dtype == np.float64 and sorted(trajs) == [0, 1, 2]
  for i in range(3):
    assert len(trajs[i]['reward']) == 8 and len(trajs[i]['obs']['position']) == 9
    assert returns[i] == pytest.approx(float(trajs[i]['reward'].astype(np.float64).sum()), rel=1e-9)
  # Episode i starts from episode_seed(0, i).
  first = make_env('pendulum').reset(episode_seed(0, 2))
  np.testing.assert_array_equal(trajs[2]['obs']['position'][0], first['position'])
  returns_again, trajs_again = run(0)
  np.testing.assert_array_equal(returns, returns_again)
  np.testing.assert_array_equal(trajs[2]['action'], trajs_again[2]['action'])
  assert not np.array_equal(run(1)[0], returns)


def test_bound_recurrent_policy_in_run_episodes():
  """`bind` under `run_episodes`: `init(n)` per round, `is_first` on each round's first decision only, obs through
  `obs_fn`, the carry passed on, and decision t (counted over all rounds) drawn with `fold_in(rng, t)`."""
  import jax
  import jax.numpy as jnp

  def act(state, carry, obs, is_first, rng):
    count = jnp.where(is_first, 0, carry) + 1        # init's 99 would saturate the action
    noise = jax.random.uniform(rng, (count.shape[0], 1), minval=-0.01, maxval=0.01)
    return state * (obs['y'] + 1.0) * count[:, None] + noise, count

  rng, trajs = jax.random.PRNGKey(7), {}
  policy = bind(RecurrentPolicy(init=lambda n: jnp.full((n,), 99), act=act), 0.2, rng,
                obs_fn=lambda obs: {'y': obs['x'] / 100.0})
  returns = run_episodes(BatchEnv([_Terminating(2), _Terminating(3)]), policy, 4, 0,
                         on_episode=lambda i, t: trajs.__setitem__(i, t))
  np.testing.assert_array_equal(returns, [2.0, 3.0, 2.0, 3.0])
  assert [len(trajs[i]['action']) for i in range(4)] == [2, 3, 2, 3]
  for i, traj in trajs.items():          # rounds of 3 decisions; at decision k of a round the obs x is k
    for k, action in enumerate(traj['action']):
      key = jax.random.fold_in(rng, 3 * (i // 2) + k)
      noise = np.asarray(jax.random.uniform(key, (2, 1), minval=-0.01, maxval=0.01))[i % 2]
      np.testing.assert_allclose(action, 0.2 * (k / 100.0 + 1.0) * (k + 1) + noise, rtol=1e-6, atol=1e-6)


def test_episode_seed():
  seeds = [episode_seed(0, i) for i in range(100)] + [episode_seed(1, i) for i in range(100)]
  assert len(set(seeds)) == 200 and all(0 <= s < 2 ** 32 for s in seeds)
  assert episode_seed(3, 4) == episode_seed(3, 4)
  with pytest.raises(VidrlError):
    episode_seed(-1, 0)


def test_rendering():
  env = make_host_env('walker-walk', image_size=64)
  assert env.obs_spec['image'] == ((64, 64, 3), np.dtype(np.uint8))
  try:
    obs = env.reset(0)
  except Exception as e:  # noqa: BLE001 -- no EGL / GL context on this machine
    pytest.skip(f'MuJoCo rendering is unavailable here ({type(e).__name__}: {e}); run with MUJOCO_GL=egl.')
  images = [obs['image']]
  for a in random_actions(3, 6):
    images.append(env.step(a)[0]['image'])
  for im in images:
    assert im.shape == (64, 64, 3) and im.dtype == np.uint8
  assert images[0].std() > 0 and not np.array_equal(images[0], images[-1])


def test_fast_render_switch():
  """Fast rendering sets the model's quality fields on a fresh env and still renders (H, W, 3) uint8 frames of the
  same state; it is the default where JAX runs on the CPU."""
  import jax
  assert make_host_env('walker-walk', image_size=8).fast_render == (jax.default_backend() == 'cpu')
  assert FAST_RENDER_FLAGS == {'shadow': False, 'reflection': False}
  fast = make_host_env('walker-walk', image_size=48, fast_render=True)
  full = make_host_env('walker-walk', image_size=48, fast_render=False)
  try:
    obs_fast, obs_full = fast.reset(0), full.reset(0)
  except Exception as e:  # noqa: BLE001 -- no EGL / GL context on this machine
    pytest.skip(f'MuJoCo rendering is unavailable here ({type(e).__name__}: {e}); run with MUJOCO_GL=egl.')
  quality_fast, quality_full = fast.physics.model.vis.quality, full.physics.model.vis.quality
  assert (quality_fast.offsamples, quality_fast.shadowsize) == (0, 0)
  assert quality_full.offsamples > 0 and quality_full.shadowsize > 0
  for obs in (obs_fast, obs_full, fast.step(np.zeros(6, np.float32))[0]):
    assert obs['image'].shape == (48, 48, 3) and obs['image'].dtype == np.uint8 and obs['image'].std() > 0
  np.testing.assert_array_equal(obs_fast['orientations'], obs_full['orientations'])   # same state ...
  assert np.abs(obs_fast['image'].astype(int) - obs_full['image']).mean() > 0.5          # ... plainer frame


def test_errors():
  with pytest.raises(VidrlError, match='walker-walk'):
    make_host_env('walker-jump')
  with pytest.raises(VidrlError, match='discrete'):
    GymnaxHostEnv('CartPole-v1')
  with pytest.raises(VidrlError, match='slice'):
    GymnaxHostEnv('Pendulum-v1', obs_keys={'velocity': (2, 4)})
  with pytest.raises(VidrlError, match='identical'):
    BatchEnv([make_host_env('walker-walk'), make_host_env('cheetah-run')])
  assert sensor_keys('walker-run') == ['orientations', 'height', 'velocity']
  assert len(NAMES) == 7
