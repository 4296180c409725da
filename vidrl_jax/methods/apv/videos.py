"""APV's action-free pre-training videos: Meta-World scripted experts on tasks other than the target tasks,
rendered from several cameras and visual domains (standing in for the paper's RLBench videos, §4: the video model
is pre-trained on another domain than the tasks it is fine-tuned on), and the loader of APV/DreamerV2 episodes.

  summary = write_videos(directory, ['button-press-v3', 'reach-v3'], episodes_per_view=100, seed=0,
                         views=[('corner', 'none'), ('corner2', 'weak'), (None, 'strong')], image_size=64)
  videos = load_videos([directory], image_size=64)      # a SequenceDataset: obs['image'], no actions
  windows = videos.windows(50)

A view is a (camera, domain) pair: `camera` one of `envs.metaworld.CAMERAS` (corner, corner2, corner3, topview,
behindGripper, gripperPOV) or None for the domain's own camera (the strong domain's free camera, else corner);
`domain` one of `envs.metaworld.DOMAINS` (none, weak, strong). For every task and view, `episodes_per_view`
episodes of `envs.metaworld_experts.expert_episodes` (Gaussian action noise `noise`; an episode ends at the first
success, marked terminal, or after `max_steps`), seeded by `episode_seed(seed, crc32('<task>/<camera>/<domain>'))`:
distinct per task and view, and unchanged when other tasks or views are added. Pick tasks disjoint from the target
tasks: this module does not know them.

On disk (DreamerV2/APV episode files, read by `data.formats.episodes`): one uncompressed `.npz` per episode,
`<task>_<domain>_<camera>_<i:04d>.npz` (camera 'free' for a domain's free camera), keys
  image        uint8 (T+1, H, W, 3)   frame t (H = W = image_size)
  is_first     bool  (T+1,)           row 0
  is_last      bool  (T+1,)           the last row
  is_terminal  bool  (T+1,)           the last row when the expert solved the task there
and no `action` or `reward`: action-free videos. The directory is claimed first (`data.ownership`, format
'apv_videos', the options in the owner marker) and marked complete last with the summary (episodes, steps,
success_rate per task, seconds). A finished directory is read back, not rewritten (whatever the arguments); a
directory the project did not write (official APV or DreamerV2 episodes) is used as it is, never written to.

`load_videos` reads any such directories unchanged, frames and episode flags only: their `action` and `reward`, if
any, are not read, so these videos and DreamerV2 episodes with actions load together as one action-free dataset.

Measured (2-core CPU machine, 2026-12-07, otherwise idle; `write_videos` of tasks button-press-v3 and reach-v3,
views ('corner', 'none') and (None, 'strong'), 2 episodes per view, seed 0, max_steps 100, noise 0: 8 episodes,
443 steps, every episode solved): 32x32 3.1-3.7 s, 0.38-0.46 s per episode; 64x64 3.1-3.4 s, 0.39-0.43 s per
episode (about 7 ms per step, making the four envs included): at these sizes the physics and the expert cost
more than the rendering.
"""

from __future__ import annotations

import time
import zlib
from typing import Sequence

from vidrl_jax import io
from vidrl_jax.data import formats, ownership, store
from vidrl_jax.data.sequence import SequenceDataset
from vidrl_jax.envs.host import episode_seed
from vidrl_jax.envs.metaworld import CAMERAS, DOMAINS
from vidrl_jax.envs.metaworld_experts import expert_episodes, expert_policy
from vidrl_jax.errors import VidrlError

FORMAT = 'apv_videos'
KEYS = ('image', 'is_first', 'is_last', 'is_terminal')
DEFAULT_VIEWS = (('corner', 'none'), ('corner2', 'weak'), ('corner3', 'none'), (None, 'strong'))


