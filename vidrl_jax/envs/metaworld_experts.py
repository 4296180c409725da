"""Meta-World's scripted expert policies rolled out in `MetaWorldEnv`: episodes as episode-file dicts, shared by the
methods that learn from expert videos (RLV's observation pools, APV's pre-training videos).

  episodes = expert_episodes('drawer-open-v3', num_episodes=10, seed=0, image_size=48, domain='strong', noise=0.1)

Episode i is reset with `host.episode_seed(seed, i)` (object and goal positions, `MetaWorldEnv.reset`); the expert
(`metaworld.policies.ENV_POLICY_MAP[task]`, which reads the 39-d state) acts, plus Gaussian noise of std `noise`
(drawn from the episode's own generator), clipped to [-1, 1]. With `end_on_success` (default) an episode ends at
the first observation where the task is solved, marked `is_terminal`: a video of a task ends when it is done, and
the official RLV code marks a video's last frame terminal, which RLV's Eq. 2 (c_large reward on the last step)
assumes; otherwise episodes last `max_steps` and are never terminal. The domain and the camera change pixels only:
the states of an episode do not depend on them.

An episode holds `state` (T+1, 39) float32, `image` (T+1, H, W, 3) uint8 when `image_size` > 0, `is_first`,
`is_last`, `is_terminal` (T+1,) bool, `log_return` (the sparse return: steps in success) and `log_success` (1.0
when the task was solved in the episode). With `labelled=True` it also holds the true `action` (T+1, 4) and sparse
`reward` (T+1,) in the episode-file convention (row t holds what led to obs t; row 0 zeros).

Measured (2-core CPU machine, 2026-12-01; 100 episodes of seed 0, max_steps 200, end_on_success): success at
noise 0 / 0.1 / 0.3: push-v3 1.00 / 0.99 / 0.86 (62 steps on average), door-open-v3 0.96 / 0.96 / 0.96 (95 steps),
drawer-open-v3 1.00 / 1.00 / 1.00 (89 steps). The door expert's failures stay failures in 500 steps (3 of 100).
All 50 v3 tasks make, render in the strong domain and run their experts; in 3 episodes of 200 steps every expert
but push-back's (2 of 3) succeeds.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from vidrl_jax.envs.host import episode_seed
from vidrl_jax.envs.metaworld import MetaWorldEnv
from vidrl_jax.errors import VidrlError


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
                    camera: str | None = None, noise: float = 0.0, max_steps: int = 200, end_on_success: bool = True,
                    labelled: bool = False, layout_seed: int | None = None) -> list[dict[str, np.ndarray]]:
  """`num_episodes` expert episodes of `task` (module docstring); episode i is reset with episode_seed(seed, i).
  `camera`: a `MetaWorldEnv` camera (None: the domain's own)."""
  if num_episodes < 1:
    raise VidrlError(f'an expert pool needs at least one episode, got num_episodes={num_episodes}.')
  if noise < 0:
    raise VidrlError(f'the action noise is a standard deviation and must be >= 0, got {noise}.')
  env = MetaWorldEnv(task, image_size=image_size, domain=domain, camera=camera, max_steps=max_steps,
                     layout_seed=layout_seed)
  policy = expert_policy(task)
  episodes = []
  for i in range(num_episodes):
    reset_seed = episode_seed(seed, i)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), i, 1]))
    episodes.append(expert_episode(env, policy, reset_seed, noise, rng, end_on_success, labelled))
  env.close()
  return episodes


__all__ = ['expert_episode', 'expert_episodes', 'expert_policy']
