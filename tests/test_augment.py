"""`augment.random_crop`: shape and dtype kept, every crop a shift of the replicate-padded image, rng-determined."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.augment import random_crop
from vidrl_jax.errors import VidrlError


def _images(*lead, h=6, w=5, c=2):
  return np.random.default_rng(0).integers(0, 256, (*lead, h, w, c)).astype(np.uint8)


def test_crops_are_shifts_of_the_edge_padded_image():
  x = _images(3, 4)
  out = np.asarray(jax.jit(lambda k, x: random_crop(k, x, 2))(jax.random.PRNGKey(0), jnp.asarray(x)))
  assert out.shape == x.shape and out.dtype == np.uint8
  offsets = set()
  for idx in np.ndindex(3, 4):
    padded = np.pad(x[idx], ((2, 2), (2, 2), (0, 0)), mode="edge")
    hits = [(dy, dx) for dy in range(5) for dx in range(5) if np.array_equal(padded[dy:dy + 6, dx:dx + 5], out[idx])]
    assert hits, f"image {idx} is not a crop of its padded self"
    offsets.add(hits[0])
  assert len(offsets) > 3                        # independent offsets per image, not one shift for the batch
  # The centre crop is the image itself, and a shift by (dy, dx) repeats the border row/column.
  padded = np.pad(x[0, 0], ((2, 2), (2, 2), (0, 0)), mode="edge")
  np.testing.assert_array_equal(padded[2:8, 2:7], x[0, 0])
  np.testing.assert_array_equal(padded[0, 2:7], x[0, 0, 0])
  np.testing.assert_array_equal(padded[3, 0], x[0, 0, 1, 0])


def test_determined_by_rng_and_pad_zero_is_identity():
  x = jnp.asarray(_images(8))
  a, b = random_crop(jax.random.PRNGKey(1), x, 4), random_crop(jax.random.PRNGKey(1), x, 4)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, random_crop(jax.random.PRNGKey(2), x, 4))
  np.testing.assert_array_equal(random_crop(jax.random.PRNGKey(1), x, 0), x)
  f = random_crop(jax.random.PRNGKey(1), x.astype(jnp.float32) / 255.0, 4)   # float images too
  np.testing.assert_allclose(f, np.asarray(a, np.float32) / 255.0, rtol=1e-6)
  with pytest.raises(VidrlError, match="pad >= 0"):
    random_crop(jax.random.PRNGKey(0), x, -1)