def _views(views: Sequence) -> list[tuple[str, str]]:
  """The views as (camera label, domain) pairs, the label 'free' for a domain's free camera; checked."""
  out = []
  for view in views:
    if isinstance(view, str) or len(view) != 2:
      raise VidrlError(f'a view is a (camera, domain) pair such as ("corner2", "weak"), got {view!r}.')
    camera, domain = view
    if domain not in DOMAINS:
      raise VidrlError(f'view {tuple(view)!r} has the unknown domain {domain!r}; use one of {", ".join(DOMAINS)}.')
    if camera is not None and camera not in CAMERAS:
      raise VidrlError(f'view {tuple(view)!r} has the unknown camera {camera!r}; use None (the domain\'s own) or '
                       f'one of {", ".join(CAMERAS)}.')
    label = camera or ('free' if DOMAINS[domain].camera is not None else 'corner')
    if (label, domain) in out:
      raise VidrlError(f'the views name camera {label!r} in domain {domain!r} twice; list each view once.')
    out.append((label, domain))
  if not out:
    raise VidrlError('write_videos needs at least one view; pass views such as [("corner", "none")].')
  return out


def write_videos(directory: str, tasks: Sequence[str], *, episodes_per_view: int, views: Sequence = DEFAULT_VIEWS,
                 seed: int = 0, image_size: int = 64, max_steps: int = 200, noise: float = 0.0) -> dict:
  """Writes the expert videos of every task and view into `directory` (module docstring) and returns the
  completion summary; a finished directory's summary is read back, a foreign directory's ({} without one)."""
  if ownership.state(directory) in ('complete', 'foreign'):
    return dict(ownership.read_complete(directory) or {})
  if not tasks:
    raise VidrlError('write_videos needs at least one task; pass Meta-World v3 names other than the targets.')
  if image_size < 1:
    raise VidrlError(f'videos need frames: image_size must be a positive size in pixels, got {image_size}.')
  if episodes_per_view < 1:
    raise VidrlError(f'write_videos needs at least one episode per view, got episodes_per_view={episodes_per_view}.')
  for task in tasks:
    expert_policy(task)   # an unknown task fails before the directory is claimed
  pairs = _views(views)
  options = dict(tasks=list(tasks), views=[list(v) for v in pairs], episodes_per_view=int(episodes_per_view),
                 seed=int(seed), image_size=int(image_size), max_steps=int(max_steps), noise=float(noise))
  ownership.claim(directory, {'format': FORMAT, **options})
  t0 = time.time()
  episodes, steps, success = 0, 0, {}
  for task in tasks:
    solved = []
    for camera, domain in pairs:
      view_seed = episode_seed(seed, zlib.crc32(f'{task}/{camera}/{domain}'.encode()))
      for i, e in enumerate(expert_episodes(task, episodes_per_view, view_seed, image_size=image_size,
                                            domain=domain, camera=None if camera == 'free' else camera,
                                            noise=noise, max_steps=max_steps)):
        io.write_npz(io.join(directory, f'{task}_{domain}_{camera}_{i:04d}.npz'), {k: e[k] for k in KEYS},
                     compress=False)
        episodes, steps = episodes + 1, steps + len(e['image']) - 1
        solved.append(float(e['log_success']))
    success[task] = sum(solved) / len(solved)
  summary = dict(options, episodes=episodes, steps=steps, success_rate=success, seconds=round(time.time() - t0, 1))
  ownership.mark_complete(directory, summary)
  return summary


def load_videos(directories: str | Sequence[str], image_size: int, cache_dir: str | None = None) -> SequenceDataset:
  """The episodes of `directories` (this module's videos, or official APV/DreamerV2 episode directories, whose
  action and reward keys are not read) as an action-free SequenceDataset with obs['image'] of image_size x
  image_size frames."""
  if isinstance(directories, str):
    directories = [directories]
  cache = store.Files(cache_dir).cache_dir
  for d in directories:
    for path in formats.npz_files(d, 'episodes'):   # headers only: the video checks before the general ones
      columns = store.members(io.local_copy(path, cache), source=path)
      if 'image' not in columns:
        raise VidrlError(f'{path} holds no image key (it has {sorted(columns)}); pre-training videos need frames, '
                         f'so point the config at directories of episodes with images.')
      shape = tuple(columns['image'].shape[1:])
      if shape[:2] != (image_size, image_size):
        raise VidrlError(f'{path} holds images of shape {shape} but the config\'s image_size is {image_size}; set '
                         f'the config\'s image_size to the videos\' size or write videos of {image_size} pixels.')
  return formats.episodes(directories, obs_keys=['image'], cache_dir=cache_dir, actions=False)


__all__ = ['DEFAULT_VIEWS', 'FORMAT', 'KEYS', 'load_videos', 'write_videos']
