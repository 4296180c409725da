"""Observation encoders: RLV's pixel conv net (shapes, uint8 in, the two implementations), the dict convention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.encoder import ObsEncoder, PixelEncoder, obs_features

KEY = jax.random.PRNGKey(0)


def test_pixel_encoder_rlv_shapes_and_uint8():
  image = np.random.default_rng(0).integers(0, 256, (2, 3, 48, 48, 3)).astype(np.uint8)
  net = PixelEncoder()                                        # 16/16/32 filters, 5x5, 2x2 max-pool
  params = jax.jit(net.init)(KEY, jnp.asarray(image[:, 0]))
  assert params["params"]["conv2"]["kernel"].shape == (5, 5, 16, 32)
  out = jax.jit(net.apply)(params, jnp.asarray(image))
  assert out.shape == (2, 3, 6 * 6 * 32) and out.dtype == jnp.float32    # 48 -> 24 -> 12 -> 6
  as_float = jax.jit(net.apply)(params, jnp.asarray(image, jnp.float32) / 255.0)
  np.testing.assert_allclose(out, as_float, rtol=1e-5, atol=1e-6)       # uint8 is scaled to [0, 1]
  xla = jax.jit(PixelEncoder(impl="xla").apply)(params, jnp.asarray(image))   # same params, nn.Conv SAME
  np.testing.assert_allclose(out, xla, rtol=1e-4, atol=1e-5)
  assert float(jnp.min(out)) >= 0.0                           # relu before the pool


def test_obs_features_dict_convention():
  obs = {"state": jnp.ones((4, 2)), "image": jnp.zeros((4, 8, 8, 3), jnp.uint8), "a": jnp.full((4, 1), 3.0)}
  feats = obs_features(obs, lambda x: jnp.full((x.shape[0], 5), jnp.max(x) + 7.0))
  np.testing.assert_array_equal(feats[0], [7, 7, 7, 7, 7, 3, 1, 1])   # image, then sorted vector keys (exact: copies)
  np.testing.assert_allclose(obs_features(jnp.asarray([[255]], jnp.uint8), None), [[1.0]], rtol=1e-6, atol=1e-7)
  with pytest.raises(VidrlError, match="image encoder"):
    obs_features(obs, None)
  net = ObsEncoder(filters=(4,), kernel=3)
  params = net.init(KEY, obs)
  assert set(params["params"]) == {"conv"}
  assert net.apply(params, obs).shape == (4, 4 * 4 * 4 + 3)
