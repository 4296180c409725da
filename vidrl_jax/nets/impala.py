"""IMPALA-CNN encoder (Espeholt et al., 2018), as used by LAPO for its IDM and policy.

Follows the official LAPO PyTorch code (``lapo/models.py``: ``ConvSequence``, ``ImpalaResidualBlock``,
``get_impala``): per stage conv3x3 -> max-pool 3x3 / stride 2 with padding 1 -> residual blocks
(relu, conv3x3, relu, conv3x3, add); then relu, flatten, dense ``out_features``, relu. LAPO uses the Procgen
channel multiplier 4 (Cobbe et al., 2020; LAPO paper Sec. 5 and Table A.4), i.e. channels (64, 128, 128).

The 3x3 convolutions are `nets.conv.Conv` with `impl` ("auto": XLA's, or what a `conv.auto_impl` scope says;
"matmul": GEMMs with hand-written gradients, much faster on the CPU inside loop bodies such as PPO's updates);
the same params either way, named and shaped as `nn.Conv`'s.
"""

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrl_jax.nets import pool
from vidrl_jax.nets.conv import Conv

Initializer = Callable[..., jax.Array]


def _torch_uniform(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype, fan_in: int) -> jax.Array:
  # Drawn flat and reshaped: threefry sampling at rank >= 3 shapes takes seconds to compile on XLA:CPU
  # (measured 3-8 s per conv kernel shape with jax 0.10.2), a flat draw under 1 s.
  bound = 1.0 / math.sqrt(max(fan_in, 1))
  return jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound).reshape(shape)


def torch_default_init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """PyTorch's default Linear/Conv2d weight init, U(+-1/sqrt(fan_in)), for Flax (..., in, out) kernels.

  The official LAPO and AIME code train with this init (kaiming_uniform with a=sqrt(5)); Flax's default
  lecun_normal has sqrt(3) times the std. Biases start at zero here (PyTorch draws them from the same
  uniform; immaterial).
  """
  return _torch_uniform(key, shape, dtype, math.prod(shape[:-1]))


def torch_default_transpose_init(key: jax.Array, shape: Sequence[int],
                                 dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """PyTorch's ConvTranspose2d default init for a Flax (kh, kw, in, out) kernel: fan_in = kh * kw * out."""
  return _torch_uniform(key, shape, dtype, math.prod(shape[:-2]) * shape[-1])


IMPALA_BASE_CHANNELS = (16, 32, 32)


def impala_channels(multiplier: int) -> tuple[int, ...]:
  """Stage channels of IMPALA-CNN at a channel multiplier (Cobbe et al., 2020): 4 -> (64, 128, 128)."""
  return tuple(int(c * multiplier) for c in IMPALA_BASE_CHANNELS)


def _flatten_batch(x: jax.Array, event_ndim: int) -> tuple[jax.Array, tuple[int, ...]]:
  """Folds all leading dims of ``x`` (beyond the last ``event_ndim``) into one batch dim."""
  batch_shape = x.shape[: x.ndim - event_ndim]
  return x.reshape((-1,) + x.shape[x.ndim - event_ndim :]), batch_shape


class ImpalaResidualBlock(nn.Module):
  """x + conv(relu(conv(relu(x)))), both convs 3x3 (official ``ImpalaResidualBlock``: the first conv at full
  width; ``hidden`` > 0 sets its width, as the U-Net's ``ResidualLayer`` does)."""

  channels: int
  kernel_init: Initializer = torch_default_init
  impl: str = "auto"
  hidden: int = 0  # the first conv's width; 0: channels

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.relu(x)
    y = Conv(self.hidden or self.channels, 3, padding="SAME", impl=self.impl, kernel_init=self.kernel_init,
             name="conv0")(y)
    y = nn.relu(y)
    y = Conv(self.channels, 3, padding="SAME", impl=self.impl, kernel_init=self.kernel_init, name="conv1")(y)
    return x + y


class ImpalaCNN(nn.Module):
  """IMPALA-CNN: image (..., H, W, C) float32, already normalised -> features (..., out_features).

  Spatial size per stage is ceil(H / 2) (max-pool 3x3, stride 2, padding 1 as in PyTorch), so 64 -> 32 -> 16 -> 8
  and MinAtar's 10 -> 5 -> 3 -> 2 both work. Output ends with a relu, as the official code applies
  ``relu(fc(...))`` before every head.
  """

  channels: Sequence[int] = IMPALA_BASE_CHANNELS
  num_blocks: int = 2
  out_features: int | None = 256      # None: the flattened convolution features, without the fc layer
  kernel_init: Initializer = torch_default_init
  impl: str = "auto"  # the convolutions' (`nets.conv.conv2d`): "auto", "matmul" or "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x, batch_shape = _flatten_batch(x, 3)
    for i, ch in enumerate(self.channels):
      x = Conv(ch, 3, padding="SAME", impl=self.impl, kernel_init=self.kernel_init, name=f"stage{i}_conv")(x)
      # = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))), without XLA:CPU's slow
      # select_and_scatter in the backward pass (see nets/pool.py).
      x = pool.max_pool_3x3_s2_p1(x)
      for j in range(self.num_blocks):
        x = ImpalaResidualBlock(ch, self.kernel_init, self.impl, name=f"stage{i}_res{j}")(x)
    x = nn.relu(x)
    x = x.reshape((x.shape[0], -1))
    if self.out_features is None:
      return x.reshape(batch_shape + x.shape[-1:])
    x = nn.Dense(self.out_features, kernel_init=self.kernel_init, name="fc")(x)
    x = nn.relu(x)
    return x.reshape(batch_shape + (self.out_features,))
