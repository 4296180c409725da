"""A continuous-action gymnax env as a host-side `HostEnv` (numpy in, numpy out, one decision per call).

  env = GymnaxHostEnv('Pendulum-v1', obs_keys={'position': (0, 2), 'velocity': (2, 3)})
  obs = env.reset(seed=0)                        # {'position': [cos θ, sin θ], 'velocity': [θdot]}
  obs, reward, terminal = env.step(np.zeros(1, np.float32))

For code that drives host envs (`BatchEnv`, `run_episodes`, the SAC expert) with a gymnax task. The env's
`reset_env` / `step_env` are jitted once per env name and shared by all instances; gymnax's own auto-reset is not
used: the episode limit is counted on the host (`max_steps` decisions, default the env's `max_steps_in_episode`
divided by the action repeat), and `terminal` is gymnax's `done` other than its time-out. Actions in [-1, 1] are
mapped affinely onto the env's action bounds; each one is repeated `action_repeat` times and the rewards summed.
The flat observation vector is split into named float32 keys by `obs_keys` (key -> (start, stop)).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import numpy as np

from vidrl_jax.envs.host import EpisodeLimit, ObsSpec
from vidrl_jax.errors import VidrlError


@functools.lru_cache(maxsize=None)
def _gymnax_fns(env_name: str) -> tuple[Callable, Callable, Any, Any]:
  """Jitted reset(seed) and step(state, action, repeat) of gymnax `env_name`, its params and action space."""
  import gymnax
  import jax
  import jax.numpy as jnp

  env, params = gymnax.make(env_name)

  def reset(seed: jax.Array) -> tuple[jax.Array, Any]:
    return env.reset_env(jax.random.PRNGKey(seed), params)

  def step(state: Any, action: jax.Array, repeat: int) -> tuple[jax.Array, Any, jax.Array, jax.Array]:
    key = jax.random.PRNGKey(0)   # the dynamics of the continuous gymnax envs are deterministic
    total, done = jnp.zeros((), jnp.float32), jnp.zeros((), bool)
    for _ in range(repeat):
      obs, state, reward, d, _ = env.step_env(key, state, action, params)
      total = total + jnp.where(done, 0.0, reward.astype(jnp.float32))
      done = done | d
    terminal = done & (state.time < params.max_steps_in_episode)   # gymnax's done includes its time-out
    return obs, state, total, terminal

  return jax.jit(reset), jax.jit(step, static_argnums=2), params, env.action_space(params)


class GymnaxHostEnv(EpisodeLimit):
  """gymnax env `env_name` (continuous actions) as a `HostEnv`; see the module docstring."""

  def __init__(self, env_name: str, *, action_repeat: int = 1, max_steps: int | None = None,
               obs_keys: Mapping[str, tuple[int, int]] | None = None, name: str | None = None):
    _, _, params, space = _gymnax_fns(env_name)
    if not hasattr(space, 'low'):
      raise VidrlError(f'{env_name} has discrete actions; GymnaxHostEnv takes continuous-action gymnax envs.')
    if action_repeat < 1:
      raise VidrlError(f'action_repeat must be at least 1, got {action_repeat}.')
    self.env_name, self.name = env_name, name or env_name
    self.action_repeat = action_repeat
    self.max_steps = max_steps or max(1, int(params.max_steps_in_episode) // action_repeat)
    if self.max_steps < 1:
      raise VidrlError(f'max_steps must be at least 1, got {self.max_steps}.')
    self.action_dim = int(np.prod(space.shape)) if space.shape else 1
    low = np.broadcast_to(np.asarray(space.low, np.float32), (self.action_dim,))
    high = np.broadcast_to(np.asarray(space.high, np.float32), (self.action_dim,))
    self._center, self._half = (high + low) / 2, (high - low) / 2
    self._action_shape = tuple(space.shape)
    self._obs_keys = dict(obs_keys) if obs_keys is not None else None
    self._state: Any = None
    obs = self._flat(_gymnax_fns(env_name)[0](np.uint32(0))[0])
    if self._obs_keys is None:
      self._obs_keys = {'state': (0, obs.size)}
    for key, (start, stop) in self._obs_keys.items():
      if not 0 <= start < stop <= obs.size:
        raise VidrlError(f'obs_keys[{key!r}] = {(start, stop)} is not a slice of the {obs.size}-dim observation '
                         f'of {env_name}; give (start, stop) with 0 <= start < stop <= {obs.size}.')
    self.obs_spec: ObsSpec = {k: ((stop - start,), np.dtype(np.float32))
                              for k, (start, stop) in self._obs_keys.items()}

  @staticmethod
  def _flat(obs: Any) -> np.ndarray:
    return np.asarray(obs, np.float32).reshape(-1)

  def _obs(self, obs: Any) -> dict[str, np.ndarray]:
    flat = self._flat(obs)
    return {k: flat[start:stop].copy() for k, (start, stop) in self._obs_keys.items()}

  def reset(self, seed: int) -> dict[str, np.ndarray]:
    """Starts an episode from gymnax's `reset_env` with `PRNGKey(seed)`."""
    obs, self._state = _gymnax_fns(self.env_name)[0](np.uint32(seed))
    self._start()
    return self._obs(obs)

  def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool]:
    action = self._check_action(action)
    env_action = (self._center + action * self._half).reshape(self._action_shape)
    obs, self._state, reward, terminal = _gymnax_fns(self.env_name)[1](self._state, env_action, self.action_repeat)
    return self._obs(obs), float(reward), bool(terminal)


__all__ = ['GymnaxHostEnv']
