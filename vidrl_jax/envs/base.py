"""One interface for every vectorised environment, usable inside `jax.jit` and `lax.scan`.

An environment here is a batch of `num_envs` copies stepped together. Both calls are pure functions of their
inputs, so a whole policy rollout compiles into one XLA program:

  env_state, obs = env.reset(rng)
  env_state, obs, reward, done, info = env.step(env_state, action, rng)

- `obs` is uint8, shape (num_envs, H, W, C) for images (pixels in 0..255, binary MinAtar channels as 0/255) or
  float32 (num_envs, D) for vector observations.
- `done` is True where the episode ended with this step (terminated or truncated); that copy auto-resets, so the
  returned `obs` is already the first frame of the next episode.
- `info` holds at least `terminated` (bool, (num_envs,)) so bootstrapping can tell time-outs from true ends.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

EnvState = Any


@dataclasses.dataclass(frozen=True)
class VecEnv:
  """A vectorised, jit-able environment (see module docstring)."""
  name: str
  num_envs: int
  obs_shape: tuple[int, ...]
  obs_dtype: Any
  num_actions: int | None           # discrete action count, or None for continuous actions
  action_shape: tuple[int, ...]     # () for discrete, (A,) for continuous
  reset: Callable[[jax.Array], tuple[EnvState, jax.Array]]
  step: Callable[[EnvState, jax.Array, jax.Array], tuple[EnvState, jax.Array, jax.Array, jax.Array, dict]]
  max_episode_steps: int | None = None
  action_low: tuple[float, ...] | None = None    # continuous actions: per-dimension lower bound
  action_high: tuple[float, ...] | None = None   # continuous actions: per-dimension upper bound


def env_action(env: VecEnv, action: jax.Array) -> jax.Array:
  """An agent's action in [-1, 1]^A mapped linearly onto the continuous `env`'s [action_low, action_high]."""
  low, high = jax.numpy.asarray(env.action_low), jax.numpy.asarray(env.action_high)
  return low + (action + 1.0) * 0.5 * (high - low)


def track_episodes(episode_return: jax.Array, episode_length: jax.Array, reward: jax.Array, done: jax.Array,
                   terminated: jax.Array, truncated: jax.Array) -> tuple[jax.Array, jax.Array, dict]:
  """Running episode return/length bookkeeping every VecEnv shares.

  Returns the carried totals (reset to 0 where `done`) and the step's `info`, whose `episode_return` and
  `episode_length` include this step, i.e. are the finished episode's totals where `done`.
  """
  ep_return = episode_return + reward
  ep_length = episode_length + 1
  info = {'terminated': terminated, 'truncated': truncated,
          'episode_return': ep_return, 'episode_length': ep_length}
  return jax.numpy.where(done, 0.0, ep_return), jax.numpy.where(done, 0, ep_length), info
