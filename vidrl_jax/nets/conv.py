"""The image encoder and decoder of World Models (Ha & Schmidhuber 2018), used by PlaNet, Dreamer, AIME and APV.

Encoder: four 4x4 stride-2 VALID convolutions (width, 2w, 4w, 8w) with ReLU between them, flattened to 1024
features for width 32 (AIME's `CNNEncoderHa`; no ReLU after the last convolution, as there). Pixels enter as
uint8 and are scaled to [0, 1] here.
Decoder: Dense(32w) -> 1x1 -> transposed convolutions 5, 5, 6, 6 (stride 2, VALID: 1 -> 5 -> 13 -> 30 -> 64) with
ReLU, sigmoid output in [0, 1]: the mean of a unit-variance Gaussian (paper App. B).
DreamerV2's (and APV's) are the same stacks with ELU after every layer but the decoder's last (`activation=nn.elu`,
`last_activation=True`), pixels centred to [-0.5, 0.5] (`pixel_offset=-0.5`) and a linear output (`output=
"linear"`). Other image sizes take other kernels (`kernels`; the decoder checks that they end at `image_size`),
e.g. 32x32: encoder (4, 4, 4) (32 -> 15 -> 6 -> 2), decoder (6, 5, 4) (1 -> 6 -> 15 -> 32).

Two implementations of the strided (transposed) convolutions, chosen by the modules' `impl`, with the same
parameters (`conv{i}/kernel` (k, k, Cin, Cout) and `bias`; `dense`, `deconv{i}/kernel` and `bias`) and the same
outputs up to float rounding:
- "xla": `nn.Conv` / `nn.ConvTranspose` (XLA's convolution; on XLA:CPU its gradients are very slow).
- "matmul" (default): `conv_valid_matmul` / `conv_transpose_valid_matmul`, custom-VJP functions whose forward and
  backward passes are GEMMs plus data movement that XLA:CPU runs fast. With the kernel zero-padded to Q * s taps
  per axis (Q = ceil(k / s)), a k x k stride-s convolution is a Q x Q stride-1 one over s x s pixel blocks
  (space-to-depth): the patches are one gather of Q x Q windows (`_patches`), their transpose Q x Q shifted
  window additions (`_overlap_add`). Convolution: patches @ kernel; transposed convolution: overlap-add of
  (input @ kernel); each gradient is the other map plus two GEMMs. A convolution that is not differentiated (e.g.
  the encoder in AIME's phase 2) runs XLA's own, whose forward pass alone is the faster one.
`conv2d` / `Conv` (used by IMPALA-CNN and the U-Net) pick either per call by `impl`: "matmul", "xla", or "auto"
(XLA's, unless an `auto_impl` scope says otherwise: on the CPU, XLA's stride-1 3x3 convolutions win in a plain jit
and lose badly inside loop bodies; `resolve_impl` has the numbers).
At batch 256 on 2 shared CPU cores, forward + backward (gradients w.r.t. params and input) is about 3x (encoder)
and 4-7x (decoder) faster than "xla" (benchmarks/conv_ops.py), for about twice XLA's temporary memory (a gradient
at 2500 frames: ~2.7 GiB per net instead of ~1.25 GiB).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.pixels import image_to_float

IMPLS = ("matmul", "xla")
# `_patches` gathers windows of at least this many contiguous values (measured faster on XLA:CPU than a
# concatenation of slices); narrower ones (the 3-channel image: 12 values) are concatenated slices.
_GATHER_MIN_DEPTH = 32
_DN = ("NHWC", "HWIO", "NHWC")


def _geometry(k: int, s: int) -> int:
  """Q = ceil(k / s): a k-tap stride-s kernel, zero-padded to Q * s taps, is Q x Q blocks of s x s taps."""
  return -(-k // s)


def _patches(x: jax.Array, k: int, s: int) -> jax.Array:
  """(N, H, W, C) -> (N, Ho, Wo, Q * Q * s * s * C): the k x k stride-s VALID patches, kernel padded to Q * s taps.

  Patch (i, j) holds x[s * (i + qa) + ra, s * (j + qb) + rb, c] in the order (qa, qb, ra, rb, c) (zero past the
  image: those taps meet the padded kernel's zeros). Space-to-depth by s (cropping or zero-padding the image to
  s * (Ho - 1 + Q) pixels), then the Q x Q unit-stride windows of s * s * C contiguous values: one gather with
  constant indices (on XLA:CPU faster than a concatenation of slices, except for narrow windows).
  """
  n, h, w, c = x.shape
  q = _geometry(k, s)
  ho, wo = (h - k) // s + 1, (w - k) // s + 1
  hs, ws = ho - 1 + q, wo - 1 + q
  x = x[:, :s * hs, :s * ws]
  if s * hs > h or s * ws > w:
    x = jnp.pad(x, ((0, 0), (0, s * hs - x.shape[1]), (0, s * ws - x.shape[2]), (0, 0)))
  if s > 1:
    x = x.reshape(n, hs, s, ws, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, hs, ws, s * s * c)
  if q == 1:
    return x
  d = s * s * c
  if d < _GATHER_MIN_DEPTH:
    return jnp.concatenate([x[:, a:a + ho, b:b + wo] for a in range(q) for b in range(q)], axis=-1)
  rows = (np.arange(ho)[:, None] + np.arange(q))[:, None, :, None]   # (Ho, 1, Q, 1), constant indices
  cols = (np.arange(wo)[:, None] + np.arange(q))[None, :, None, :]   # (1, Wo, 1, Q)
  return x[:, rows, cols].reshape(n, ho, wo, q * q * d)


def _overlap_add(y: jax.Array, k: int, s: int, size: tuple[int, int]) -> jax.Array:
  """The transpose of `_patches` onto an (N, *size, C) image: every patch added back where it came from.

  Overlap-add of the Q x Q blocks of s x s pixels on the stride-s grid (Q * Q shifted unit-stride window
  additions), then depth-to-space; cropped (or zero-padded) to `size`.
  """
  n, ho, wo, _ = y.shape
  q = _geometry(k, s)
  d = y.shape[-1] // (q * q)
  hs, ws = ho - 1 + q, wo - 1 + q
  z = jnp.zeros((n, hs, ws, d), y.dtype)
  for a in range(q):
    for b in range(q):  # in-place window updates: on XLA:CPU faster than a sum of Q * Q padded copies
      z = z.at[:, a:a + ho, b:b + wo].add(y[..., (a * q + b) * d:(a * q + b + 1) * d])
  if s > 1:
    z = z.reshape(n, hs, ws, s, s, -1).transpose(0, 1, 3, 2, 4, 5).reshape(n, s * hs, s * ws, -1)
  h, w = size
  z = z[:, :h, :w]
  if s * hs < h or s * ws < w:
    z = jnp.pad(z, ((0, 0), (0, h - z.shape[1]), (0, w - z.shape[2]), (0, 0)))
  return z


def _kernel_matrix(kernel: jax.Array, s: int) -> jax.Array:
  """(k, k, Cin, Cout) -> (Q * Q * s * s * Cin, Cout), zero-padded to Q * s taps, rows in `_patches`' order."""
  k, _, c, o = kernel.shape
  q = _geometry(k, s)
  if q * s > k:
    kernel = jnp.pad(kernel, ((0, q * s - k), (0, q * s - k), (0, 0), (0, 0)))
  return kernel.reshape(q, s, q, s, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(-1, o)


def _flat(x: jax.Array) -> jax.Array:
  return x.reshape(-1, x.shape[-1])


def _dot_tn(a: jax.Array, b: jax.Array) -> jax.Array:
  """a^T @ b for (M, K) a and (M, N) b (the weight gradient: a contraction over all pixels)."""
  return jax.lax.dot_general(_flat(a), _flat(b), (((0,), (0,)), ((), ())))


def _dot_nt(a: jax.Array, b: jax.Array) -> jax.Array:
  """a @ b^T for (..., K) a and (N, K) b (the input gradient)."""
  return jax.lax.dot_general(a, b, (((a.ndim - 1,), (1,)), ((), ())))


# The convolutions are custom_vjp functions so that forward and backward are exactly the GEMMs, gathers and pads
# chosen here. (Autodiff of the same forward would give a scatter-add for the gather, and XLA:CPU's layout
# assignment would transpose the patch gradient, ~10^8 values, for the weight GEMM.) The residuals are the input
# and the kernel; the backward pass rebuilds the patches from the input (XLA shares them with the forward's).

@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_valid_matmul(x: jax.Array, kernel: jax.Array, stride: int, gemm_forward: bool = False) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, (s, s), 'VALID')` for NHWC `x` and HWIO square `kernel`, no bias.

  Under differentiation, forward: the patches (`_patches`) times the kernel as a matrix, one GEMM; backward: input
  gradient = overlap-add of (output gradient @ kernel matrix^T), kernel gradient = patches^T @ output gradient.
  Not differentiated: `lax.conv_general_dilated` itself, or with `gemm_forward` the GEMM form.
  """
  # Not differentiated (e.g. AIME's phase 2 encodes observations without gradient): XLA's own convolution, whose
  # forward pass is the faster one in a plain jit; inside a loop body (a PPO rollout's `lax.scan`) the GEMM form
  # is (`gemm_forward`). Under differentiation `_conv_fwd` computes the GEMM form, whose patches the backward
  # pass shares.
  if gemm_forward:
    return jnp.dot(_patches(x, kernel.shape[0], stride), _kernel_matrix(kernel, stride))
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "VALID", dimension_numbers=_DN)


def _conv_fwd(x, kernel, stride, gemm_forward):
  return conv_valid_matmul(x, kernel, stride, True), (x, kernel)


def _conv_bwd(stride, gemm_forward, res, g):
  del gemm_forward
  x, kernel = res
  k = kernel.shape[0]
  kmat, kmat_vjp = jax.vjp(lambda kk: _kernel_matrix(kk, stride), kernel)
  dx = _overlap_add(_dot_nt(g, kmat), k, stride, x.shape[1:3])
  dkernel, = kmat_vjp(_dot_tn(_patches(x, k, stride), g))
  return dx, dkernel


conv_valid_matmul.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_transpose_valid_matmul(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """`lax.conv_transpose(x, kernel, (s, s), 'VALID')` (Flax `nn.ConvTranspose`, transpose_kernel=False), no bias.

  Output size s * (H - 1) + k. Input pixel (i, j) adds `x[i, j] @ kernel[k - 1 - a, k - 1 - b]` (the kernel
  flipped) to output pixel (s * i + a, s * j + b): the adjoint of a strided convolution with the flipped kernel.
  Forward: one GEMM gives every input pixel's output patch, `_overlap_add` sums them (a 1 x 1 input: just the
  GEMM). Backward: input gradient = patches of the output gradient @ kernel matrix; kernel gradient = input^T @
  those patches.
  """
  n, h, w, _ = x.shape
  k, s = kernel.shape[0], stride
  if h == w == 1:     # a dense layer: every output pixel from the single input pixel (no overlap, no padded taps)
    return jnp.dot(x.reshape(n, -1), _dense_matrix(kernel)).reshape(n, *kernel.shape[:2], -1)
  return _overlap_add(_dot_nt(x, _flipped_matrix(kernel, s)), k, s, (s * (h - 1) + k, s * (w - 1) + k))


def _flipped_matrix(kernel: jax.Array, s: int) -> jax.Array:
  """(Q * Q * s * s * Cout, Cin): the matrix of the strided convolution whose adjoint is the transposed one."""
  return _kernel_matrix(jnp.swapaxes(kernel[::-1, ::-1], 2, 3), s)


def _dense_matrix(kernel: jax.Array) -> jax.Array:
  """(Cin, kh * kw * Cout): the transposed convolution of a 1 x 1 input as a matrix (any kh x kw kernel)."""
  return jnp.moveaxis(kernel[::-1, ::-1], 2, 0).reshape(kernel.shape[2], -1)


def _convt_fwd(x, kernel, stride):
  return conv_transpose_valid_matmul(x, kernel, stride), (x, kernel)


def _convt_bwd(stride, res, g):
  x, kernel = res
  if x.shape[1] == x.shape[2] == 1:
    kmat, kmat_vjp = jax.vjp(_dense_matrix, kernel)
    g = g.reshape(g.shape[0], -1)
    dkernel, = kmat_vjp(_dot_tn(x, g))
    return jnp.dot(g, kmat.T).reshape(x.shape), dkernel
  kmat, kmat_vjp = jax.vjp(lambda kk: _flipped_matrix(kk, stride), kernel)
  dy = _patches(g, kernel.shape[0], stride)                   # (N, H, W, Q * Q * s * s * Cout)
  dx = jnp.dot(dy, kmat)
  dkernel, = kmat_vjp(_dot_tn(dy, x))
  return dx, dkernel


conv_transpose_valid_matmul.defvjp(_convt_fwd, _convt_bwd)


_AUTO: list[str] = []  # set by `auto_impl`: what "auto" resolves to (innermost last)


def resolve_impl(impl: str) -> str:
  """"auto" -> what the innermost `auto_impl` scope says, else "xla".

  Why "xla" outside a scope, also on the CPU: in a plain jit XLA:CPU's (jax 0.10.2) 3x3 convolutions beat the GEMM
  form at LAPO's shapes (stage-1 step of the cpu preset 2.4x, small shapes 1.7x; benchmarks/lapo_steps.py), but
  inside a loop body (a PPO update's minibatch `lax.scan`, a rollout's) they lose their fast path and the GEMM
  form is ~14x faster (benchmarks/ppo_iteration.py): trace such code under `auto_impl(loop_impl())`.
  """
  if impl not in (*IMPLS, "auto"):
    raise VidrlError(f"the convolution impl must be one of {(*IMPLS, 'auto')}, got {impl!r}; pick one of those")
  if impl == "auto":
    return _AUTO[-1] if _AUTO else "xla"
  return impl


def loop_impl() -> str:
  """The impl for convolutions traced inside loop bodies: "matmul" on the CPU backend, "xla" on GPU / TPU."""
  return "matmul" if jax.default_backend() == "cpu" else "xla"


@contextlib.contextmanager
def auto_impl(impl: str):
  """Within this scope (at trace time) "auto" means `impl` ("matmul" or "xla"), e.g. `auto_impl(loop_impl())`
  around the tracing of a PPO step; also A/B timing of nets built deep inside other code."""
  _AUTO.append(resolve_impl(impl))
  try:
    yield
  finally:
    _AUTO.pop()


def _check_impl(impl: str) -> None:
  resolve_impl(impl)


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: str = "VALID", transpose: bool = False,
           impl: str = "auto", gemm_forward: bool = True) -> jax.Array:
  """`nn.Conv` / `nn.ConvTranspose` (transpose_kernel=False) without bias: NHWC `x`, HWIO `kernel`.

  `padding`: "VALID", or "SAME" (stride 1, odd square kernel; not with `transpose`). "xla": XLA's convolution;
  "matmul": `conv_valid_matmul` / `conv_transpose_valid_matmul` (a SAME convolution on the zero-padded input, a
  kernel that covers the whole input or a transposed convolution of a 1 x 1 input: one matrix product);
  "auto": `resolve_impl`. Square kernels, equal strides along H and W, except where the map is one GEMM.
  `gemm_forward`: "matmul" computes a convolution that is not differentiated as a GEMM too (False: by XLA's
  convolution; see `conv_valid_matmul`).
  """
  impl, (kh, kw) = resolve_impl(impl), kernel.shape[:2]
  if padding not in ("VALID", "SAME") or (padding == "SAME" and (transpose or stride != 1 or kh % 2 == 0)):
    raise VidrlError(f"conv2d supports VALID padding, or SAME at stride 1 with an odd kernel and no transpose; "
                     f"got padding {padding!r}, stride {stride}, kernel {kh}x{kw}, transpose {transpose}")
  if impl == "xla":
    if transpose:
      return jax.lax.conv_transpose(x, kernel, (stride, stride), padding, dimension_numbers=_DN)
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=_DN)
  n, h, w, c = x.shape
  if transpose and h == w == 1:
    return conv_transpose_valid_matmul(x, kernel, stride)
  if not transpose and padding == "VALID" and (kh, kw) == (h, w):  # the kernel covers the image: a dense layer
    return jnp.dot(x.reshape(n, 1, 1, h * w * c), kernel.reshape(h * w * c, -1))
  if kh != kw:
    raise VidrlError(f"the matmul convolution needs a square kernel here, got {kh}x{kw}; use impl='xla'")
  if transpose:
    return conv_transpose_valid_matmul(x, kernel, stride)
  if padding == "SAME":
    p = kh // 2
    x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  return conv_valid_matmul(x, kernel, stride, gemm_forward)


class Conv(nn.Module):
  """`nn.Conv(features, (k, k), strides=(s, s), padding=padding)` (or `nn.ConvTranspose` with `transpose`) computed
  by `conv2d` with `impl`; the same params (`kernel` (kh, kw, Cin, Cout) and `bias`, the same inits) under either
  impl. `kernel_size` an int (square) or (kh, kw)."""
  features: int
  kernel_size: int | tuple[int, int]
  stride: int = 1
  transpose: bool = False
  padding: str = "VALID"
  impl: str = "auto"
  kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
  gemm_forward: bool = True  # see `conv2d`

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kh, kw = (k, k) if isinstance(k, int) else tuple(k)
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
    return conv2d(x, kernel, self.stride, self.padding, self.transpose, self.impl, self.gemm_forward) + bias


# PixelEncoder's convolution: always the GEMM form under differentiation, XLA's otherwise.
_MatmulConv = functools.partial(Conv, impl="matmul", gemm_forward=False)


class ConvEncoder(nn.Module):
  """(..., H, W, 3) -> (..., features): stride-2 VALID convolutions of widths w, 2w, 4w, ... (64x64, width 32:
  1024 features)."""
  width: int = 32
  impl: str = "matmul"
  kernels: tuple[int, ...] = (4, 4, 4, 4)
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  last_activation: bool = False
  pixel_offset: float = 0.0

  @nn.compact
  def __call__(self, image: jax.Array) -> jax.Array:
    _check_impl(self.impl)
    lead = image.shape[:-3]
    x = (image_to_float(image) + self.pixel_offset).reshape((-1, *image.shape[-3:]))
    for i, k in enumerate(self.kernels):
      x = Conv(self.width * 2 ** i, k, 2, impl=self.impl, gemm_forward=False, name=f"conv{i}")(x)
      if i < len(self.kernels) - 1 or self.last_activation:
        x = self.activation(x)
    return x.reshape((*lead, -1))


def decoder_size(kernels: tuple[int, ...]) -> int:
  """The side of the image the stride-2 VALID transposed convolutions `kernels` make from 1 x 1."""
  size = 1
  for k in kernels:
    size = 2 * (size - 1) + k
  return size


class ConvDecoder(nn.Module):
  """(..., F) -> (..., H, W, channels) mean image: in [0, 1] (sigmoid output), or linear (`output="linear"`, for
  targets offset like the encoder's input)."""
  width: int = 32
  channels: int = 3
  impl: str = "matmul"
  kernels: tuple[int, ...] = (5, 5, 6, 6)
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  output: str = "sigmoid"

  @nn.compact
  def __call__(self, feat: jax.Array) -> jax.Array:
    _check_impl(self.impl)
    if self.output not in ("sigmoid", "linear"):
      raise VidrlError(f"ConvDecoder output {self.output!r}: use 'sigmoid' or 'linear'")
    lead, n = feat.shape[:-1], len(self.kernels)
    x = nn.Dense(32 * self.width, name="dense")(feat.reshape((-1, feat.shape[-1])))
    x = x.reshape((-1, 1, 1, 32 * self.width))
    widths = [self.width * 2 ** (n - 2 - i) for i in range(n - 1)] + [self.channels]
    for i, (features, k) in enumerate(zip(widths, self.kernels)):
      x = Conv(features, k, 2, transpose=True, impl=self.impl, name=f"deconv{i}")(x)
      if i < n - 1:
        x = self.activation(x)
    x = nn.sigmoid(x) if self.output == "sigmoid" else x
    return x.reshape((*lead, *x.shape[1:]))
