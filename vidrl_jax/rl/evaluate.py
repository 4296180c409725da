"""Policy evaluation in a JAX-native vectorised env: returns of whole episodes, one jitted `lax.while_loop`.

`episode_returns` runs any `act(params, obs, rng) -> env action` on the env's raw observations; two adapters
make one from an agent: `discrete_act` from an actor-critic `apply_fn(params, obs) -> (logits, value)` (sampled,
or argmax), `continuous_act` from a stateless `policy(state, {obs_key: obs}, rng) -> action in [-1, 1]^A` (the
online collectors' protocol), mapped onto the env's bounds. Host envs: `vidrl_jax.envs.host.run_episodes`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vidrl_jax.envs.base import VecEnv, env_action
from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.actor_critic import ApplyFn

ActFn = Callable[[Any, jax.Array, jax.Array], jax.Array]   # (params, obs (num_envs, ...), rng) -> env action


def discrete_act(apply_fn: ApplyFn, greedy: bool = False) -> ActFn:
  """Actions sampled from `apply_fn`'s logits, or their argmax when `greedy` (the same function for the same
  pair, so that their evaluations share one compilation)."""
  return _discrete_act(apply_fn, bool(greedy))


@functools.lru_cache(maxsize=16)
def _discrete_act(apply_fn: ApplyFn, greedy: bool) -> ActFn:
  def act(params, obs, rng):
    logits, _ = apply_fn(params, obs)
    return jnp.argmax(logits, -1) if greedy else jax.random.categorical(rng, logits)
  return act


def continuous_act(env: VecEnv, policy: Callable[[Any, Mapping[str, jax.Array], jax.Array], jax.Array],
                   obs_key: str = "state") -> ActFn:
  """`policy(state, {obs_key: obs}, rng) -> action in [-1, 1]^A` mapped onto `env`'s [action_low, action_high]."""
  return lambda state, obs, rng: env_action(env, policy(state, {obs_key: obs}, rng))


def evaluate_policy(env: VecEnv, act: ActFn, params: Any, rng: jax.Array, num_episodes: int | None = None,
                    max_steps: int | None = None) -> dict[str, float]:
  """Mean and std return of the first `num_episodes` (default `env.num_envs`) episodes that end in `env`
  (`episode_returns`); raises when none ended."""
  returns, count = episode_returns(env, act, num_episodes, max_steps)(params, rng)
  count = int(count)
  if count == 0:
    raise VidrlError(f"no episode of {env.name} ended within the step limit; pass a larger max_steps")
  returns = np.asarray(returns, np.float64)[:count]
  return dict(mean_return=float(returns.mean()), std_return=float(returns.std()), num_episodes=count)


def episode_returns(env: VecEnv, act: ActFn, num_episodes: int | None = None, max_steps: int | None = None
                    ) -> Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]:
  """A jitted (and vmappable) `(params, rng) -> (returns (num_episodes,) float32, count)`: the returns of the
  first `count` episodes to end, in the order they ended (0 after them), from a reset drawn from `rng`.

  Each copy contributes at most its first `ceil(num_episodes / num_envs)` episodes, so with the default
  `num_episodes = num_envs` this is one episode per copy and not biased towards short episodes (as the first
  episodes to end over all copies would be). The loop stops once enough episodes ended or after `max_steps`
  vectorised steps (default: time for every copy to finish its quota plus one full-length episode). Step t
  splits `(rng, action key, env key)` off the running key. Built once per (env, act, num_episodes, max_steps).
  """
  num_episodes = env.num_envs if num_episodes is None else int(num_episodes)
  if max_steps is None:
    max_steps = (math.ceil(num_episodes / env.num_envs) + 1) * (env.max_episode_steps or 27_000)
  return _episode_returns(env, act, num_episodes, int(max_steps))


@functools.lru_cache(maxsize=16)
def _episode_returns(env: VecEnv, act: ActFn, num_episodes: int, max_steps: int):
  quota = math.ceil(num_episodes / env.num_envs)

  def run(params, rng):
    rng_reset, rng = jax.random.split(rng)
    env_state, obs = env.reset(rng_reset)

    def cond(carry):
      *_, count, t, _ = carry
      return (count < num_episodes) & (t < max_steps)

    def body(carry):
      env_state, obs, returns, taken, count, t, rng = carry
      rng, rng_action, rng_env = jax.random.split(rng, 3)
      env_state, obs, _, done, info = env.step(env_state, act(params, obs, rng_action), rng_env)
      keep = done & (taken < quota)
      slot = jnp.where(keep, count + jnp.cumsum(keep) - 1, num_episodes)  # out of range: dropped
      returns = returns.at[slot].set(info["episode_return"].astype(jnp.float32), mode="drop")
      return (env_state, obs, returns, taken + keep, count + keep.sum(dtype=jnp.int32), t + 1, rng)

    carry = (env_state, obs, jnp.zeros((num_episodes,), jnp.float32), jnp.zeros((env.num_envs,), jnp.int32),
             jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), rng)
    _, _, returns, _, count, _, _ = jax.lax.while_loop(cond, body, carry)
    return returns, jnp.minimum(count, num_episodes)

  return jax.jit(run)
