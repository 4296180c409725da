"""LAPO's networks (paper §4, App. A.4; official code: IMPALA-CNN IDM/policy, U-Net FDM).

Frames enter as uint8 and are scaled to [0, 1] here; a window of k+2 frames o_{t-k} .. o_{t+1} is stacked on
channels for the IDM, the k+1 context frames o_{t-k} .. o_t for the FDM.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vidrl_jax.nets import MLP, ImpalaCNN, UNet
from vidrl_jax.nets.inverse import InverseModel, stack_frames
from vidrl_jax.nets.pixels import image_to_float


def latent_idm(channels: Sequence[int], blocks: int, fc: int, out: int) -> InverseModel:
  """Latent inverse dynamics model: window o_{t-k..t+1} (B, k+2, H, W, C) uint8 -> continuous latent action z_t
  (before VQ): the frames stacked on channels, IMPALA-CNN, a linear head (`nets.inverse.InverseModel`).

  With `out=num_actions` and a cross-entropy loss it is the supervised-IDM upper bound instead.
  """
  return InverseModel(head_net=nn.Dense(out), encoder_net=ImpalaCNN(tuple(channels), blocks, out_features=fc),
                      fuse="channels", scopes=("torso", "head"))


class LatentFDM(nn.Module):
  """Latent forward dynamics model: context o_{t-k..t} and latent action -> o_{t+1} - 0.5 (tanh/2 output)."""
  base_channels: int
  num_levels: int
  blocks_per_level: int
  out_channels: int

  @nn.compact
  def __call__(self, context: jax.Array, latent: jax.Array) -> jax.Array:
    return UNet(out_channels=self.out_channels, base_channels=self.base_channels, num_levels=self.num_levels,
                blocks_per_level=self.blocks_per_level, tanh_output=True, name="unet")(
                    stack_frames(image_to_float(context)), latent)


class LatentPolicy(nn.Module):
  """Latent policy pi(o_t) -> latent action, trained by regressing the IDM's latents (stage 2)."""
  channels: Sequence[int]
  blocks: int
  fc: int
  latent_dim: int

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    h = ImpalaCNN(self.channels, self.blocks, out_features=self.fc, name="torso")(image_to_float(obs))
    return nn.Dense(self.latent_dim, name="latent_head")(h)


class DecodedPolicy(nn.Module):
  """Stage-3 actor-critic (paper §5, official stage 3): the latent policy's convolutions feed two paths whose
  logits are averaged. The supervised path is stage 2's fc (`fc_sl`) and latent head, then `decoder` (latent
  actions, standardised by `latent_mean` and `latent_std`, to true actions); the RL path is a copy of that fc
  (`fc_rl`) with a zero-initialised RL head and the value head, so at the start the policy is the decoded latent
  policy. `torso` (the convolutions), `fc_sl`/`fc_rl` and `latent_head` come from stage 2.
  """
  channels: Sequence[int]
  blocks: int
  fc: int
  latent_dim: int
  decoder_hidden: Sequence[int]
  num_actions: int

  @nn.compact
  def __call__(self, obs: jax.Array, latent_mean: jax.Array | float = 0.0,
               latent_std: jax.Array | float = 1.0) -> tuple[jax.Array, jax.Array]:
    conv = ImpalaCNN(self.channels, self.blocks, out_features=None, name="torso")(image_to_float(obs))
    h_sl = nn.relu(nn.Dense(self.fc, name="fc_sl")(conv))
    latent = nn.Dense(self.latent_dim, name="latent_head")(h_sl)
    sl_logits = ActionDecoder(self.decoder_hidden, self.num_actions, name="decoder")(
        (latent - latent_mean) / latent_std)
    h_rl = nn.relu(nn.Dense(self.fc, name="fc_rl")(conv))
    rl_logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.zeros, name="rl_head")(h_rl)
    logits = (sl_logits + rl_logits) / 2.0
    value = nn.Dense(1, name="value_head")(h_rl)[..., 0]
    return logits, value


class ActionDecoder(nn.Module):
  """Latent action -> logits over true actions (the latent-quality probe and the offline decoder)."""
  hidden: Sequence[int]
  num_actions: int

  @nn.compact
  def __call__(self, latent: jax.Array) -> jax.Array:
    return MLP(self.hidden, out=self.num_actions, name="mlp")(latent)


def idm(config: ml_collections.ConfigDict, out: int | None = None) -> InverseModel:
  m = config.model
  return latent_idm(tuple(m.impala_channels), m.impala_blocks, m.fc, out or m.latent_dim)


def fdm(config: ml_collections.ConfigDict, channels: int) -> LatentFDM:
  m = config.model
  return LatentFDM(m.fdm_base_channels, m.fdm_levels, m.fdm_blocks, channels)


def policy(config: ml_collections.ConfigDict) -> LatentPolicy:
  m = config.model
  return LatentPolicy(tuple(m.impala_channels), m.impala_blocks, m.fc, m.latent_dim)


def decoded_policy(config: ml_collections.ConfigDict, num_actions: int) -> DecodedPolicy:
  m = config.model
  return DecodedPolicy(tuple(m.impala_channels), m.impala_blocks, m.fc, m.latent_dim,
                       tuple(m.decoder_hidden), num_actions)


def decoder(config: ml_collections.ConfigDict, num_actions: int) -> ActionDecoder:
  return ActionDecoder(tuple(config.model.decoder_hidden), num_actions)


def action_head(config: ml_collections.ConfigDict, num_actions: int) -> ActionDecoder:
  """Stage 1 with labels (LAOM): the IDM's pre-quantisation latent -> logits over true actions; linear (as
  LAOM's `true_actions_head`) with `stage1.labels.head_hidden=()`, an MLP otherwise."""
  return ActionDecoder(tuple(config.stage1.labels.head_hidden), num_actions)
