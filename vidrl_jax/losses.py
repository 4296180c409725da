"""Named losses: every objective is a dict of terms, weighted by the config and logged term by term."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from vidrl_jax.errors import VidrlError


def weighted_sum(losses: Mapping[str, jax.Array],
                 weights: Mapping[str, float]) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Total loss `sum_k w_k * mean(loss_k)` and the metrics `loss/<k>` (unweighted means) plus `loss/total`.

  The names of the losses and of the weights must be the same set, so a new term cannot be silently dropped
  and a weight cannot silently refer to nothing (checked when the step is traced).
  """
  names, wnames = set(losses), set(weights)
  if names != wnames:
    raise VidrlError(f"loss terms {sorted(names)} and loss weights {sorted(wnames)} differ; "
                     f"add the missing weights to the config's loss_weights")
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  for name in sorted(names):
    value = jnp.mean(losses[name])
    metrics[f"loss/{name}"] = value
    if weights[name] != 0:
      total = total + weights[name] * value
  metrics["loss/total"] = total
  return total, metrics
