"""Target networks: the one Polyak average and the one periodic copy of a params pytree.

Two ways to keep a slowly moving copy of a network, for bootstrapped targets that do not chase the network being
trained:

- `polyak`: every update, target <- tau * online + (1 - tau) * target (SAC's target critic and target encoder,
  tau = 5e-3; Haarnoja et al. 2018b; `optax.incremental_update` computes the same).
- `periodic_update`: every `period` updates, target <- fraction * online + (1 - fraction) * target, else unchanged
  (DreamerV2's slow critic: `slow_target_update` 100, `slow_target_fraction` 1, a hard copy; with fraction 1 it is
  `optax.periodic_update`). `step` may be a traced int array, so one compiled update serves every step.

Both are pure functions of pytrees of the same structure; call them after the online params' optimiser step.
"""

from __future__ import annotations

from typing import Any

import jax

from vidrl_jax.errors import VidrlError

Params = Any


def polyak(target: Params, online: Params, tau: float | jax.Array) -> Params:
  """target <- tau * online + (1 - tau) * target, leaf by leaf."""
  return jax.tree.map(lambda t, o: tau * o + (1.0 - tau) * t, target, online)


def periodic_update(target: Params, online: Params, step: int | jax.Array, period: int,
                    fraction: float = 1.0) -> Params:
  """DreamerV2's slow target: on `step % period == 0` the target moves to `polyak(target, online, fraction)` (with
  `fraction` 1 an exact copy of `online`); on the other steps it is returned unchanged.

  `step` counts the updates done before this one (DreamerV2's `_updates`, SAC's `state.step`), so the first update
  (step 0) copies, then updates period, 2 period, ... DreamerV2 also forces a full copy at step 0 because its slow
  critic starts from its own random init; a target initialised as a copy of the online params needs none.
  """
  if int(period) < 1:
    raise VidrlError(f"a target network's update period must be >= 1, got {period}")
  if not 0.0 < fraction <= 1.0:
    raise VidrlError(f"a target network's update fraction must be in (0, 1], got {fraction}")
  moved = online if fraction == 1.0 else polyak(target, online, fraction)
  return jax.lax.cond(step % period == 0, lambda: moved, lambda: target)
