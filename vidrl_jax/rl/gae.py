"""Generalized advantage estimation (Schulman et al., 2016, Eq. 16), as a reverse `lax.scan`.

Time-major arrays (T, N). `dones[t]` says the episode ended with step t, so the advantage recursion stops there
and `values[t + 1]` (the first state of the next episode, after an auto-reset) is not bootstrapped from.

Truncation (a time-out is not a true end): pass `terminated` (true ends only) and `next_values`, where
`next_values[t]` is V of the real successor of step t (for a truncated step, the value of the final observation
before the reset). Then a truncated step bootstraps from `next_values[t]` while the recursion still stops at it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array, gamma: float,
        lam: float, terminated: jax.Array | None = None,
        next_values: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Returns (advantages, returns), both (T, N) float32, with returns = advantages + values.

  Args:
    rewards, values, dones: (T, N); `dones[t]` ends the episode with step t (terminated or truncated).
    last_value: (N,) V of the observation after the last step (bootstrap for t = T - 1).
    gamma, lam: discount and GAE lambda.
    terminated: (T, N) true ends only; defaults to `dones` (every end is terminal, as in PPO's reference code).
    next_values: (T, N) V of each step's successor; defaults to `values[1:]` followed by `last_value`.
  """
  rewards = rewards.astype(jnp.float32)
  values = values.astype(jnp.float32)
  dones = dones.astype(jnp.float32)
  terminated = dones if terminated is None else terminated.astype(jnp.float32)
  if next_values is None:
    next_values = jnp.concatenate([values[1:], last_value[None].astype(jnp.float32)], axis=0)
  next_values = next_values.astype(jnp.float32)

  # delta_t = r_t + gamma V(s_{t+1}) (1 - terminal_t) - V(s_t);  A_t = delta_t + gamma lam (1 - done_t) A_{t+1}.
  deltas = rewards + gamma * next_values * (1.0 - terminated) - values

  def backward(next_adv, xs):
    delta, done = xs
    adv = delta + gamma * lam * (1.0 - done) * next_adv
    return adv, adv

  _, advantages = jax.lax.scan(backward, jnp.zeros_like(last_value, jnp.float32), (deltas, dones),
                               reverse=True)
  return advantages, advantages + values
