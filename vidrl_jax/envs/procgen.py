"""The 16 Procgen games through envpool, as a `VecEnv` that steps inside `jax.jit` and `lax.scan`.

envpool runs the games in C++ threads; its XLA interface (`handle, recv, send, step = pool.xla()`) turns a
batched step into an XLA custom call, so a whole rollout compiles into one program. The env state is envpool's
opaque handle (threaded through every call to order the side effects) plus per-copy episode bookkeeping.

Conventions, and how they differ from raw envpool:
- envpool auto-resets one step late ("next-step" auto-reset): after a done it returns the last frame, and the
  following step ignores its action and returns the first frame of a new level with reward 0. This module
  converts that to the library's convention (base.py): copies that finish are reset at once, through a host
  callback under `lax.cond` that only runs on steps where some copy is done, so the returned obs is already the
  new episode's first frame and every action is executed.
- Observations come channel-first (N, 3, 64, 64) from envpool and are returned as uint8 (N, 64, 64, 3).
- The pool is a stateful host object: the `VecEnv` can be jitted and scanned but not vmapped, and `reset`
  restarts all copies whatever the state passed around. The `rng` arguments are unused: envpool draws levels
  from the `seed` given at construction.
"""

from __future__ import annotations

from typing import Any

import envpool
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.experimental import io_callback

from vidrl_jax.envs.base import VecEnv, track_episodes
from vidrl_jax.errors import VidrlError

GAMES = ('bigfish', 'bossfight', 'caveflyer', 'chaser', 'climber', 'coinrun', 'dodgeball', 'fruitbot', 'heist',
         'jumper', 'leaper', 'maze', 'miner', 'ninja', 'plunder', 'starpilot')
DISTRIBUTION_MODES = ('easy', 'hard', 'extreme', 'memory', 'exploration')
NUM_ACTIONS = 15
# envpool config keys that may not come through `**extra`: set by `make_procgen` itself, or (max_episode_steps)
# ignored by envpool's Procgen, whose episodes end at the game's own time limit (500 to 6000 steps).
_RESERVED = ('num_envs', 'batch_size', 'seed', 'env_seed', 'env_name', 'base_path', 'channel_first',
             'distribution_mode', 'num_levels', 'start_level', 'use_backgrounds', 'restrict_themes',
             'use_monochrome_assets', 'max_num_players', 'gym_reset_return_info', 'max_episode_steps')


@struct.dataclass
class ProcgenState:
  """envpool's XLA handle plus per-copy episode bookkeeping."""
  handle: jax.Array           # (8,) uint8, opaque pointer to the envpool object
  episode_return: jax.Array   # (N,) float32
  episode_length: jax.Array   # (N,) int32


def task_id(game: str, distribution_mode: str = 'easy') -> str:
  """envpool's task id for a Procgen game and distribution mode, e.g. ('coinrun', 'easy') -> 'CoinrunEasy-v0'."""
  game, mode = game.lower(), distribution_mode.lower()
  if game not in GAMES:
    raise VidrlError(f'Unknown Procgen game {game!r}; the games are {", ".join(GAMES)}.')
  if mode not in DISTRIBUTION_MODES:
    raise VidrlError(f'Unknown Procgen distribution_mode {mode!r}; use one of {", ".join(DISTRIBUTION_MODES)}.')
  name = f'{game.capitalize()}{mode.capitalize()}-v0'
  if name not in envpool.list_all_envs():
    modes = [m for m in DISTRIBUTION_MODES if f'{game.capitalize()}{m.capitalize()}-v0' in envpool.list_all_envs()]
    raise VidrlError(f'Procgen game {game} has no {mode!r} mode; its modes are {", ".join(modes)}.')
  return name


