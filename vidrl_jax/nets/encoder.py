"""Observation encoders: one observation (an array, or a dict of an image and vectors) -> one feature vector.

- `PixelEncoder`: the small conv net of pixel SAC as RLV's official code (softlearning's convnet) has it: per
  filter count a k x k stride-1 SAME convolution, ReLU and a 2x2 max-pool, flattened (RLV's image tasks: 16/16/32
  filters of 5x5 on 48x48 images -> 6 x 6 x 32 = 1152 features). Pixels enter as uint8 (or float in [0, 1]).
- `obs_features`: the convention every encoder here follows for dict observations: the image key through the
  image encoder, every other key as a float32 vector, concatenated in the order image, then sorted keys.
- `ObsEncoder`: `obs_features` with a `PixelEncoder` as a Linen module (SAC's shared encoder, params under
  `conv`).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.conv import _MatmulConv, _check_impl
from vidrl_jax.nets.pixels import image_to_float
from vidrl_jax.nets.pool import max_pool_2x2_s2_same

IMAGE = "image"


class PixelEncoder(nn.Module):
  """(..., H, W, C) -> (..., F): [conv k x k SAME + ReLU + 2x2 max-pool] per entry of `filters`, flattened.

  `impl`: "matmul" (default: `conv._MatmulConv` on the SAME-padded input) or "xla" (`nn.Conv`); same params
  (`conv{i}/kernel` (k, k, Cin, Cout), `conv{i}/bias`) and outputs up to float rounding. Measured on the shared
  2-core machine, forward + backward of 512 48x48 images: inside a `lax.scan` body (as in `sac.update_burst`)
  0.6 s (matmul) against 15.8 s (xla, whose CPU convolution loses its fast path in a loop body); in a plain jit
  XLA's is faster (1.5 s against 4.2 s), so a caller that never scans may pick "xla".
  """
  filters: Sequence[int] = (16, 16, 32)
  kernel: int = 5
  impl: str = "matmul"

  @nn.compact
  def __call__(self, image: jax.Array) -> jax.Array:
    _check_impl(self.impl)
    if self.kernel % 2 != 1:
      raise VidrlError(f"PixelEncoder pads SAME symmetrically and needs an odd kernel, got {self.kernel}")
    lead = image.shape[:-3]
    x = image_to_float(image).reshape((-1, *image.shape[-3:]))
    p = self.kernel // 2
    for i, f in enumerate(self.filters):
      if self.impl == "xla":
        x = nn.Conv(f, (self.kernel, self.kernel), padding="SAME", name=f"conv{i}")(x)
      else:
        x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        x = _MatmulConv(f, self.kernel, 1, name=f"conv{i}")(x)
      x = max_pool_2x2_s2_same(nn.relu(x))
    return x.reshape((*lead, -1))


def obs_features(obs: jax.Array | Mapping[str, jax.Array], encode_image: Callable[[jax.Array], jax.Array] | None,
                 image_key: str = IMAGE) -> jax.Array:
  """One observation -> features (..., F).

  An array goes through `encode_image` (None: the array itself as float32, uint8 scaled to [0, 1]). In a dict,
  `image_key` goes through `encode_image` and the other keys follow as float32 vectors (..., d) in sorted order.
  """
  if not isinstance(obs, Mapping):
    x = image_to_float(obs)
    return x.astype(jnp.float32) if encode_image is None else encode_image(x)
  if (image_key in obs) != (encode_image is not None):
    raise VidrlError(f"the observation keys {sorted(obs)} and the encoder do not fit: an image key "
                     f"{image_key!r} needs an image encoder and an image encoder needs that key")
  parts = [encode_image(image_to_float(obs[image_key]))] if encode_image is not None else []
  parts += [obs[k].astype(jnp.float32) for k in sorted(obs) if k != image_key]
  return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]


class ObsEncoder(nn.Module):
  """obs (an image array, or a dict of vectors with or without `image_key`) -> (..., F) by `obs_features` with a
  `PixelEncoder` for the image."""
  filters: Sequence[int] = (16, 16, 32)
  kernel: int = 5
  image_key: str = IMAGE
  impl: str = "matmul"

  @nn.compact
  def __call__(self, obs: jax.Array | Mapping[str, jax.Array]) -> jax.Array:
    image = not isinstance(obs, Mapping) or self.image_key in obs   # a dict of vectors needs no conv net
    conv = PixelEncoder(tuple(self.filters), self.kernel, self.impl, name="conv") if image else None
    return obs_features(obs, conv, self.image_key)
