"""Tests for the Meta-World host env (`vidrl_jax.envs.metaworld`), its renderer and RLV's expert observation pools."""

import gc

import numpy as np
import pytest

pytest.importorskip('metaworld')

from vidrl_jax.envs.host import HostEnv, episode_seed  # noqa: E402
from vidrl_jax.envs.metaworld import CAMERAS, DOMAINS, MetaWorldEnv, make_sawyer_env  # noqa: E402
from vidrl_jax.envs.metaworld_experts import expert_episodes, expert_policy  # noqa: E402
from vidrl_jax.envs.mjrender import free_camera  # noqa: E402
from vidrl_jax.errors import VidrlError  # noqa: E402
from vidrl_jax.methods.rlv import data, metaworld_data  # noqa: E402
from test_host import rollout  # noqa: E402  (the host-env rollout helper of tests/envs/test_host.py)

SIZE = 24   # small frames keep the tests fast; the domain differences below were measured at 24 and 48 pixels


def make_image_env(task='push-v3', **kwargs):
  """An env with images, or a skip where this machine has no MuJoCo rendering (run with MUJOCO_GL=egl)."""
  try:
    return MetaWorldEnv(task, image_size=SIZE, **kwargs)
  except VidrlError as e:
    if 'could not render' in str(e):
      pytest.skip(str(e))
    raise


def random_actions(n, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (n, 4)).astype(np.float32)


def test_obs_shapes_and_dtypes():
  state_env, image_env = MetaWorldEnv('push-v3'), make_image_env()
  assert isinstance(state_env, HostEnv) and state_env.action_dim == 4 and state_env.max_steps == 200
  assert state_env.obs_spec == {'state': ((39,), np.dtype(np.float32))}
  assert image_env.obs_spec == {'state': ((39,), np.dtype(np.float32)),
                                'image': ((SIZE, SIZE, 3), np.dtype(np.uint8))}
  for env in (state_env, image_env):
    obs = env.reset(0)
    obs2, reward, terminal = env.step(np.zeros(4, np.float32))
    for o in (obs, obs2):
      assert set(o) == set(env.obs_spec)
      for k, (shape, dtype) in env.obs_spec.items():
        assert o[k].shape == shape and o[k].dtype == dtype
    assert isinstance(reward, float) and terminal is False


def test_episode_limit():
  env = MetaWorldEnv('drawer-open-v3', max_steps=3)
  with pytest.raises(VidrlError, match='before reset'):
    env.step(np.zeros(4, np.float32))
  env.reset(0)
  for _ in range(3):
    env.step(np.zeros(4, np.float32))
  with pytest.raises(VidrlError, match='episode limit of 3'):
    env.step(np.zeros(4, np.float32))


def test_reset_is_deterministic():
  env = make_image_env('door-open-v3')
  actions = random_actions(8)
  obs_a, rew_a = rollout(env, 7, actions)
  obs_other, _ = rollout(env, 8, actions)             # another episode in between
  obs_b, rew_b = rollout(env, 7, actions)             # the same env, re-seeded
  obs_c, rew_c = rollout(make_image_env('door-open-v3'), 7, actions)   # a fresh env
  for other, rew in ((obs_b, rew_b), (obs_c, rew_c)):
    np.testing.assert_array_equal(rew, rew_a)
    for a, b in zip(obs_a, other):
      np.testing.assert_array_equal(a['state'], b['state'])
      np.testing.assert_array_equal(a['image'], b['image'])
  assert not np.array_equal(obs_a[0]['state'], obs_other[0]['state'])   # seeds place the door differently


def test_layout_seed_fixes_positions():
  env = MetaWorldEnv('push-v3', layout_seed=3)
  np.testing.assert_array_equal(env.reset(0)['state'], env.reset(1)['state'])
  np.testing.assert_array_equal(env.reset(0)['state'], MetaWorldEnv('push-v3').reset(3)['state'])


