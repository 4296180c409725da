"""Environments: build a `VecEnv` from a config, and roll a policy out in it with `lax.scan`.

  cfg = env_config('procgen', 'coinrun', num_envs=64)      # or env_config('gymnax', 'Breakout-MinAtar', 8)
  env = make_env(cfg)
  env_state, obs = env.reset(jax.random.key(cfg.seed))
  env_state, obs, traj = jax.jit(rollout, static_argnums=(0, 1, 6))(env, policy_fn, params, env_state, obs, rng, 128)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import ml_collections

from vidrl_jax.envs.base import EnvState, VecEnv
from vidrl_jax.envs.distractors import distractor_config, from_config
from vidrl_jax.errors import VidrlError

KINDS = ('gymnax', 'procgen')
_PROCGEN_DEFAULTS = dict(distribution_mode='easy', num_levels=0, start_level=0, use_backgrounds=True,
                         restrict_themes=False, use_monochrome_assets=False)
_COMMON = ('kind', 'name', 'num_envs', 'seed', 'distractors')


def env_config(kind: str, name: str, num_envs: int, seed: int = 0, distractors: dict | None = None,
               **kw: Any) -> ml_collections.ConfigDict:
  """The env sub-config with every field present.

  Every kind: `distractors` (`envs.distractors`: kind 'none' (default), 'dots' or 'squares', num, size, speed,
  channels), moving noise the agent does not control, e.g. `--config.env.distractors.kind=dots`.

  gymnax: `params` (dict of `EnvParams` overrides, e.g. max_steps_in_episode, sticky_action_prob).
  procgen: distribution_mode, num_levels, start_level, use_backgrounds, restrict_themes, use_monochrome_assets,
  plus any other envpool Procgen option (center_agent, paint_vel_info, ...), passed on to `make_procgen`.
  """
  cfg = ml_collections.ConfigDict(dict(kind=kind, name=name, num_envs=num_envs, seed=seed))
  cfg.distractors = distractor_config(**(distractors or {}))
  if kind == 'gymnax':
    unknown = sorted(set(kw) - {'params'})
    if unknown:
      raise VidrlError(f'Unknown gymnax env config field(s) {unknown}; put env param overrides in params=dict(...).')
    cfg.params = ml_collections.ConfigDict(dict(kw.get('params') or {}))
  elif kind == 'procgen':
    cfg.update({**_PROCGEN_DEFAULTS, **kw})
  else:
    raise VidrlError(f'Unknown env kind {kind!r}; use one of {", ".join(KINDS)}.')
  return cfg


def make_env(config: ml_collections.ConfigDict) -> VecEnv:
  """Builds the `VecEnv` that `config` (see `env_config`) describes, with its distractors if it asks for them
  (a config without a `distractors` field has none)."""
  return from_config(_make_game(config), config.get('distractors'))


def _make_game(config: ml_collections.ConfigDict) -> VecEnv:
  # Imported here so that gymnax-only users never load envpool (and its Qt runtime).
  if config.kind == 'gymnax':
    from vidrl_jax.envs.gymnax_env import make_gymnax
    params = config.get('params')
    return make_gymnax(config.name, config.num_envs, params.to_dict() if params is not None else None)
  if config.kind == 'procgen':
    from vidrl_jax.envs.procgen import make_procgen
    options = {k: v for k, v in config.items() if k not in _COMMON}
    return make_procgen(config.name, config.num_envs, seed=config.seed, **options)
  raise VidrlError(f'Unknown env kind {config.kind!r}; use one of {", ".join(KINDS)}.')


def rollout(env: VecEnv, policy_fn: Callable[[Any, jax.Array, jax.Array], jax.Array], params: Any,
            env_state: EnvState, obs: jax.Array, rng: jax.Array, num_steps: int
            ) -> tuple[EnvState, jax.Array, dict[str, jax.Array]]:
  """Runs `policy_fn(params, obs, rng) -> action` for `num_steps` steps under `lax.scan`.

  Returns the final env state and obs, and a time-major (T, N, ...) trajectory: `obs` (the obs each action was
  taken in), `action`, `reward`, `done`, `terminated`, `episode_return`, `episode_length` (the running
  episode's totals including this step, i.e. the finished episode's totals where `done`).
  """
  def body(carry, key):
    env_state, obs = carry
    k_act, k_env = jax.random.split(key)
    action = policy_fn(params, obs, k_act)
    env_state, next_obs, reward, done, info = env.step(env_state, action, k_env)
    out = dict(obs=obs, action=action, reward=reward, done=done, terminated=info['terminated'],
               episode_return=info['episode_return'], episode_length=info['episode_length'])
    return (env_state, next_obs), out

  (env_state, obs), traj = jax.lax.scan(body, (env_state, obs), jax.random.split(rng, num_steps))
  return env_state, obs, traj


__all__ = ['KINDS', 'VecEnv', 'env_config', 'make_env', 'rollout']
