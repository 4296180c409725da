"""Shapes and basic behaviour of the shared networks (IMPALA-CNN, U-Net FDM, MLP)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidrl_jax.nets import MLP, ImpalaCNN, UNet, impala_channels


def param_count(params) -> int:
  """Number of scalars in a parameter pytree."""
  return int(sum(p.size for p in jax.tree_util.tree_leaves(params)))

KEY = jax.random.key(0)


def _normal(*shape: int, seed: int) -> jax.Array:
  """Inputs from numpy, a generator per draw (no test's inputs depend on another's): rank-4 threefry draws compile
  slowly on XLA:CPU."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _init_apply(net: nn.Module, *args: jax.Array):
  """init + apply in one jit (one compile instead of one per op)."""
  return jax.jit(lambda k, *a: (lambda p: (p, net.apply(p, *a)))(net.init(k, *a)))(KEY, *args)


def test_impala_channels():
  assert impala_channels(1) == (16, 32, 32)
  assert impala_channels(4) == (64, 128, 128)  # LAPO's IDM and policy.


def test_impala_64x64():
  # LAPO IDM input: frames (t-1, t, t+1) stacked on channels, channel multiplier 4. Shapes only (no compute).
  net = ImpalaCNN(channels=impala_channels(4))
  x = jax.ShapeDtypeStruct((2, 64, 64, 9), jnp.float32)
  params = jax.eval_shape(net.init, KEY, x)
  assert jax.eval_shape(net.apply, params, x).shape == (2, 256)
  # Final map 8x8x128 -> dense 256.
  assert params["params"]["fc"]["kernel"].shape == (8 * 8 * 128, 256)
  # A real forward pass at multiplier 1.
  net = ImpalaCNN()
  _, y = _init_apply(net, _normal(2, 64, 64, 3, seed=0))
  assert y.shape == (2, 256) and bool(jnp.all(y >= 0)) and bool(jnp.all(jnp.isfinite(y)))


def test_impala_10x10_minatar_and_leading_dims():
  net = ImpalaCNN(channels=(8, 16, 16), num_blocks=1, out_features=32)
  x = _normal(2, 3, 10, 10, 4, seed=1)
  params, y = _init_apply(net, x)
  assert params["params"]["fc"]["kernel"].shape == (2 * 2 * 16, 32)  # 10 -> 5 -> 3 -> 2.
  assert y.shape == (2, 3, 32)
  np.testing.assert_allclose(jax.jit(net.apply)(params, x[1]), y[1], rtol=1e-5, atol=1e-6)  # one batch row alone


def test_unet_paper_config_64x64():
  # LAPO FDM: 2 context frames stacked (6 channels), 128-d latent action, scale 24, 5 levels -> ~8M params.
  net = UNet(out_channels=3, base_channels=24, num_levels=5, blocks_per_level=1)
  x = jax.ShapeDtypeStruct((2, 64, 64, 6), jnp.float32)
  cond = jax.ShapeDtypeStruct((2, 128), jnp.float32)
  params = jax.eval_shape(net.init, KEY, x, cond)
  n = param_count(params)
  print(f"UNet paper config (64x64x6, cond 128, base 24, 5 levels): {n:,} params")
  # Same count as the official PyTorch WorldModel(128, 6, 3, base_size=24) (BatchNorm affine = GroupNorm affine).
  assert n == 7_814_139
  assert jax.eval_shape(net.apply, params, x, cond).shape == (2, 64, 64, 3)
  p = params["params"]
  assert p["bottleneck"]["kernel"].shape == (2, 2, 384, 768)  # 2x2 -> 1x1 x 768 (= 24 * 32).
  assert p["up0_convt"]["kernel"].shape == (2, 2, 768 + 128, 384)  # Latent action at the bottleneck.
  assert p["down0_conv"]["kernel"].shape == (3, 3, 6 + 128, 24)  # Latent action tiled at the input.


def test_unet_small_10x10():
  net = UNet(out_channels=4, base_channels=16, num_levels=2, blocks_per_level=1)
  x, cond = _normal(3, 10, 10, 8, seed=2), _normal(3, 16, seed=3)
  # Batch the conditioning change into one call: rows 3-5 are rows 0-2 with cond + 1.
  params, y = _init_apply(net, jnp.concatenate([x, x]), jnp.concatenate([cond, cond + 1.0]))
  print(f"UNet small config (10x10x8, cond 16, base 16, 2 levels): {param_count(params):,} params")
  assert params["params"]["bottleneck"]["kernel"].shape == (3, 3, 32, 64)  # 10 -> 5 -> 3 -> 1x1.
  assert y.shape == (6, 10, 10, 4)
  assert bool(jnp.all(jnp.abs(y) <= 0.5)) and bool(jnp.all(jnp.isfinite(y)))
  assert float(jnp.max(jnp.abs(y[3:] - y[:3]))) > 0  # The conditioning vector matters.


def test_unet_no_norm_no_tanh_odd():
  net = UNet(out_channels=2, base_channels=4, num_levels=3, blocks_per_level=2, norm="none", tanh_output=False)
  x = jax.ShapeDtypeStruct((2, 1, 9, 7, 3), jnp.float32)
  cond = jax.ShapeDtypeStruct((2, 1, 5), jnp.float32)
  params = jax.eval_shape(net.init, KEY, x, cond)
  assert jax.eval_shape(net.apply, params, x, cond).shape == (2, 1, 9, 7, 2)


def test_mlp_zero_init_head():
  x = _normal(4, 7, seed=4)
  net = MLP(hidden=(16, 16), out=5, activation=nn.elu, layer_norm=True,
            out_kernel_init=nn.initializers.zeros)
  params, y = _init_apply(net, x)
  np.testing.assert_array_equal(y, jnp.zeros((4, 5)))  # exact: h @ 0 + 0
  assert "ln0" in params["params"] and "ln1" in params["params"]
  # Default init gives a non-zero output; out=None returns the last hidden layer.
  params, y = _init_apply(MLP(hidden=(16,), out=5), x)
  assert y.shape == (4, 5) and float(jnp.max(jnp.abs(y))) > 0
  assert params["params"]["out"]["kernel"].shape == (16, 5)
  assert _init_apply(MLP(hidden=(16, 8)), x)[1].shape == (4, 8)