def make_procgen_pool(game: str, num_envs: int, distribution_mode: str = 'easy', num_levels: int = 0,
                      start_level: int = 0, use_backgrounds: bool = True, restrict_themes: bool = False,
                      use_monochrome_assets: bool = False, seed: int = 0, **extra: Any) -> Any:
  """The raw synchronous envpool object (gymnasium API, channel-first obs); `make_procgen` wraps it.

  `extra` takes the other Procgen/envpool options: center_agent, paint_vel_info, use_sequential_levels,
  use_generated_assets, use_easy_jump, num_threads, thread_affinity_offset.
  """
  name = task_id(game, distribution_mode)
  valid = [k for k in envpool.make_spec(name)._config_keys if k not in _RESERVED]
  unknown = sorted(set(extra) - set(valid))
  if unknown:
    raise VidrlError(f'Unknown Procgen option(s) {unknown}; besides the named arguments the valid options are '
                     f'{", ".join(valid)}.')
  return envpool.make_gymnasium(
      name, num_envs=num_envs, batch_size=num_envs, seed=seed, num_levels=num_levels, start_level=start_level,
      use_backgrounds=use_backgrounds, restrict_themes=restrict_themes,
      use_monochrome_assets=use_monochrome_assets, **extra)


def make_procgen(game: str, num_envs: int, distribution_mode: str = 'easy', num_levels: int = 0,
                 start_level: int = 0, use_backgrounds: bool = True, restrict_themes: bool = False,
                 use_monochrome_assets: bool = False, seed: int = 0, **extra: Any) -> VecEnv:
  """`num_envs` copies of a Procgen game (`num_levels=0`: unlimited levels) as a jit-able `VecEnv`.

  See the module docstring for the auto-reset convention and `make_procgen_pool` for the `extra` options.
  """
  pool = make_procgen_pool(game, num_envs, distribution_mode, num_levels, start_level, use_backgrounds,
                           restrict_themes, use_monochrome_assets, seed, **extra)
  handle0, _, _, xla_step = pool.xla()
  chw = tuple(pool.observation_space.shape)
  obs_spec = jax.ShapeDtypeStruct((num_envs, *chw), jnp.uint8)
  handle_spec = jax.ShapeDtypeStruct(handle0.shape, jnp.uint8)

  def host_reset(handle: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resets the copies where `mask` (all of them if it is all True) and returns their first frames."""
    ids = np.flatnonzero(mask).astype(np.int32)
    obs = np.zeros(obs_spec.shape, np.uint8)
    obs[ids] = pool.reset(ids)[0]
    return np.asarray(handle), obs

  def reset_copies(handle: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    return io_callback(host_reset, (handle_spec, obs_spec), handle, mask)

  def to_hwc(obs: jax.Array) -> jax.Array:
    return jnp.transpose(obs, (0, 2, 3, 1))

  def reset(rng: jax.Array) -> tuple[ProcgenState, jax.Array]:
    del rng  # envpool is seeded at construction
    handle, obs = reset_copies(jnp.asarray(handle0), jnp.ones((num_envs,), bool))
    zeros = jnp.zeros((num_envs,), jnp.float32)
    return ProcgenState(handle, zeros, zeros.astype(jnp.int32)), to_hwc(obs)

  def step(state: ProcgenState, action: jax.Array, rng: jax.Array):
    del rng
    handle, (obs, reward, terminated, truncated, _) = xla_step(state.handle, action.astype(jnp.int32))
    done = terminated | truncated
    handle, first_obs = jax.lax.cond(
        done.any(), reset_copies, lambda h, _: (h, jnp.zeros_like(obs)), handle, done)
    obs = jnp.where(done[:, None, None, None], first_obs, obs)
    reward = reward.astype(jnp.float32)
    ep_return, ep_length, info = track_episodes(state.episode_return, state.episode_length, reward, done,
                                                terminated, truncated)
    new_state = ProcgenState(handle, ep_return, ep_length)
    return new_state, to_hwc(obs), reward, done, info

  return VecEnv(
      name=task_id(game, distribution_mode), num_envs=num_envs, obs_shape=(chw[1], chw[2], chw[0]),
      obs_dtype=np.dtype(np.uint8), num_actions=NUM_ACTIONS, action_shape=(), reset=reset, step=step,
      max_episode_steps=int(pool.config['max_episode_steps']))
