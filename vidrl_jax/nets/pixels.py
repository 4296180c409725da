"""Pixels to network inputs: the one place where uint8 images become floats.

Every image network here (IMPALA torsos, MinAtar CNN, LAPO's IDM/FDM, AIME's conv encoder) takes uint8 frames as
they are stored and scales them with `image_to_float`, so a frame means the same thing to every model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def image_to_float(image: jax.Array) -> jax.Array:
  """uint8 pixels -> float32 in [0, 1]; an array of any other dtype is cast to float32 with its values kept."""
  image = jnp.asarray(image)
  return image.astype(jnp.float32) / 255.0 if image.dtype == jnp.uint8 else image.astype(jnp.float32)
