"""gymnax environments (MinAtar, classic control, ...) as a `VecEnv`: `num_envs` copies under `jax.vmap`.

Everything is pure JAX, so the env can be jitted, scanned and vmapped freely. MinAtar observations (binary
H×W×C channels) come back as uint8 0/255, everything else as float32 vectors. The env state carries a running
episode return and length per copy; `info['episode_return']` / `info['episode_length']` hold the return and
length so far including this step, which is the finished episode's value where `done`; `info['final_obs']` is
the observation the step reached, before an auto-reset replaced it (off-policy learners bootstrap from it).
"""

from __future__ import annotations

import dataclasses

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import spaces
from gymnax.wrappers.purerl import StickyActionWrapper

from vidrl_jax.envs.base import VecEnv, track_episodes
from vidrl_jax.errors import VidrlError

# Not a field of gymnax's EnvParams: gymnax implements sticky actions as a wrapper, we expose it as a param.
STICKY_KEY = 'sticky_action_prob'


@struct.dataclass
class GymnaxState:
  """Batched gymnax state plus per-copy episode bookkeeping."""
  env_state: object
  episode_return: jax.Array   # (N,) float32, return of the running episode
  episode_length: jax.Array   # (N,) int32, steps of the running episode


def make_gymnax(name: str, num_envs: int, env_params_overrides: dict | None = None) -> VecEnv:
  """Builds `num_envs` vmapped copies of gymnax env `name`, with optional `EnvParams` overrides.

  `env_params_overrides` may set any field of the env's `EnvParams` (e.g. `max_steps_in_episode`) and, for
  discrete-action envs, `sticky_action_prob` (probability of repeating the previous action, as in MinAtar).
  """
  if name not in gymnax.registered_envs:
    raise VidrlError(f'Unknown gymnax env {name!r}; known envs are {", ".join(gymnax.registered_envs)}.')
  env, params = gymnax.make(name)
  overrides = dict(env_params_overrides or {})
  sticky = float(overrides.pop(STICKY_KEY, 0.0))
  valid = [f.name for f in dataclasses.fields(params)]
  unknown = sorted(set(overrides) - set(valid))
  if unknown:
    raise VidrlError(f'Unknown env param(s) {unknown} for gymnax env {name}; valid keys are '
                     f'{", ".join(valid + [STICKY_KEY])}.')
  params = params.replace(**overrides)
  action_space = env.action_space(params)
  discrete = isinstance(action_space, spaces.Discrete)
  if not 0.0 <= sticky <= 1.0:
    raise VidrlError(f'{STICKY_KEY} must lie in [0, 1], got {sticky}.')
  if sticky > 0.0:
    if not discrete:
      raise VidrlError(f'{STICKY_KEY} needs a discrete action space but {name} has continuous actions.')
    env = StickyActionWrapper(env, sticky)
  is_image = name.endswith('-MinAtar')
  obs_shape = tuple(env.observation_space(params).shape)

  def to_obs(obs: jax.Array) -> jax.Array:
    if is_image:
      return jnp.where(obs > 0, 255, 0).astype(jnp.uint8)
    return obs.astype(jnp.float32)

  def reset(rng: jax.Array) -> tuple[GymnaxState, jax.Array]:
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(rng, num_envs), params)
    zeros = jnp.zeros((num_envs,), jnp.float32)
    return GymnaxState(env_state, zeros, zeros.astype(jnp.int32)), to_obs(obs)

  def step(state: GymnaxState, action: jax.Array, rng: jax.Array):
    keys = jax.random.split(rng, num_envs)
    obs, env_state, reward, terminated, truncated, gym_info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
        keys, state.env_state, action, params)
    reward = reward.astype(jnp.float32)
    done = terminated | truncated
    ep_return, ep_length, info = track_episodes(state.episode_return, state.episode_length, reward, done,
                                                terminated, truncated)
    info['final_obs'] = to_obs(gym_info['final_observation'])   # the obs before the auto-reset
    new_state = GymnaxState(env_state, ep_return, ep_length)
    return new_state, to_obs(obs), reward, done, info

  low = high = None
  if not discrete:  # tuples keep the VecEnv hashable (usable as a static jit argument)
    low = tuple(np.broadcast_to(np.asarray(action_space.low, np.float32), action_space.shape).tolist())
    high = tuple(np.broadcast_to(np.asarray(action_space.high, np.float32), action_space.shape).tolist())
  return VecEnv(
      name=name, num_envs=num_envs, obs_shape=obs_shape,
      obs_dtype=np.dtype(np.uint8) if is_image else np.dtype(np.float32),
      num_actions=int(action_space.n) if discrete else None,
      action_shape=() if discrete else tuple(action_space.shape),
      reset=reset, step=step, max_episode_steps=int(params.max_steps_in_episode),
      action_low=low, action_high=high)
