"""RLV's observation data on Meta-World: episodes of Meta-World's scripted expert policies, actions and rewards
discarded, optionally rendered in a shifted domain (standing in for the paper's human videos, §4.3).

  summary = write_expert_pool(directory, 'drawer-open-v3', num_episodes=100, seed=0, image_size=48,
                              domain='strong', noise=0.1)
  observations = data.load_pool(directory)          # transitions for the Sampler, as the Acrobot pools

The episodes are `envs.metaworld_experts.expert_episodes(task, num_episodes, seed, **options)` (reset seeds,
action noise, `end_on_success` and its terminal last frame, which Eq. 2's c_large reward on the last step assumes:
see that module). The domain changes pixels only: the states of a pool do not depend on it.

A pool is written by `data.write_pool` (format `rlv_observations`): keys `state` (T+1, 39) float32, `image` (T+1,
H, W, 3) uint8 with `image_size` > 0, `is_first`, `is_last`, `is_terminal`, `log_return` (the sparse return: steps
in success) and `log_success` (1.0 when the task was solved in the episode); its completion summary records
`success_rate`, `mean_return` and the seconds taken. With `labelled=True` the episodes also hold the true `action`
(T+1, 4) and sparse `reward` (T+1,) in the episode-file convention (row t holds what led to obs t; row 0 zeros): a
separate pool for the ablations with ground-truth observation actions or rewards, read with
`data.load_pool(directory, labelled=True)`.

Measured (2-core CPU machine, 2026-12-01, load average about 5 from other jobs; 100 episodes of seed 0,
max_steps 200, end_on_success; `write_expert_pool(dir, task, 100, 0, image_size=..., noise=...)` then
`data.load_pool(dir)`):
  task            success (noise 0 / 0.1 / 0.3)  mean length  seconds: state / 48x48 image
  push-v3         1.00 / 0.99 / 0.86             62 steps       7.6 / 86.7
  door-open-v3    0.96 / 0.96 / 0.96             95 steps       5.7 / 107.0
  drawer-open-v3  1.00 / 1.00 / 1.00             89 steps       3.0 / 104.2
The door expert's failures stay failures in 500 steps (3 of 100). All 50 v3 tasks make, render in the strong
domain and run their experts; in 3 episodes of 200 steps every expert but push-back's (2 of 3) succeeds.
At 48x48 from the corner camera the push puck covers about 2x2 pixels; door and drawer are large.
"""

from __future__ import annotations

import os
import time
from typing import Any

from vidrl_jax.data import ownership
from vidrl_jax.envs.metaworld_experts import expert_episodes
from vidrl_jax.methods.rlv.data import write_pool


def write_expert_pool(directory: str, task: str, num_episodes: int, seed: int, **options: Any) -> dict:
  """Writes `expert_episodes(task, num_episodes, seed, **options)` as a pool (module docstring) and returns its
  completion summary: task, options, episodes, steps, mean_return, success_rate, seconds. A finished pool is read
  back, not redone; a directory the project did not write is used as it is."""
  if ownership.state(directory) in ('complete', 'foreign'):
    return dict(ownership.read_complete(directory) or {})
  t0 = time.time()
  episodes = expert_episodes(task, num_episodes, seed, **options)
  seconds = time.time() - t0
  meta = dict(task=task, seed=int(seed), labelled=bool(options.get('labelled', False)),
              **{k: v for k, v in options.items() if k != 'labelled'})
  return write_pool(directory, episodes, dict(meta, seconds=round(seconds, 1)))


def pool_dir(root: str, task: str, domain: str, image_size: int, labelled: bool = False) -> str:
  """The conventional pool directory under `root`: <task>_<domain>_<state|img48>[_labelled]."""
  view = f'img{image_size}' if image_size else 'state'
  return os.path.join(root, f'{task}_{domain}_{view}' + ('_labelled' if labelled else ''))


__all__ = ['pool_dir', 'write_expert_pool']
