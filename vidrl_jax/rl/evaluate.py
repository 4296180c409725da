"""Policy evaluation in a JAX-native vectorised env: returns of whole episodes, one jitted `lax.while_loop`."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from vidrl_jax.envs.base import VecEnv
from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.actor_critic import ApplyFn, Params


def evaluate_policy(env: VecEnv, apply_fn: ApplyFn, params: Params, rng: jax.Array, num_episodes: int,
                    greedy: bool = False, max_steps: int | None = None) -> dict[str, float]:
  """Mean and std return of the first `num_episodes` episodes that end in the vectorised `env`.

  Each copy contributes at most its first `ceil(num_episodes / num_envs)` episodes, so with `num_episodes <=
  num_envs` this is one episode per copy and not biased towards short episodes (as the first episodes to end
  over all copies would be). One jitted `lax.while_loop`, stopping once enough episodes ended or after
  `max_steps` vectorised steps (default: time for every copy to finish its quota plus one full-length episode).
  Actions are sampled from the policy unless `greedy` (argmax).
  """
  quota = math.ceil(num_episodes / env.num_envs)
  if max_steps is None:
    max_steps = (quota + 1) * (env.max_episode_steps or 27_000)
  returns, count = _episode_returns(env, apply_fn, int(num_episodes), bool(greedy), int(max_steps))(params, rng)
  count = int(count)
  if count == 0:
    raise VidrlError(f"no episode of {env.name} ended within {max_steps} steps; pass a larger max_steps")
  returns = np.asarray(returns)[:count]
  return dict(mean_return=float(returns.mean()), std_return=float(returns.std()), num_episodes=count)


@functools.lru_cache(maxsize=16)
def _episode_returns(env: VecEnv, apply_fn: ApplyFn, num_episodes: int, greedy: bool, max_steps: int):
  """The jitted `(params, rng) -> (returns (num_episodes,), count)` of `evaluate_policy`, built once per setup."""
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
      logits, _ = apply_fn(params, obs)
      action = jnp.argmax(logits, -1) if greedy else jax.random.categorical(rng_action, logits)
      env_state, obs, _, done, info = env.step(env_state, action, rng_env)
      keep = done & (taken < quota)
      slot = jnp.where(keep, count + jnp.cumsum(keep) - 1, num_episodes)  # out of range: dropped
      returns = returns.at[slot].set(info["episode_return"].astype(jnp.float32), mode="drop")
      return (env_state, obs, returns, taken + keep, count + keep.sum(dtype=jnp.int32), t + 1, rng)

    carry = (env_state, obs, jnp.zeros((num_episodes,), jnp.float32), jnp.zeros((env.num_envs,), jnp.int32),
             jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), rng)
    _, _, returns, _, count, _, _ = jax.lax.while_loop(cond, body, carry)
    return returns, jnp.minimum(count, num_episodes)

  return jax.jit(run)
