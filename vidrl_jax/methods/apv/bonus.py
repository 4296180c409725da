"""APV's video-based intrinsic bonus (paper Sec. 3.3, Eq. 5; App. E; official `WorldModel.loss`, "Intrinsic Bonus
Computation").

From the action-free model's posterior features z_t of a (B, T) batch:
  y_t = W Avg(z_t, ..., z_{t+L-1})          a window of L = 5 features averaged, W a fixed random Gaussian
                                            projection to 128 dimensions (entries N(0, (1/128)^2), as the official)
  r^int_t = mean of the k = 16 smallest ||y_t - y'||_2 over the queue,
the queue being the newest 4,096 projections (FIFO; this batch's own are pushed before the distances are taken,
so each y_t's nearest neighbour is itself, as in the official code), then divided by a running mean of |r^int|
(DreamerV2's `StreamNorm`: magnitude 1 at the start, momentum 0.99) and scaled by beta outside (`model.py`). The
bonus has T - L + 1 steps per sequence, the windows that fit. Everything is in the train state (`BonusState`), so a
resumed run continues with the same queue.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from vidrl_jax.errors import VidrlError


def bonus_config(**overrides) -> ml_collections.ConfigDict:
  """App. E's settings (official configs.yaml: k, intr_seq_length, queue_size, queue_dim, intr_reward_norm)."""
  c = ml_collections.ConfigDict(dict(beta=1.0, k=16, window=5, queue_size=4096, dim=128, norm_momentum=0.99,
                                     norm_eps=1e-8))
  c.update(overrides)
  return c


class BonusState(struct.PyTreeNode):
  projection: jax.Array   # (F, dim), fixed
  queue: jax.Array        # (queue_size, dim), newest first
  count: jax.Array        # () int32: filled entries
  magnitude: jax.Array    # () float32: the running mean of |bonus|


def init_bonus(rng: jax.Array, feature_dim: int, config: ml_collections.ConfigDict) -> BonusState:
  projection = jax.random.normal(rng, (feature_dim, config.dim), jnp.float32) / config.dim
  return BonusState(projection=projection, queue=jnp.zeros((config.queue_size, config.dim), jnp.float32),
                    count=jnp.zeros((), jnp.int32), magnitude=jnp.ones((), jnp.float32))


def window_mean(feat: jax.Array, window: int) -> jax.Array:
  """(B, T, F) -> (B, T - window + 1, F): the mean of each run of `window` consecutive steps."""
  T = feat.shape[1]
  if window < 1 or window > T:
    raise VidrlError(f"the bonus window {window} must be between 1 and the sequence length {T}; set "
                     f"bonus.window or a longer finetune.length")
  csum = jnp.cumsum(jnp.pad(feat, ((0, 0), (1, 0), (0, 0))), axis=1)
  return (csum[:, window:] - csum[:, :-window]) / window


def push(queue: jax.Array, count: jax.Array, rows: jax.Array) -> tuple[jax.Array, jax.Array]:
  """FIFO: `rows` (N, D) become the newest entries (first rows), the oldest fall off the end."""
  size, n = queue.shape[0], rows.shape[0]
  queue = rows[:size] if n >= size else jnp.concatenate([rows, queue[:size - n]], axis=0)
  return queue, jnp.minimum(count + n, size)


def knn_distance(points: jax.Array, queue: jax.Array, count: jax.Array, k: int) -> jax.Array:
  """(N,) the mean Euclidean distance of each point to its k nearest filled queue entries (fewer while fewer
  are filled). The neighbours are chosen by the expanded squared distance (one matmul), their distances then
  taken from the differences (the expansion's rounding would make a point's distance to itself about 1e-3, not 0;
  the official code takes the norm of all N x Q differences, which here would be gigabytes)."""
  d2 = jnp.sum(points ** 2, -1)[:, None] - 2.0 * points @ queue.T + jnp.sum(queue ** 2, -1)[None, :]
  d2 = jnp.where(jnp.arange(queue.shape[0])[None, :] < count, d2, jnp.inf)
  k = min(k, queue.shape[0])
  _, idx = jax.lax.top_k(-d2, k)                                                 # (N, k), nearest first
  nearest = jnp.linalg.norm(points[:, None, :] - queue[idx], axis=-1)
  valid = jnp.arange(k)[None, :] < jnp.minimum(count, k)
  return jnp.sum(jnp.where(valid, nearest, 0.0), -1) / jnp.maximum(jnp.minimum(count, k), 1)


def video_bonus(state: BonusState, feat: jax.Array, config: ml_collections.ConfigDict
                ) -> tuple[BonusState, jax.Array, dict]:
  """(new state, the normalised bonus (B, T - window + 1), metrics) of action-free features `feat` (B, T, F);
  no gradient flows into `feat`."""
  feat = jax.lax.stop_gradient(feat)
  y = window_mean(feat, int(config.window)) @ state.projection                 # (B, T', dim)
  B, Tw, D = y.shape
  rows = y.reshape(B * Tw, D)
  queue, count = push(state.queue, state.count, rows)
  raw = knn_distance(rows, queue, count, int(config.k))
  m = config.norm_momentum
  magnitude = m * state.magnitude + (1.0 - m) * jnp.mean(jnp.abs(raw))
  normed = raw / (magnitude + config.norm_eps)
  metrics = {"bonus/raw": jnp.mean(raw), "bonus/normed": jnp.mean(normed), "bonus/magnitude": magnitude}
  new = state.replace(queue=queue, count=count, magnitude=magnitude)
  return new, normed.reshape(B, Tw), metrics
