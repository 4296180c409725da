"""Max-pooling written as slices / reshapes instead of ``lax.reduce_window``.

Why this exists: XLA:CPU lowers the gradient of ``nn.max_pool`` (``reduce_window`` max) to
``select_and_scatter``, which runs as a slow scalar loop on CPU. The formulations here compute exactly the same
forward values (max is exact, so the result is bit-identical to ``flax.linen.max_pool``) from strided slices or a
reshape, whose gradient is a cheap elementwise select. Gradients equal ``nn.max_pool``'s wherever a window has a
unique maximum; on ties ``nn.max_pool`` sends the whole gradient to one element while these split it (reshape
version) or pick one by a different rule (slice version), which is an equally valid subgradient.

Measured (jax 0.10.2, 2-core CPU, LAPO stage-1 step at batch 32, interleaved A/B): no measurable change
(ratio 1.006 +- noise); select_and_scatter is not a bottleneck at these shapes.
"""

import jax
import jax.numpy as jnp
from jax import lax


def max_pool_3x3_s2_p1(x: jax.Array) -> jax.Array:
  """Same as ``nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))`` for NHWC ``x``.

  Output size ceil(H / 2) x ceil(W / 2) (PyTorch's ``MaxPool2d(3, 2, padding=1)``). Separable: a 3-tap max along
  W, then along H (max is associative, so this equals the 3x3 window max exactly).
  """
  n, h, w, c = x.shape
  oh, ow = (h - 1) // 2 + 1, (w - 1) // 2 + 1
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  hp = h + 2
  # Along W: columns j, j+2, ..., for j in 0..2, cropped to ow outputs.
  cols = [lax.slice(xp, (0, 0, j, 0), (n, hp, j + 2 * (ow - 1) + 1, c), (1, 1, 2, 1)) for j in range(3)]
  y = jnp.maximum(jnp.maximum(cols[0], cols[1]), cols[2])
  rows = [lax.slice(y, (0, i, 0, 0), (n, i + 2 * (oh - 1) + 1, ow, c), (1, 2, 1, 1)) for i in range(3)]
  return jnp.maximum(jnp.maximum(rows[0], rows[1]), rows[2])


def max_pool_2x2_s2_same(x: jax.Array) -> jax.Array:
  """Same as ``nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")`` for NHWC ``x``.

  Odd sizes are padded with -inf at the end (where 'SAME' pads), then each 2x2 block is reduced via a reshape.
  """
  n, h, w, c = x.shape
  if h % 2 or w % 2:
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
    h, w = h + h % 2, w + w % 2
  return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))
