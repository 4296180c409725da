"""Optimiser factory shared by every method: Adam(W), global-norm clipping, warm-up then constant/linear/cosine."""

from __future__ import annotations

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


def make_optimizer(config: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
  parts = []
  if config.clip:
    parts.append(optax.clip_by_global_norm(config.clip))
  parts.append(optax.adamw(schedule(config, num_steps), eps=config.eps, weight_decay=config.weight_decay)
               if config.weight_decay else optax.adam(schedule(config, num_steps), eps=config.eps))
  return optax.chain(*parts)
