"""Optimiser factory shared by every method: Adam(W), global-norm clipping, warm-up then constant/linear/cosine,
and an optional trainable mask whose frozen leaves get zero updates (and no Adam moments), and whose leaves may
instead name the update at which they start learning (staggered warm starts, e.g. LAPO's stage 3)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax


def optim_config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(lr=3e-4, weight_decay=0.0, clip=0.0, warmup_steps=0, decay="constant",
                                     eps=1e-8))
  c.update(overrides)
  return c


def schedule(config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  warm = min(config.warmup_steps, max(num_steps - 1, 0))
  rest = max(num_steps - warm, 1)
  if config.decay == "constant":
    after = optax.constant_schedule(config.lr)
  elif config.decay == "linear":
    after = optax.linear_schedule(config.lr, 0.0, rest)
  elif config.decay == "cosine":
    after = optax.cosine_decay_schedule(config.lr, rest)
  else:
    from vidrl_jax.errors import VidrlError
    raise VidrlError(f"unknown learning-rate decay {config.decay!r}; use constant, linear or cosine")
  if warm == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, config.lr, warm), after], [warm])


@dataclasses.dataclass(frozen=True)
class Start:
  """A leaf of a trainable mask that learns from optimiser update `update` on, at `lr_scale` times the rate."""
  update: int = 0
  lr_scale: float = 1.0


def trainable_mask(params: Any, is_trainable: Callable[[str], bool | int | Start]) -> Any:
  """A pytree like `params` of `is_trainable('params/torso/fc/kernel')` for each leaf's '/'-joined path: a bool
  (trainable or frozen), an int (the optimiser update from which the leaf learns) or a `Start`."""
  def label(path, _):
    out = is_trainable("/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path))
    return out if isinstance(out, (bool, Start)) else Start(int(out))
  return jax.tree_util.tree_map_with_path(label, params)


def staggered(starts: Any) -> optax.GradientTransformation:
  """Zeroes each leaf's update before its `Start.update` and scales it by `Start.lr_scale` after (`starts`: a
  pytree of `Start` like the updates). The moments before the start still accumulate, as PyTorch's Adam does
  under a learning-rate schedule that is 0 until then (LAPO's official stage 3)."""
  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros((), jnp.int32))

  def update(updates, state, params=None):
    del params
    updates = jax.tree.map(lambda u, s: jnp.where(state.count >= s.update, u * s.lr_scale, jnp.zeros_like(u)),
                           updates, starts)
    return updates, optax.ScaleByScheduleState(count=optax.safe_int32_increment(state.count))

  return optax.GradientTransformation(init, update)


def make_optimizer(config: ml_collections.ConfigDict, num_steps: int,
                   trainable: Any | None = None) -> optax.GradientTransformation:
  """Global-norm clipping at `config.clip` (0: none), then Adam, or AdamW with `weight_decay`, on `schedule`.

  `num_steps` is the number of optimiser updates the schedule spans. `trainable` (a pytree like the params, see
  `trainable_mask`; None: all trainable) gives frozen (False) leaves zero updates and no optimiser state, and
  int leaves zero updates before that optimiser update.
  """
  parts = []
  if config.clip:
    parts.append(optax.clip_by_global_norm(config.clip))
  parts.append(optax.adamw(schedule(config, num_steps), eps=config.eps, weight_decay=config.weight_decay)
               if config.weight_decay else optax.adam(schedule(config, num_steps), eps=config.eps))
  tx = optax.chain(*parts)
  if trainable is None:
    return tx
  labels = jax.tree.map(lambda t: "frozen" if t is False else "train", trainable)
  tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  starts = jax.tree.map(lambda t: Start() if isinstance(t, bool) else t, trainable)
  if all(s == Start() for s in jax.tree.leaves(starts)):
    return tx
  return optax.chain(tx, staggered(starts))
