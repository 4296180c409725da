"""Generalized advantage estimation (Schulman et al., 2016, Eq. 16) and lambda-returns with per-step discounts
(DreamerV2's lambda-target, Hafner et al. 2021; APV App. A, Eq. 9): one reverse `lax.scan` of one recursion.

Both are the linear backward recursion x_t = a_t + c_t x_{t+1} (`_backward`), with different a, c and x_T:

  GAE:            A_t   = delta_t + gamma lam (1 - done_t) A_{t+1},                         A_T = 0
  lambda-return:  R^l_t = r_t + gamma_t (1 - lam) V(s_{t+1}) + gamma_t lam R^l_{t+1},        R^l_T = V(s_T)

and GAE's returns A_t + V(s_t) are the lambda-returns with gamma_t = gamma (1 - done_t) (the tests check it).

Arrays are time-major, (T, N) or (T, ...): time on axis 0. DreamerV2's imagined trajectories are time-major
already, (horizon + 1, batch): its `lambda_return(reward[:-1], value[:-1], disc[:-1], bootstrap=value[-1], axis=0)`
is `lambda_returns(reward[:-1], value[:-1], disc[:-1], value[-1], lam)` here. Batch-major data (N, T) is swapped
to (T, N) first.

GAE. `dones[t]` says the episode ended with step t, so the advantage recursion stops there and `values[t + 1]`
(the first state of the next episode, after an auto-reset) is not bootstrapped from.

Truncation (a time-out is not a true end): pass `terminated` (true ends only) and `next_values`, where
`next_values[t]` is V of the real successor of step t (for a truncated step, the value of the final observation
before the reset). Then a truncated step bootstraps from `next_values[t]` while the recursion still stops at it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _backward(inputs: jax.Array, coeffs: jax.Array, last: jax.Array) -> jax.Array:
  """x_t = inputs_t + coeffs_t x_{t+1} for t = T-1 ... 0, from x_T = `last`: the one reverse recursion. (T, ...)."""
  def step(next_x, xs):
    a, c = xs
    x = a + c * next_x
    return x, x

  _, xs = jax.lax.scan(step, last, (inputs, coeffs), reverse=True)
  return xs


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
  advantages = _backward(deltas, gamma * lam * (1.0 - dones), jnp.zeros_like(last_value, jnp.float32))
  return advantages, advantages + values


def lambda_returns(rewards: jax.Array, values: jax.Array, discounts: jax.Array | float, bootstrap: jax.Array,
                   lam: float) -> jax.Array:
  """TD(lambda) targets with per-step discounts (DreamerV2's critic and actor targets), (T, ...) float32.

  R^l_t = r_t + gamma_t ((1 - lam) V(s_{t+1}) + lam R^l_{t+1}),  R^l_T = V(s_T) = `bootstrap`.
  lam = 0 gives one-step TD targets r_t + gamma_t V(s_{t+1}); lam = 1 the discounted Monte-Carlo return of the
  rewards plus the discounted bootstrap, sum_k (prod_{j<k} gamma_j) r_k + (prod_j gamma_j) V(s_T).

  Args:
    rewards: (T, ...) r_t, the reward of step t (from s_t to s_{t+1}).
    values: (T, ...) V(s_t); values[1:] and `bootstrap` are the V(s_{t+1}) of the recursion (values[0] enters no
      target: the argument mirrors `gae`'s `values` and DreamerV2's `lambda_return`).
    discounts: gamma_t, (T, ...) or a scalar: in DreamerV2 gamma times the discount head's prediction (the
      probability that the episode goes on); gamma (1 - done_t) for environment rollouts.
    bootstrap: (...) V(s_T), the value at the horizon.
    lam: lambda in [0, 1].
  """
  rewards = rewards.astype(jnp.float32)
  discounts = jnp.broadcast_to(jnp.asarray(discounts, jnp.float32), rewards.shape)
  bootstrap = bootstrap.astype(jnp.float32)
  next_values = jnp.concatenate([values[1:].astype(jnp.float32), bootstrap[None]], axis=0)
  return _backward(rewards + discounts * (1.0 - lam) * next_values, discounts * lam, bootstrap)