@pytest.mark.filterwarnings('ignore:Constant')   # the expert's saturating-gain warning
def test_sparse_reward_is_info_success():
  """Along an expert episode the sparse reward is Meta-World's info['success'] and the dense one its reward."""
  sparse, dense = MetaWorldEnv('push-v3'), MetaWorldEnv('push-v3', reward='dense')
  raw = make_sawyer_env('push-v3')
  policy = expert_policy('push-v3')
  seed = 5
  obs, _ = sparse.reset(seed), dense.reset(seed)
  raw.np_random = np.random.default_rng(seed)
  raw_obs, _ = raw.reset()
  np.testing.assert_array_equal(obs['state'], raw_obs.astype(np.float32))
  successes = []
  for _ in range(90):
    action = np.clip(policy.get_action(raw_obs), -1, 1).astype(np.float32)
    obs, r_sparse, _ = sparse.step(action)
    _, r_dense, _ = dense.step(action)
    raw_obs, r_raw, _, _, info = raw.step(action)
    assert r_sparse == float(info['success']) and r_dense == pytest.approx(float(r_raw))
    successes.append(info['success'])
  assert 0 < sum(successes) < len(successes)   # both values occur, so the comparison can fail


def test_domain_shift_changes_pixels_not_state():
  """Mean absolute frame differences against the plain domain, measured at 24 and 48 pixels on push, door-open and
  drawer-open: weak 17.6-19.5, strong 40.3-42.6 grey levels (out of 255); the tests ask for 10 and 30."""
  actions = random_actions(5, seed=1)
  plain, _ = rollout(make_image_env(), 3, actions)
  for domain, threshold in (('weak', 10.0), ('strong', 30.0)):
    shifted, _ = rollout(make_image_env(domain=domain), 3, actions)
    for a, b in zip(plain, shifted):
      np.testing.assert_array_equal(a['state'], b['state'])
      assert np.abs(a['image'].astype(float) - b['image'].astype(float)).mean() > threshold


def test_renderers_survive_each_other():
  """Deleting one env's renderer leaves another's frames intact (mujoco.Renderer fails this: mjrender docstring)."""
  env = make_image_env()
  first = env.reset(0)['image']
  other = make_image_env('drawer-open-v3')
  other.reset(0)
  del other
  gc.collect()
  np.testing.assert_array_equal(env.reset(0)['image'], first)


