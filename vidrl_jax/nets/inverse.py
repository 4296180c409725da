"""The inverse dynamics model: observations around a transition -> the action that explains it.

One module for every method, parametrised by its encoder and its output head:
- encoder: any Linen module mapping one observation (or a channel-stack of them) to features, or None for the
  identity (inputs that are features already, e.g. RLV's shared-encoder features h, h' or AIME's (s_{t-1}, f(o_t)));
- head: any Linen module on the fused features: an `MLP` with an MSE loss (RLV, continuous actions), a `Dense`
  giving logits (LAPO's supervised-IDM bound) or a continuous latent (LAPO's latent IDM, before VQ), a
  `TanhGaussianPolicy` trained by NLL (AIME's IDM head, BCO(0)).
Inputs are either a pair `(obs, next_obs)` (o_t, o_{t+1}) or one context stack `frames` (B, F, ...) with the
frame axis at position 1 (LAPO's o_{t-k..t+1}, BCO(0)'s o_{t-4..t}, o_{t+1}). Observations are arrays or dicts of
an image and vectors (`nets.encoder.obs_features`); uint8 images are scaled to [0, 1] before the encoder.

`fuse` says how frames meet: "features" encodes each frame and concatenates the features in frame order
(AIME, BCO(0), RLV); "channels" stacks the frames on the channel axis, oldest first, and encodes the stack once
(LAPO's IMPALA IDM). `scopes` names the encoder's and the head's parameter scopes (None for the head: its params
sit at the top level), so a method keeps its parameter tree, and with it its initial values, as before.
"""

from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.encoder import IMAGE, obs_features

FUSES = ("features", "channels")
Obs = jax.Array | Mapping[str, jax.Array]


def stack_frames(frames: jax.Array) -> jax.Array:
  """(..., F, H, W, C) -> (..., H, W, F*C): frames stacked on channels, oldest first."""
  *batch, f, h, w, c = frames.shape
  return jnp.moveaxis(frames, -4, -2).reshape(*batch, h, w, f * c)


class InverseModel(nn.Module):
  """`(obs, next_obs)` or `(frames,)` -> head output (see the module docstring).

  Attributes:
    head_net: features (B, E) -> output.
    encoder_net: observation -> features; None is the identity (arrays as float32, dicts without images).
    fuse: "features" or "channels".
    frames: the number of frames a stack must hold (None: any); checked on every input.
    image_key: the image key of dict observations.
    scopes: (encoder scope, head scope); a None head scope puts the head's params at the top level.
  """
  head_net: nn.Module
  encoder_net: nn.Module | None = None
  fuse: str = "features"
  frames: int | None = None
  image_key: str = IMAGE
  scopes: tuple[str, str | None] = ("encoder", "head")

  @nn.compact
  def __call__(self, obs: Obs, next_obs: Obs | None = None) -> jax.Array:
    if self.fuse not in FUSES:
      raise VidrlError(f"InverseModel fuse must be one of {FUSES}, got {self.fuse!r}")
    encoder = None if self.encoder_net is None else self.encoder_net.clone(parent=self, name=self.scopes[0])
    if self.scopes[1] is None:
      head = self.head_net.clone(parent=self, name="shared_head")
      nn.share_scope(self, head)
    else:
      head = self.head_net.clone(parent=self, name=self.scopes[1])
    if next_obs is not None:                      # a pair (o_t, o_{t+1})
      if self.fuse == "channels":
        return head(self._encode(encoder, stack_frames(jnp.stack([obs, next_obs], axis=-4))))
      return head(jnp.concatenate([self._encode(encoder, obs), self._encode(encoder, next_obs)], axis=-1))
    for x in jax.tree.leaves(obs):                # a stack (B, F, ...)
      if x.ndim < 3 or (self.frames is not None and x.shape[1] != self.frames):
        raise VidrlError(f"InverseModel expects stacks (B, {self.frames or 'F'}, ...) but got an input of shape "
                         f"{x.shape}; pass {self.frames or 'F'} frames per sample on axis 1")
    if self.fuse == "channels":
      if isinstance(obs, Mapping):
        raise VidrlError("InverseModel(fuse='channels') stacks image arrays on channels; pass an array, not a dict")
      return head(self._encode(encoder, stack_frames(obs)))
    feats = self._encode(encoder, obs)            # (B, F, E)
    return head(feats.reshape((feats.shape[0], -1)))

  def _encode(self, encoder: nn.Module | None, obs: Obs) -> jax.Array:
    return obs_features(obs, encoder, self.image_key)
