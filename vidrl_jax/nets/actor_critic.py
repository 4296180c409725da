"""Actor-critic networks for on-policy RL: a shared torso with linear policy and value heads.

`make_actor_critic` gives the `(apply_fn, init_fn)` pair that `vidrl_jax.rl.ppo.make_ppo_task` and
`vidrl_jax.rl.evaluate.discrete_act` take: `apply_fn(params, obs) -> (logits, value)` on raw observations.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.impala import IMPALA_BASE_CHANNELS, ImpalaCNN
from vidrl_jax.nets.mlp import MLP
from vidrl_jax.nets.pixels import image_to_float

Params = Any
ApplyFn = Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]


class MinAtarCNN(nn.Module):
  """The MinAtar network's torso (Young & Tian, 2019): conv 16 3x3 stride 1 (valid), relu, dense 128, relu.

  The convolution is written as patches + dense: its input is the observation, so its only gradient is a
  matmul, which XLA:CPU runs at full speed inside PPO's scanned updates (a conv's weight gradient does not).
  """
  features: int = 16
  hidden: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h, w = x.shape[-3] - 2, x.shape[-2] - 2
    patches = jnp.concatenate([x[..., i:i + h, j:j + w, :] for i in range(3) for j in range(3)], axis=-1)
    x = nn.relu(nn.Dense(self.features, kernel_init=nn.initializers.orthogonal(math.sqrt(2.0)), name="conv")(
        patches))
    x = x.reshape(x.shape[:-3] + (-1,))
    return nn.relu(nn.Dense(self.hidden, kernel_init=nn.initializers.orthogonal(math.sqrt(2.0)), name="fc")(x))


class ActorCritic(nn.Module):
  """Shared torso, linear policy and value heads (the Procgen agent of Cobbe et al. 2020 with `impala`).

  Torsos: `impala`, ImpalaCNN on images scaled by 1/255; `minatar`, the MinAtar paper's one-conv network;
  `mlp`, an MLP on the flattened observation (vectors, or images such as MinAtar's 10x10xC frames). Heads use
  orthogonal init, scale 0.01 for the policy and 1 for the value, as in the PPO reference code.
  """
  num_actions: int
  encoder: str = "impala"
  channels: tuple[int, ...] = IMPALA_BASE_CHANNELS
  num_blocks: int = 2
  features: int = 256
  hidden: tuple[int, ...] = (64, 64)
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  obs_ndim: int | None = None  # event dims of one observation; None: 3 for uint8 images, else 1

  @nn.compact
  def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    event_ndim = self.obs_ndim or (3 if obs.dtype == jnp.uint8 else 1)
    x = image_to_float(obs)
    if self.encoder == "impala":
      if event_ndim != 3:
        raise VidrlError(f"the impala encoder needs (..., H, W, C) images, got obs of shape {obs.shape}; "
                         f"use encoder='mlp' for vector observations")
      h = ImpalaCNN(channels=self.channels, num_blocks=self.num_blocks, out_features=self.features,
                    name="torso")(x)
    elif self.encoder == "minatar":
      if event_ndim != 3:
        raise VidrlError(f"the minatar encoder needs (..., H, W, C) images, got obs of shape {obs.shape}")
      h = MinAtarCNN(name="torso")(x)
    elif self.encoder == "mlp":
      x = x.reshape(x.shape[:x.ndim - event_ndim] + (-1,))
      h = MLP(hidden=self.hidden, activation=self.activation,
              kernel_init=nn.initializers.orthogonal(math.sqrt(2.0)), name="torso")(x)
    else:
      raise VidrlError(f"unknown encoder {self.encoder!r}; choose 'impala', 'minatar' or 'mlp'")
    logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01), name="policy")(h)
    value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="value")(h)[..., 0]
    return logits, value


def make_actor_critic(num_actions: int, encoder: str = "impala",
                      **kwargs) -> tuple[ApplyFn, Callable[[jax.Array, jax.Array], Params]]:
  """`(apply_fn, init_fn)` of an `ActorCritic`; `init_fn(rng, obs)` takes a batch of example observations.

  The torso's params live under `params/torso` and the heads under `params/policy` and `params/value`.
  """
  module = ActorCritic(num_actions=num_actions, encoder=encoder, **kwargs)

  def apply_fn(params: Params, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    return module.apply(params, obs)

  def init_fn(rng: jax.Array, obs: jax.Array) -> Params:
    return module.init(rng, obs)

  return apply_fn, init_fn
