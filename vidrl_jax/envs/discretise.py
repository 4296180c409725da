"""A discrete-action `VecEnv` driven by a continuous 1-D action: the action in [-1, 1] is thresholded into the
env's discrete actions.

RLV's Acrobot (`AcrobotContinuous` of the official code) is gymnax Acrobot-v1 behind this wrapper with thresholds
(-0.5, 0.5): a <= -0.5 -> action 0 (torque -1), -0.5 < a <= 0.5 -> action 1 (no torque), a > 0.5 -> action 2
(torque +1) (the ties are a choice: they have probability 0 under SAC's policy). So a continuous-control learner
(SAC) runs on a discrete env without a method-specific env.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

from vidrl_jax.envs.base import VecEnv
from vidrl_jax.errors import VidrlError


def discrete_action(action: jax.Array, thresholds: Sequence[float]) -> jax.Array:
  """(N, 1) or (N,) continuous actions -> (N,) int32: the number of thresholds the action lies strictly above
  (clipped to [-1, 1] first)."""
  a = jnp.clip(jnp.reshape(action, (action.shape[0], -1))[:, 0], -1.0, 1.0)
  return jnp.sum(a[:, None] > jnp.asarray(thresholds, jnp.float32)[None, :], axis=1).astype(jnp.int32)


def thresholded(env: VecEnv, thresholds: Sequence[float] = (-0.5, 0.5)) -> VecEnv:
  """`env` (discrete, `len(thresholds) + 1` actions) as a continuous-action VecEnv with action shape (1,) in
  [-1, 1]; `thresholds` strictly increasing inside (-1, 1)."""
  thresholds = tuple(float(t) for t in thresholds)
  if env.num_actions is None:
    raise VidrlError(f"thresholding turns a continuous action into discrete ones, but {env.name} already has "
                     f"continuous actions; use the env as it is")
  if env.num_actions != len(thresholds) + 1:
    raise VidrlError(f"{len(thresholds)} thresholds give {len(thresholds) + 1} actions but {env.name} has "
                     f"{env.num_actions}; pass {env.num_actions - 1} thresholds")
  if any(not -1.0 < t < 1.0 for t in thresholds) or any(b <= a for a, b in zip(thresholds, thresholds[1:])):
    raise VidrlError(f"thresholds must increase strictly inside (-1, 1), got {thresholds}")

  def step(state, action, rng):
    return env.step(state, discrete_action(action, thresholds), rng)

  return dataclasses.replace(env, name=f"{env.name}/thresholded", num_actions=None, action_shape=(1,), step=step,
                             action_low=(-1.0,), action_high=(1.0,))
