"""Image augmentation of the pixel SAC literature: replicate-pad and random crop (DrQ, Kostrikov et al. 2020;
RAD, Laskin et al. 2020), the "pad-4 random crop" of RLV's image tasks.

One pure function of (rng, images): each image is padded by `pad` pixels on every side with copies of its border
pixels, then cut back to its own size at an offset drawn uniformly from {0, ..., 2 pad}^2, independently per
image. The result is a shift of the image by (dy, dx) in [-pad, pad]^2 with the border pixels repeated. Any dtype
(uint8 stays uint8), any leading axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vidrl_jax.errors import VidrlError


def random_crop(rng: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
  """images (..., H, W, C) -> same shape and dtype: per-image replicate-pad by `pad`, then a random H x W crop.

  The offsets are `jax.random.randint(rng, (N, 2), 0, 2 pad + 1)` over the N images in row-major order of the
  leading axes, so equal rng gives equal crops. `pad=0` returns the images unchanged.
  """
  if pad < 0 or images.ndim < 3:
    raise VidrlError(f"random_crop takes images (..., H, W, C) and pad >= 0, got shape {images.shape} and pad {pad}")
  if pad == 0:
    return images
  h, w, c = images.shape[-3:]
  flat = images.reshape((-1, h, w, c))
  padded = jnp.pad(flat, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
  offsets = jax.random.randint(rng, (flat.shape[0], 2), 0, 2 * pad + 1)
  crop = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c)))(padded, offsets)
  return crop.reshape(images.shape)
