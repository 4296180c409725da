"""RLV's observation data on Meta-World: episodes of Meta-World's scripted expert policies, actions and rewards
discarded, optionally rendered in a shifted domain (standing in for the paper's human videos, §4.3).

  summary = write_expert_pool(directory, 'drawer-open-v3', num_episodes=100, seed=0, image_size=48,
                              domain='strong', noise=0.1)
  observations = data.load_pool(directory)          # transitions for the Sampler, as the Acrobot pools

Episode i is reset with `host.episode_seed(seed, i)` (object and goal positions, `MetaWorldEnv.reset`); the expert
(`metaworld.policies.ENV_POLICY_MAP[task]`, which reads the 39-d state) acts, plus Gaussian noise of std `noise`
(drawn from the episode's own generator), clipped to [-1, 1]. With `end_on_success` (default) an episode ends at
the first observation where the task is solved, marked `is_terminal`: a video of a task ends when it is done, and
the official RLV code marks a video's last frame terminal, which Eq. 2's c_large reward on the last step assumes;
otherwise episodes last `max_steps` and are never terminal. The domain changes pixels only: the states of a pool
do not depend on it.

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
import warnings
from typing import Any

import numpy as np

from vidrl_jax.data import ownership
from vidrl_jax.envs.host import episode_seed
from vidrl_jax.envs.metaworld import MetaWorldEnv
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.rlv.data import write_pool


def expert_policy(task: str) -> Any:
  """Meta-World's scripted expert for `task`; `get_action(state)` gives its 4-d action."""
  from metaworld.policies import ENV_POLICY_MAP
  if task not in ENV_POLICY_MAP:
    raise VidrlError(f'Meta-World has no scripted expert for {task!r}; use a v3 task name such as push-v3, '
                     f'door-open-v3 or drawer-open-v3.')
  return ENV_POLICY_MAP[task]()


def expert_episode(env: MetaWorldEnv, policy: Any, reset_seed: int, noise: float, rng: np.random.Generator,
                   end_on_success: bool = True, labelled: bool = False) -> dict[str, np.ndarray]:
  """One episode of `policy` in `env` (a sparse-reward `MetaWorldEnv`) as an episode-file dict (module docstring)."""
  obs = env.reset(reset_seed)
  rows, actions, rewards = [obs], [np.zeros(env.action_dim, np.float32)], [0.0]
  solved = False
  with warnings.catch_warnings():   # the experts warn when their gains saturate the action bounds
    warnings.filterwarnings('ignore', message='Constant')
    for _ in range(env.max_steps):
      action = np.asarray(policy.get_action(obs['state'].astype(np.float64)), np.float32)
      if noise > 0:
        action = action + rng.normal(0.0, noise, action.shape).astype(np.float32)
      action = np.clip(action, -1.0, 1.0)
      obs, reward, _ = env.step(action)
      rows.append(obs)
      actions.append(action)
      rewards.append(reward)
      solved = solved or reward > 0
      if end_on_success and reward > 0:
        break
  n = len(rows)
  flags = np.zeros(n, bool)
  first, last, terminal = flags.copy(), flags.copy(), flags.copy()
  first[0], last[-1], terminal[-1] = True, True, bool(end_on_success and solved)
  episode = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  episode.update(is_first=first, is_last=last, is_terminal=terminal, log_return=np.float32(sum(rewards)),
                 log_success=np.float32(solved))
  if labelled:
    episode.update(action=np.stack(actions).astype(np.float32), reward=np.asarray(rewards, np.float32))
  return episode


def expert_episodes(task: str, num_episodes: int, seed: int, *, image_size: int = 0, domain: str = 'none',
                    noise: float = 0.0, max_steps: int = 200, end_on_success: bool = True, labelled: bool = False,
                    layout_seed: int | None = None) -> list[dict[str, np.ndarray]]:
  """`num_episodes` expert episodes of `task` (module docstring); episode i is reset with episode_seed(seed, i)."""
  if num_episodes < 1:
    raise VidrlError(f'an expert pool needs at least one episode, got num_episodes={num_episodes}.')
  if noise < 0:
    raise VidrlError(f'the action noise is a standard deviation and must be >= 0, got {noise}.')
  env = MetaWorldEnv(task, image_size=image_size, domain=domain, max_steps=max_steps, layout_seed=layout_seed)
  policy = expert_policy(task)
  episodes = []
  for i in range(num_episodes):
    reset_seed = episode_seed(seed, i)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), i, 1]))
    episodes.append(expert_episode(env, policy, reset_seed, noise, rng, end_on_success, labelled))
  env.close()
  return episodes


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


__all__ = ['expert_episode', 'expert_episodes', 'expert_policy', 'pool_dir', 'write_expert_pool']
