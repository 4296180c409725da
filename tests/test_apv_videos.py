"""Tests for APV's action-free pre-training videos (`vidrl_jax.methods.apv.videos`): the files written, ownership
(read back, never into a foreign directory) and the loader's checks, on official-style episode files too."""

import os

import numpy as np
import pytest

pytest.importorskip('metaworld')

from vidrl_jax import io  # noqa: E402
from vidrl_jax.data import ownership  # noqa: E402
from vidrl_jax.errors import VidrlError  # noqa: E402
from vidrl_jax.methods.apv import videos  # noqa: E402

SIZE = 16
VIEWS = (('corner', 'none'), (None, 'strong'))


def write(directory, **overrides):
  """Tiny videos of one task from two views, or a skip where this machine has no MuJoCo rendering."""
  options = dict(episodes_per_view=1, views=VIEWS, seed=0, image_size=SIZE, max_steps=20, noise=0.1)
  try:
    return videos.write_videos(str(directory), ['reach-v3'], **{**options, **overrides})
  except VidrlError as e:
    if 'could not render' in str(e):
      pytest.skip(f'{e} (run with MUJOCO_GL=egl)')
    raise


def episode_files(directory):
  return sorted(p for p in os.listdir(directory) if p.endswith('.npz'))


def fake_episode(rng, n=11, size=SIZE, **extra):
  """An official-style episode file's arrays (DreamerV2 keys) with random frames."""
  flags = np.arange(n)
  return dict(image=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), is_first=flags == 0,
              is_last=flags == n - 1, is_terminal=np.zeros(n, bool), **extra)


def test_written_files_are_action_free_episodes(tmp_path):
  summary = write(tmp_path / 'v')
  names = episode_files(tmp_path / 'v')
  assert names == ['reach-v3_none_corner_0000.npz', 'reach-v3_strong_free_0000.npz']
  steps, firsts = 0, []
  for name in names:
    with np.load(tmp_path / 'v' / name) as z:
      e = {k: z[k] for k in z.files}
    assert set(e) == {'image', 'is_first', 'is_last', 'is_terminal'}   # no action, reward or state
    n = len(e['image'])
    assert e['image'].dtype == np.uint8 and e['image'].shape == (n, SIZE, SIZE, 3) and 2 <= n <= 21
    for k in ('is_first', 'is_last', 'is_terminal'):
      assert e[k].dtype == bool and e[k].shape == (n,)
    np.testing.assert_array_equal(e['is_first'], np.arange(n) == 0)
    np.testing.assert_array_equal(e['is_last'], np.arange(n) == n - 1)
    assert not e['is_terminal'][:-1].any()
    steps += n - 1
    firsts.append(e['image'][0].astype(float))
  assert np.abs(firsts[0] - firsts[1]).mean() > 10    # two views of the task
  assert summary['episodes'] == 2 and summary['steps'] == steps and set(summary['success_rate']) == {'reach-v3'}
  assert ownership.owner(str(tmp_path / 'v'))['format'] == videos.FORMAT
  assert ownership.read_complete(str(tmp_path / 'v')) == summary
  write(tmp_path / 'again')                           # the same arguments give the same files
  for name in names:
    with np.load(tmp_path / 'v' / name) as a, np.load(tmp_path / 'again' / name) as b:
      np.testing.assert_array_equal(a['image'], b['image'])


def test_rerun_reads_the_finished_directory_back(tmp_path):
  directory = tmp_path / 'v'
  summary = write(directory)
  before = {p: os.stat(directory / p).st_mtime_ns for p in os.listdir(directory)}
  assert write(directory, seed=5, views=(('topview', 'weak'),)) == summary   # read back, whatever the arguments
  assert {p: os.stat(directory / p).st_mtime_ns for p in os.listdir(directory)} == before


def test_foreign_directory_is_never_written(tmp_path):
  directory = tmp_path / 'official'
  io.write_npz(str(directory / 'episode.npz'), fake_episode(np.random.default_rng(0)), compress=False)
  before = {p: os.stat(directory / p).st_mtime_ns for p in os.listdir(directory)}
  assert write(directory) == {}
  assert {p: os.stat(directory / p).st_mtime_ns for p in os.listdir(directory)} == before


def test_official_episodes_with_actions_and_rewards_load(tmp_path):
  rng = np.random.default_rng(1)
  directory = tmp_path / 'dreamer'
  episodes = [fake_episode(rng, n, action=rng.normal(size=(n, 4)).astype(np.float32),
                           reward=rng.normal(size=n).astype(np.float32), discount=np.ones(n, np.float32))
              for n in (11, 8)]
  for i, e in enumerate(episodes):
    io.write_npz(str(directory / f'2022-{i}-{len(e["image"])}.npz'), e, compress=bool(i))   # both layouts
  data = videos.load_videos(str(directory), SIZE, cache_dir=str(tmp_path / 'cache'))
  assert data.obs_keys == ('image',) and data.num_steps == 19 and data.num_runs == 2
  batch = data.windows(6).gather(np.array([0]))
  np.testing.assert_array_equal(batch['obs']['image'][0], episodes[0]['image'][:6])
  assert not data.has_actions and data.reward is None       # read as action-free video
  # mixed with action-free files: one action-free dataset
  io.write_npz(str(directory / 'zz-free.npz'), fake_episode(rng, 5), compress=False)
  mixed = videos.load_videos(str(directory), SIZE, cache_dir=str(tmp_path / 'cache'))
  assert mixed.num_runs == 3 and mixed.num_steps == 24 and not mixed.has_actions


def test_written_videos_load_without_actions(tmp_path):
  summary = write(tmp_path / 'v')
  data = videos.load_videos([str(tmp_path / 'v')], SIZE, cache_dir=str(tmp_path / 'cache'))
  assert not data.has_actions and data.reward is None and data.obs_keys == ('image',)
  assert data.num_runs == 2 and data.num_steps == summary['steps'] + 2


@pytest.mark.parametrize('case, words', [('empty', 'holds no .npz'), ('no_image', 'holds no image key'),
                                         ('size', "config's image_size is 16")])
def test_load_errors(tmp_path, case, words):
  directory = tmp_path / case
  io.makedirs(str(directory))
  rng = np.random.default_rng(2)
  if case == 'no_image':
    e = fake_episode(rng)
    e['state'] = rng.normal(size=(11, 3)).astype(np.float32)
    del e['image']
    io.write_npz(str(directory / 'e.npz'), e)
  elif case == 'size':
    io.write_npz(str(directory / 'e.npz'), fake_episode(rng, size=24))
  with pytest.raises(VidrlError, match=words) as info:
    videos.load_videos(str(directory), SIZE, cache_dir=str(tmp_path / 'cache'))
  if case == 'size':
    assert '(24, 24, 3)' in str(info.value)


@pytest.mark.parametrize('views, words', [((('corner', 'x'),), 'unknown domain'),
                                          ((('side', 'none'),), 'unknown camera'),
                                          ((('corner', 'none'), ('corner', 'none')), 'twice'),
                                          (('corner',), 'pair'), ((), 'at least one view')])
def test_bad_views_are_one_sentence(tmp_path, views, words):
  with pytest.raises(VidrlError, match=words) as info:
    write(tmp_path / 'v', views=views)
  message = str(info.value)
  assert message.endswith('.') and message.count('. ') == 0
  assert not os.path.exists(tmp_path / 'v')   # refused before the directory is claimed
