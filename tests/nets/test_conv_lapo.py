"""LAPO's IMPALA-CNN and U-Net FDM: the "matmul" convolutions (`nets.conv.conv2d`) against XLA's ("xla").

Both impls get the same params (same tree: checkpoints load either way) and must give the same outputs and the
same gradients w.r.t. params and input, at MinAtar's odd 10x10 and even sizes (IMPALA at Procgen's 64x64); "auto"
follows `auto_impl`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.errors import VidrlError
from vidrl_jax.nets import ImpalaCNN, UNet
from vidrl_jax.nets.conv import auto_impl, conv2d, loop_impl, resolve_impl

RNG = np.random.default_rng(0)
DN = ("NHWC", "HWIO", "NHWC")


@pytest.fixture(autouse=True)
def _fresh_rng():
  """Every test draws the same inputs and params whichever tests ran before it."""
  global RNG
  RNG = np.random.default_rng(0)


def _normal(*shape: int) -> jax.Array:
  return jnp.asarray(RNG.standard_normal(shape), jnp.float32)


def _params(net, *args) -> dict:
  """Random params of the net's tree (from its abstract init; biases and norm scales nonzero)."""
  tree = jax.eval_shape(net.init, jax.random.key(0), *args)
  return jax.tree.map(lambda s: _normal(*s.shape) / math.sqrt(math.prod(s.shape[:-1]) if len(s.shape) > 1 else 4),
                      tree)


def _assert_close(actual, desired, rtol: float = 1e-4) -> None:
  """Every leaf within rtol of its largest magnitude (float32 summation order differs between the impls), or of
  1 % of the largest in the tree for a leaf that is zero up to rounding (a conv bias before a GroupNorm of one
  channel per group has a zero gradient)."""
  assert jax.tree.structure(actual) == jax.tree.structure(desired)
  floor = 0.01 * max(float(np.abs(np.asarray(d)).max()) for d in jax.tree.leaves(desired))
  for a, d in zip(jax.tree.leaves(actual), jax.tree.leaves(desired)):
    a, d = np.asarray(a), np.asarray(d)
    assert a.shape == d.shape
    np.testing.assert_allclose(a, d, rtol=0, atol=rtol * max(float(np.abs(d).max()), floor))


def _compare(make, *args, plain: bool = True, rtol: float = 1e-4) -> None:
  """Same param tree; same outputs (differentiated, and with `plain` not) and gradients w.r.t. params and every
  input, within `rtol` (`_assert_close`)."""
  nets = {impl: make(impl) for impl in ("xla", "matmul")}
  trees = {impl: jax.tree.map(jnp.shape, jax.eval_shape(net.init, jax.random.key(0), *args))
           for impl, net in nets.items()}
  assert trees["matmul"] == trees["xla"]
  params = _params(nets["xla"], *args)

  @jax.jit
  def run(params, *args):
    out = {}
    for impl, net in nets.items():
      def loss(p, *a, net=net):
        y = net.apply(p, *a)
        return jnp.sum(jnp.sin(3.0 * y)), y
      (_, y), grads = jax.value_and_grad(loss, tuple(range(len(args) + 1)), has_aux=True)(params, *args)
      out[impl] = (y, grads, net.apply(params, *args)) if plain else (y, grads)
    return out

  out = run(params, *args)
  _assert_close(out["matmul"], out["xla"], rtol)
  assert float(jnp.abs(out["xla"][0]).max()) > 0  # not a vacuous comparison


# At 64x64 a param gradient sums 3 x 64 x 64 positions of two residual stages (through relus and max-pools): the
# impls' float32 sums differ by up to ~4e-5 of a bias gradient's largest entry (seen), hence 5e-4 there.
@pytest.mark.parametrize("hw,channels,blocks,rtol", [((10, 10), (8, 16), 1, 1e-4), ((64, 64), (4, 8, 8), 2, 5e-4)])
def test_impala_impls_match(hw, channels, blocks, rtol):
  x = _normal(3, *hw, 6)
  _compare(lambda impl: ImpalaCNN(channels, blocks, out_features=16, impl=impl), x, rtol=rtol)


@pytest.mark.parametrize("hw,base,levels,norm", [((10, 10), 4, 2, "group"), ((16, 16), 4, 3, "group"),
                                                 ((9, 7), 4, 2, "none")])
def test_unet_impls_match(hw, base, levels, norm):
  """MinAtar's 10x10 (pooling 10 -> 5 -> 3, a 3x3 bottleneck), even sizes halving to a 2x2 bottleneck as the
  paper's 64x64 with 5 levels does (16x16 with 3 levels: the same code path, a fraction of the compile time)
  and a non-square odd image (a 3x2 bottleneck kernel, transposed convolutions cropped to odd skips). One norm
  group: a group of few channels can be (nearly) constant for random params (a half-channel residual conv after a
  relu), and then GroupNorm amplifies rounding by up to 1 / sqrt(eps): XLA's own jitted float32 gradient then
  differs by 80% from the float64 one, which the matmul impl matches (seen with two groups at 10x10)."""
  x, cond = _normal(2, *hw, 6), _normal(2, 5)
  _compare(lambda impl: UNet(out_channels=3, base_channels=base, num_levels=levels, norm=norm, norm_groups=1,
                             impl=impl), x, cond, plain=False)  # (the plain forward: tested with IMPALA)


@pytest.mark.parametrize("k,stride,padding,transpose,hw", [
    (3, 1, "SAME", False, (5, 6)), (1, 1, "VALID", False, (4, 3)), (2, 1, "VALID", False, (2, 2)),
    (2, 2, "VALID", True, (3, 4)), (3, 3, "VALID", True, (1, 1))])
def test_conv2d_matches_lax(k, stride, padding, transpose, hw):
  """Each geometry the nets use against lax by hand: SAME 3x3, 1x1, a kernel covering the map (a dense layer),
  2x2 stride-2 transposed, a transposed convolution of a 1x1 map."""
  x, kernel = _normal(2, *hw, 3), _normal(k, k, 3, 4)
  if transpose:
    ref = lambda x, w: jax.lax.conv_transpose(x, w, (stride, stride), padding, dimension_numbers=DN)  # noqa: E731
  else:
    ref = lambda x, w: jax.lax.conv_general_dilated(x, w, (stride, stride), padding,  # noqa: E731
                                                    dimension_numbers=DN)
  ours = lambda x, w: conv2d(x, w, stride, padding, transpose, impl="matmul")  # noqa: E731
  results = []
  for f in (ours, ref):
    y, vjp = jax.vjp(f, x, kernel)
    results.append((y, vjp(jnp.cos(y))))
  _assert_close(results[0], results[1])


def test_impl_choice_and_bad_input():
  assert resolve_impl("auto") == "xla" and resolve_impl("matmul") == "matmul"
  assert loop_impl() == ("matmul" if jax.default_backend() == "cpu" else "xla")
  with auto_impl("matmul"):
    assert resolve_impl("auto") == "matmul"
    with auto_impl("xla"):
      assert resolve_impl("auto") == "xla" and resolve_impl("matmul") == "matmul"
    assert resolve_impl("auto") == "matmul"
  assert resolve_impl("auto") == "xla"
  with pytest.raises(VidrlError, match="impl must be one of"):
    resolve_impl("cudnn")
  with pytest.raises(VidrlError, match="SAME at stride 1"):
    conv2d(_normal(1, 4, 4, 2), _normal(2, 2, 2, 3), 1, "SAME")