def test_corner_frames_are_upright():
  """The corner camera is rolled upside down; its frames are turned 180 degrees: the table is in the lower half."""
  env = make_image_env()
  frame = env.reset(0)['image'].astype(float)
  raw = env._renderer.render(env.sawyer_env.data, env._camera)
  np.testing.assert_array_equal(frame, raw[::-1, ::-1])
  top, bottom = frame[:SIZE // 3], frame[-SIZE // 3:]
  assert np.std(top) < np.std(bottom)   # plain grey background above, table and pedestal below


def test_cameras():
  """Every model camera renders its own view of the same state; None is the domain's own camera (corner, or the
  strong domain's free camera), and a named camera overrides a domain's free camera."""
  frames = {c: make_image_env(camera=c).reset(0)['image'] for c in CAMERAS}
  default = make_image_env().reset(0)['image']
  np.testing.assert_array_equal(default, frames['corner'])
  names = list(frames)
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      assert np.abs(frames[a].astype(float) - frames[b].astype(float)).mean() > 5, (a, b)
  strong, strong_corner = make_image_env(domain='strong'), make_image_env(domain='strong', camera='corner')
  obs, obs_corner = strong.reset(0), strong_corner.reset(0)
  np.testing.assert_array_equal(obs['state'], obs_corner['state'])
  free = strong._renderer.render(strong.sawyer_env.data, free_camera(*DOMAINS['strong'].camera))
  np.testing.assert_array_equal(free, obs['image'])
  assert np.abs(obs['image'].astype(float) - obs_corner['image'].astype(float)).mean() > 10
  with pytest.raises(VidrlError, match='no camera'):
    make_image_env(camera='side')


def test_expert_solves_push():
  """Meta-World's scripted push expert solves both episodes well inside the limit (measured: 100 of 100 episodes
  of seed 0, 62 steps on average); episodes end at the first success, marked terminal."""
  episodes = expert_episodes('push-v3', 2, seed=0)
  for e in episodes:
    n = len(e['state'])
    assert e['log_success'] == 1.0 and e['log_return'] == 1.0 and n < 150
    assert e['state'].shape == (n, 39) and e['state'].dtype == np.float32
    np.testing.assert_array_equal(e['is_first'], np.arange(n) == 0)
    np.testing.assert_array_equal(e['is_last'], np.arange(n) == n - 1)
    np.testing.assert_array_equal(e['is_terminal'], np.arange(n) == n - 1)
    assert 'action' not in e and 'reward' not in e
  env = MetaWorldEnv('push-v3')
  np.testing.assert_array_equal(episodes[1]['state'][0], env.reset(episode_seed(0, 1))['state'])
  noisy = expert_episodes('push-v3', 1, seed=0, noise=0.3, end_on_success=False, max_steps=20)[0]
  assert len(noisy['state']) == 21 and not noisy['is_terminal'].any()
  assert not np.array_equal(noisy['state'][1:], episodes[0]['state'][1:21])


def test_pool_round_trip(tmp_path):
  directory = str(tmp_path / 'pool')
  summary = metaworld_data.write_expert_pool(directory, 'drawer-open-v3', 2, seed=1, image_size=SIZE,
                                             domain='strong', max_steps=120)
  assert summary['success_rate'] == 1.0 and summary['episodes'] == 2 and summary['domain'] == 'strong'
  pool = data.load_pool(directory)
  assert pool.population() == summary['steps']
  batch = pool.gather(np.arange(pool.population()))
  assert batch['obs']['state'].shape == (summary['steps'], 39)
  assert batch['next_obs']['image'].shape == (summary['steps'], SIZE, SIZE, 3)
  assert 'action' not in batch and 'reward' not in batch
  pixels = data.load_pool(directory, obs_keys=('image',)).gather(np.arange(3))
  assert set(pixels['obs']) == {'image'}
  np.testing.assert_array_equal(pixels['obs']['image'], batch['obs']['image'][:3])
  assert batch['is_last'].sum() == 2 and np.all(batch['discount'][batch['is_last']] == 0.0)
  assert metaworld_data.write_expert_pool(directory, 'drawer-open-v3', 2, seed=1) == summary   # read back
  with pytest.raises(VidrlError, match='holds no actions or rewards'):
    data.load_pool(directory, labelled=True)

  labelled_dir = str(tmp_path / 'labelled')
  metaworld_data.write_expert_pool(labelled_dir, 'drawer-open-v3', 2, seed=1, labelled=True, max_steps=120)
  unlabelled = data.load_pool(labelled_dir).gather(np.arange(3))   # what RLV sees: the labels dropped
  assert 'action' not in unlabelled and 'reward' not in unlabelled
  labelled = data.load_pool(labelled_dir, labelled=True).gather(np.arange(summary['steps']))
  np.testing.assert_array_equal(labelled['obs']['state'], batch['obs']['state'])   # same episodes, no image
  assert labelled['action'].shape == (summary['steps'], 4) and np.abs(labelled['action']).max() <= 1.0
  np.testing.assert_array_equal(labelled['reward'], labelled['is_last'].astype(np.float32))   # success ends it


@pytest.mark.parametrize('make', [lambda: MetaWorldEnv('push-v2'), lambda: MetaWorldEnv('push-v3', domain='x'),
                                  lambda: MetaWorldEnv('push-v3', reward='shaped'),
                                  lambda: expert_episodes('push-v3', 0, seed=0)])
def test_bad_input_is_one_sentence(make):
  with pytest.raises(VidrlError) as info:
    make()
  message = str(info.value)
  assert message.endswith('.') and message.count('. ') == 0
