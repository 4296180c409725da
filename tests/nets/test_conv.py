"""World-Models conv encoder / decoder: shapes, and the "matmul" impl against XLA's convolutions ("xla")."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.nets.conv import ConvDecoder, ConvEncoder, conv_transpose_valid_matmul, conv_valid_matmul

# Inputs and params from numpy (each test its own seeded generator): threefry inits of rank-4 kernels compile slowly.
DN = ("NHWC", "HWIO", "NHWC")


def _normal(rng: np.random.Generator, *shape: int) -> jax.Array:
  return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def _params(rng: np.random.Generator, net, x) -> dict:
  """Random params of the net's tree (from its abstract init: nothing compiled), biases nonzero."""
  tree = jax.eval_shape(net.init, jax.random.key(0), x)
  return jax.tree.map(
      lambda s: _normal(rng, *s.shape) / math.sqrt(math.prod(s.shape[:-1]) if len(s.shape) > 1 else 10), tree)


def _assert_close(actual, desired, rtol: float = 5e-5) -> None:
  """Every leaf within rtol of the leaf's largest magnitude (relative error of the whole array): the impls sum the
  same float32 products in other orders, and the gradients sum thousands of them (differences up to ~2e-6 of the
  largest magnitude seen; a wrong tap, stride or padding is O(1))."""
  assert jax.tree.structure(actual) == jax.tree.structure(desired)
  for a, d in zip(jax.tree.leaves(actual), jax.tree.leaves(desired)):
    a, d = np.asarray(a), np.asarray(d)
    assert a.shape == d.shape
    np.testing.assert_allclose(a, d, rtol=0, atol=rtol * max(float(np.abs(d).max()), 1e-30))


def _same_param_tree(make, x) -> None:
  shapes = {impl: jax.tree.map(lambda s: s.shape, jax.eval_shape(make(impl).init, jax.random.key(0), x))
            for impl in ("xla", "matmul")}
  assert shapes["matmul"] == shapes["xla"]


def test_shapes_paper_width():
  """Width 32 (abstract evaluation only): 1024 features from uint8 frames; 64x64x3 means; the same param trees."""
  image = jnp.zeros((2, 64, 64, 3), jnp.uint8)
  feat = jnp.zeros((2, 1024), jnp.float32)
  for impl in ("xla", "matmul"):
    assert jax.eval_shape(ConvEncoder(32, impl=impl).init_with_output, jax.random.key(0), image)[0].shape == (2, 1024)
    mean, params = jax.eval_shape(ConvDecoder(32, impl=impl).init_with_output, jax.random.key(0), feat)
    assert mean.shape == (2, 64, 64, 3) and mean.dtype == jnp.float32
    assert params["params"]["deconv0"]["kernel"].shape == (5, 5, 1024, 128)
  _same_param_tree(lambda impl: ConvEncoder(32, impl=impl), image)
  _same_param_tree(lambda impl: ConvDecoder(32, impl=impl), feat)


@pytest.mark.parametrize("k,s,h,transpose", [(5, 3, 11, False), (5, 3, 4, True)])
def test_functions_match_lax(k, s, h, transpose):
  """conv_valid_matmul / conv_transpose_valid_matmul == lax (output, input and kernel gradients) beyond the nets'
  geometry: k not a multiple of s, H != W, the image zero-padded to whole s x s blocks."""
  rng = np.random.default_rng(0)
  x, kernel = _normal(rng, 2, h, h + 1, 3), _normal(rng, k, k, 3, 5)
  if transpose:
    ref = lambda x, w: jax.lax.conv_transpose(x, w, (s, s), "VALID", dimension_numbers=DN)  # noqa: E731
    ours = lambda x, w: conv_transpose_valid_matmul(x, w, s)  # noqa: E731
  else:
    ref = lambda x, w: jax.lax.conv_general_dilated(x, w, (s, s), "VALID", dimension_numbers=DN)  # noqa: E731
    ours = lambda x, w: conv_valid_matmul(x, w, s)  # noqa: E731

  @jax.jit
  def both(x, w):
    out = []
    for f in (ours, ref):
      y, vjp = jax.vjp(f, x, w)
      out.append((f(x, w), y, vjp(jnp.cos(y))))  # not differentiated, differentiated, gradients
    return out

  ours_out, ref_out = both(x, kernel)
  _assert_close(ours_out, ref_out)


def _both_impls(make, params, x, plain=None):
  """For both impls: the output under differentiation and the gradients of a loss w.r.t. params and input `x`;
  the outputs not differentiated (for "matmul" its own code path) on `plain` (default `x`)."""
  nets = {impl: make(impl) for impl in ("xla", "matmul")}

  @jax.jit
  def run(params, x, plain):
    out = {}
    for impl, net in nets.items():
      def loss(p, x, net=net):
        y = net.apply(p, x)
        return jnp.sum(jnp.sin(3.0 * y)), y
      (_, y), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, x)
      out[impl] = y, grads, net.apply(params, plain)
    return out

  return run(params, x, x if plain is None else plain)


def test_encoder_impls_match():
  """uint8 (B, T, 64, 64, 3) frames; gradients w.r.t. params and input through the same frames as float."""
  make = lambda impl: ConvEncoder(4, impl=impl)  # noqa: E731
  rng = np.random.default_rng(1)
  image = jnp.asarray(rng.integers(0, 256, (3, 2, 64, 64, 3)), jnp.uint8)
  _same_param_tree(make, image)
  out = _both_impls(make, _params(rng, make("xla"), image), image.astype(jnp.float32) / 255.0, plain=image)
  _assert_close(out["matmul"], out["xla"])
  _assert_close(out["matmul"][2], out["xla"][0])   # uint8 input == the same frames as float
  assert out["matmul"][2].shape == (3, 2, 128)


def test_decoder_impls_match():
  """(B, T, F) features; gradients w.r.t. params and input."""
  make = lambda impl: ConvDecoder(4, impl=impl)  # noqa: E731
  rng = np.random.default_rng(2)
  feat = _normal(rng, 3, 2, 8)
  _same_param_tree(make, feat)
  out = _both_impls(make, _params(rng, make("xla"), feat), feat)
  _assert_close(out["matmul"], out["xla"])
  mean = out["matmul"][2]
  assert mean.shape == (3, 2, 64, 64, 3)
  assert float(mean.min()) >= 0.0 and float(mean.max()) <= 1.0
