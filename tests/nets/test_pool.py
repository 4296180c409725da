"""nets/pool.py and UNet's TiledCondConv against the plain Flax formulations they replace."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.nets import pool
from vidrl_jax.nets.unet import TiledCondConv


def _ref3(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def _ref2(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")


def _tie_free(shape, seed=0):
  # A random permutation of distinct values: no window has a tied maximum.
  n = int(np.prod(shape))
  return jnp.asarray(np.random.default_rng(seed).permutation(n).reshape(shape).astype(np.float32) / n - 0.5)


CASES = [(2, 64, 64, 3), (3, 10, 10, 4), (1, 9, 7, 2), (2, 5, 6, 1), (1, 1, 1, 2), (1, 2, 3, 1)]


@pytest.mark.parametrize("shape", CASES)
@pytest.mark.parametrize("fn,ref", [(pool.max_pool_3x3_s2_p1, _ref3), (pool.max_pool_2x2_s2_same, _ref2)])
def test_pool_forward_bit_identical(shape, fn, ref):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  x = x.at[..., 0].set(jnp.round(x[..., 0]))  # Ties do not matter for the forward pass.
  y, y_ref = jax.jit(fn)(x), jax.jit(ref)(x)
  assert y.shape == y_ref.shape
  np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))


@pytest.mark.parametrize("shape", CASES)
@pytest.mark.parametrize("fn,ref", [(pool.max_pool_3x3_s2_p1, _ref3), (pool.max_pool_2x2_s2_same, _ref2)])
def test_pool_gradient_matches_without_ties(shape, fn, ref):
  x = _tie_free(shape)
  cot = jax.random.normal(jax.random.PRNGKey(1), ref(x).shape)
  g = jax.grad(lambda x: jnp.sum(fn(x) * cot))(x)
  g_ref = jax.grad(lambda x: jnp.sum(ref(x) * cot))(x)
  # Same elements get the gradient; with overlapping 3x3 windows an element's contributions are summed in
  # another order, hence a tolerance of a few ulps of the summands (cotangents up to ~4; 4.8e-7 seen).
  np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-5, atol=5e-6)
  np.testing.assert_array_equal(np.asarray(g) != 0, np.asarray(g_ref) != 0)


@pytest.mark.parametrize("hw", [(8, 8), (5, 7), (1, 1)])
def test_tiled_cond_conv_equals_conv_on_tiled_input(hw):
  x = jax.random.normal(jax.random.PRNGKey(0), (2,) + hw + (3,))
  cond = jax.random.normal(jax.random.PRNGKey(1), (2, 5))
  fast = TiledCondConv(4, 3)
  params = fast.init(jax.random.PRNGKey(2), x, cond)
  params = jax.tree.map(lambda p: p + 0.1, params)  # Non-zero bias too.
  slow = nn.Conv(4, (3, 3), padding="SAME")
  tiled = lambda x, c: jnp.concatenate([x, jnp.broadcast_to(c[:, None, None], x.shape[:3] + c.shape[-1:])], -1)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, slow.init(jax.random.PRNGKey(2), tiled(x, cond)))
  y = fast.apply(params, x, cond)
  np.testing.assert_allclose(y, slow.apply(params, tiled(x, cond)), rtol=1e-5, atol=1e-5)
  f_fast = lambda p, x, c: jnp.sum(jnp.sin(fast.apply(p, x, c)))
  f_slow = lambda p, x, c: jnp.sum(jnp.sin(slow.apply(p, tiled(x, c))))
  g, g_ref = jax.grad(f_fast, (0, 1, 2))(params, x, cond), jax.grad(f_slow, (0, 1, 2))(params, x, cond)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
