"""ResNet-block U-Net forward-dynamics model (FDM) of LAPO.

LAPO paper Sec. 5: "U-Net (Ronneberger et al., 2015) based on a ResNet backbone (He et al., 2016) with
approximately 8M parameters for the FDM". Layout follows the official ``WorldModel`` (``lapo/models.py``):

* input: the past frames stacked on channels, concatenated with the latent action tiled over H, W;
* ``num_levels`` down blocks: conv3x3 -> norm -> residual layer(s) -> max-pool 2 -> relu, channels
  ``base * 2**i`` (24, 48, ..., 384 at the paper's scale 24 with 5 levels);
* bottleneck: a VALID conv whose kernel covers the remaining map (2x2 at 64x64) -> 1x1 x ``base * 2**levels``
  (768 at paper size);
* the latent action is injected again at the bottleneck: it takes the place of the bottleneck's skip
  connection, i.e. it is concatenated (1x1, no projection) to the bottleneck features;
* ``num_levels + 1`` up blocks: transposed conv (stride 2; the first one inverts the bottleneck conv) -> norm ->
  residual layer(s) -> relu, each fed the concatenation of the previous output and the matching skip;
* head: concat the raw input frames -> conv3x3 -> residual layer(s) -> relu -> conv1x1 -> optional tanh(x) / 2
  (targets are frames in [-0.5, 0.5]).

Differences from the official code: GroupNorm (or no norm) instead of BatchNorm, so apply stays pure (no
batch statistics); max-pooling uses 'SAME' padding (ceil) and transposed-conv outputs are cropped to the skip's
size, so odd sizes work (MinAtar 10 -> 5 -> 3); for even sizes this is identical to the official floor pooling.

Every convolution is `nets.conv.Conv` / `conv2d` with the net's `impl` ("auto": XLA's, or what a `conv.auto_impl`
scope says; "matmul": GEMMs with hand-written gradients); the params are named and shaped as `nn.Conv` /
`nn.ConvTranspose`'s, so checkpoints load under either.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrl_jax.nets import pool
from vidrl_jax.nets.conv import Conv, conv2d
from vidrl_jax.nets.impala import (Initializer, ImpalaResidualBlock, torch_default_init,
                                   torch_default_transpose_init)


def ResidualLayer(channels: int, kernel_init: Initializer = torch_default_init, impl: str = "auto",  # noqa: N802
                  name: str | None = None) -> ImpalaResidualBlock:
  """x + conv3x3(relu(conv3x3(relu(x)))) with a hidden width of ``channels // 2`` (official ``ResidualLayer``)."""
  return ImpalaResidualBlock(channels, kernel_init, impl, hidden=max(channels // 2, 1), name=name)


class TiledCondConv(nn.Module):
  """``nn.Conv(features, (k, k), padding="SAME")`` over ``concat([x, tile(cond)], -1)``, without the tiling.

  Same parameters (``kernel`` (k, k, C + A, features), ``bias``) and, up to float summation order, the same
  output as the plain conv. Why this exists: the latent action (A = 128 channels) tiled over every pixel makes
  the U-Net's first conv its most expensive layer (134 -> 24 channels at 64x64 in the paper config; most of the
  FDM's FLOPs at scale 8). A spatially constant input only contributes ``sum over taps inside the image of
  cond @ kernel[tap]``, which depends on the pixel only through which taps fall into the zero padding; so it is
  computed as a (N, A) x (A, k*k*features) matmul combined with per-row / per-column tap masks.
  """

  features: int
  kernel_size: int = 3
  kernel_init: Initializer = torch_default_init
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    k, c = self.kernel_size, x.shape[-1]
    _, h, w, _ = x.shape
    kernel = self.param("kernel", self.kernel_init, (k, k, c + cond.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    x, cond, kernel, bias = nn.dtypes.promote_dtype(x, cond, kernel, bias)  # As nn.Conv does.
    y = conv2d(x, kernel[:, :, :c], 1, "SAME", impl=self.impl)
    per_tap = jnp.einsum("na,ijaf->nijf", cond, kernel[:, :, c:])  # (N, k, k, features)
    # valid[p, i]: does tap i of output position p read a real (not padded) input position?
    lo = (k - 1) // 2
    def valid(size):
      return ((jnp.arange(size)[:, None] + jnp.arange(k)[None, :] - lo >= 0)
              & (jnp.arange(size)[:, None] + jnp.arange(k)[None, :] - lo < size)).astype(x.dtype)
    cond_term = jnp.einsum("hi,wj,nijf->nhwf", valid(h), valid(w), per_tap)
    return y + cond_term + bias


class UNet(nn.Module):
  """U-Net FDM: (x (..., H, W, C), cond (..., A)) -> (..., H, W, out_channels).

  Attributes:
    out_channels: channels of the prediction (3 for one RGB frame).
    base_channels: the official "scale" (``wm_scale``; 24 in the paper); channels double at every level.
    num_levels: number of 2x downsamplings before the bottleneck (5 in the official code).
    blocks_per_level: residual layers per down/up block and in the head (1 in the official code).
    norm: 'group' (GroupNorm with ``gcd(norm_groups, channels)`` groups) or 'none'.
    norm_groups: GroupNorm groups where the channel count allows.
    tanh_output: apply ``tanh(x) / 2`` to the output (official: always on).
    kernel_init: conv weight init (PyTorch default by default).
    convt_kernel_init: transposed-conv weight init (PyTorch's ConvTranspose2d default by default).
    impl: the convolutions' (`nets.conv.conv2d`): "auto", "matmul" or "xla".
  """

  out_channels: int = 3
  base_channels: int = 24
  num_levels: int = 5
  blocks_per_level: int = 1
  norm: str = "group"
  norm_groups: int = 8
  tanh_output: bool = True
  kernel_init: Initializer = torch_default_init
  convt_kernel_init: Initializer = torch_default_transpose_init
  impl: str = "auto"

  def _norm(self, x: jax.Array, name: str) -> jax.Array:
    if self.norm == "none":
      return x
    if self.norm == "group":
      return nn.GroupNorm(num_groups=math.gcd(self.norm_groups, x.shape[-1]), name=name)(x)
    raise ValueError(f"unknown norm {self.norm!r}; expected 'group' or 'none'")

  def _res(self, x: jax.Array, prefix: str) -> jax.Array:
    for j in range(self.blocks_per_level):
      x = ResidualLayer(x.shape[-1], self.kernel_init, self.impl, name=f"{prefix}_res{j}")(x)
    return x

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    if self.num_levels < 1:
      raise ValueError("UNet needs num_levels >= 1")
    batch_shape = x.shape[:-3]
    if cond.shape[:-1] != batch_shape:
      raise ValueError(f"cond batch shape {cond.shape[:-1]} != image batch shape {batch_shape}")
    x = x.reshape((-1,) + x.shape[-3:])
    cond = cond.reshape((-1, cond.shape[-1]))
    h, w = x.shape[1:3]
    b, levels = self.base_channels, self.num_levels
    init, tinit, impl = self.kernel_init, self.convt_kernel_init, self.impl
    cond_map = cond[:, None, None, :]

    skips = []
    y = x
    for i in range(levels):
      if i == 0:  # Input injection: the latent action tiled over H, W and concatenated on channels.
        y = TiledCondConv(b, 3, kernel_init=init, impl=impl, name="down0_conv")(x, cond)
      else:
        y = Conv(b * 2**i, 3, padding="SAME", impl=impl, kernel_init=init, name=f"down{i}_conv")(y)
      y = self._norm(y, f"down{i}_norm")
      y = self._res(y, f"down{i}")
      # = nn.max_pool(y, (2, 2), strides=(2, 2), padding="SAME"), without XLA:CPU's slow select_and_scatter
      # in the backward pass (see nets/pool.py).
      y = pool.max_pool_2x2_s2_same(y)
      y = nn.relu(y)
      skips.append(y)

    # Bottleneck: VALID conv over the whole remaining map -> 1x1 (kernel 2x2 at 64x64 / 5 levels).
    kernel = y.shape[1:3]
    y = Conv(b * 2**levels, kernel, impl=impl, kernel_init=init, name="bottleneck")(y)
    # Bottleneck injection: the latent action stands in for the bottleneck's skip connection.
    y = jnp.concatenate([y, cond_map], axis=-1)

    up_channels = [b * 2 ** (levels - 1 - i) for i in range(levels)] + [b]
    for i, ch in enumerate(up_channels):
      if i == 0:  # Inverts the bottleneck conv: 1x1 -> size of the deepest skip.
        # (its stride: immaterial for a 1 x 1 input)
        y = Conv(ch, kernel, transpose=True, impl=impl, kernel_init=tinit, name="up0_convt")(y)
      else:
        y = jnp.concatenate([y, skips[levels - i]], axis=-1)
        th, tw = skips[levels - i - 1].shape[1:3] if i < levels else (h, w)
        y = Conv(ch, 2, 2, transpose=True, impl=impl, kernel_init=tinit, name=f"up{i}_convt")(y)
        y = y[:, :th, :tw]  # Undo the ceil of 'SAME' pooling on odd sizes.
      y = self._norm(y, f"up{i}_norm")
      y = self._res(y, f"up{i}")
      y = nn.relu(y)

    y = jnp.concatenate([y, x], axis=-1)
    y = Conv(b, 3, padding="SAME", impl=impl, kernel_init=init, name="head_conv")(y)
    y = self._res(y, "head")
    y = nn.relu(y)
    y = Conv(self.out_channels, 1, impl=impl, kernel_init=init, name="out")(y)
    if self.tanh_output:
      y = jnp.tanh(y) / 2
    return y.reshape(batch_shape + y.shape[1:])

