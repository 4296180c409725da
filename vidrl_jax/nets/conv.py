"""The 64x64 image encoder and decoder of World Models (Ha & Schmidhuber 2018), used by PlaNet, Dreamer and AIME.

Encoder: four 4x4 stride-2 VALID convolutions (width, 2w, 4w, 8w) with ReLU between them, flattened to 1024
features for width 32 (AIME's `CNNEncoderHa`; no ReLU after the last convolution, as there). Pixels enter as
uint8 and are scaled to [0, 1] here.
Decoder: Dense(32w) -> 1x1 -> transposed convolutions 5, 5, 6, 6 (stride 2, VALID: 1 -> 5 -> 13 -> 30 -> 64) with
ReLU, sigmoid output in [0, 1]: the mean of a unit-variance Gaussian (paper App. B).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def image_to_float(image: jax.Array) -> jax.Array:
  """uint8 pixels -> float32 in [0, 1] (the decoder's target space)."""
  return image.astype(jnp.float32) / 255.0 if image.dtype == jnp.uint8 else image


class ConvEncoder(nn.Module):
  """(..., 64, 64, 3) -> (..., 32 * width)."""
  width: int = 32

  @nn.compact
  def __call__(self, image: jax.Array) -> jax.Array:
    lead = image.shape[:-3]
    x = image_to_float(image).reshape((-1, *image.shape[-3:]))
    for i, mult in enumerate((1, 2, 4, 8)):
      x = nn.Conv(self.width * mult, (4, 4), strides=(2, 2), padding="VALID", name=f"conv{i}")(x)
      if i < 3:
        x = nn.relu(x)
    return x.reshape((*lead, -1))


class ConvDecoder(nn.Module):
  """(..., F) -> (..., 64, 64, 3) mean image in [0, 1]."""
  width: int = 32
  channels: int = 3

  @nn.compact
  def __call__(self, feat: jax.Array) -> jax.Array:
    lead = feat.shape[:-1]
    x = nn.Dense(32 * self.width, name="dense")(feat.reshape((-1, feat.shape[-1])))
    x = x.reshape((-1, 1, 1, 32 * self.width))
    for i, (mult, k) in enumerate(((4, 5), (2, 5), (1, 6))):
      x = nn.relu(nn.ConvTranspose(self.width * mult, (k, k), strides=(2, 2), padding="VALID",
                                   name=f"deconv{i}")(x))
    x = nn.ConvTranspose(self.channels, (6, 6), strides=(2, 2), padding="VALID", name="deconv3")(x)
    return nn.sigmoid(x).reshape((*lead, *x.shape[1:]))
