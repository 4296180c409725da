"""Orbax checkpoints of a whole train-state pytree; writes are atomic (orbax renames a finished temp dir).

The directory may be a bucket URL: orbax reads and writes gs:// (and s3://) paths itself through etils.epath
(gcsfs) and tensorstore, so only local paths are made absolute (`io.abspath` leaves a URL as it is)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from vidrl_jax import io
from vidrl_jax.errors import VidrlError


class Checkpointer:
  """Keeps the last `keep` checkpoints of one stage under `directory`."""

  def __init__(self, directory: str, keep: int = 2):
    self.directory = io.abspath(directory)
    self._mngr = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Writes `state` as checkpoint `step` (replaced if it exists) and waits for it. Arrays replicated over the
    mesh are written from one local copy (numpy): orbax would otherwise slice each array's replica with a jitted
    slice program per shape, compiled on a run's first save (measured: 11.6 s for 60 small arrays on 4 CPU
    devices, 0.5 s as numpy); the bytes written are the same, and `restore` places them on the mesh again."""
    host = jax.tree.map(lambda x: np.asarray(x.addressable_data(0))
                        if isinstance(x, jax.Array) and x.sharding.is_fully_replicated else x, state)
    self._mngr.save(step, args=ocp.args.StandardSave(host), force=True)
    self._mngr.wait_until_finished()

  def restore(self, step: int, like: Any, shardings: Any) -> Any:
    """Restores `step` into arrays shaped like `like` (an abstract pytree) placed with `shardings`."""
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), like, shardings)
    try:
      return self._mngr.restore(step, args=ocp.args.StandardRestore(target))
    except (ValueError, KeyError, TypeError) as e:
      raise VidrlError(f"the checkpoint at {self.directory}/{step} does not fit this config's model "
                       f"({type(e).__name__}); the config changed since it was written: use a new --workdir "
                       f"or delete that checkpoint directory") from None

  def close(self) -> None:
    self._mngr.close()
