"""Data parallelism with `jax.jit` over a device mesh: batches split on the `data` axis, parameters replicated.

The same code runs on 1 CPU, N simulated CPU devices (`jax_num_cpu_devices`), a GPU, or a multi-host TPU pod
(after `jax.distributed.initialize()`, every process passes its own slice of the batch).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vidrl_jax.errors import VidrlError

DATA = "data"


def make_mesh() -> Mesh:
  """A 1-d mesh over every device of every process.

  Axis type Auto: XLA's partitioner places the collectives (e.g. the gradient all-reduce), so model code is
  written as for one device; jax's newer default (Explicit) would make every gather spell out its sharding.
  """
  return jax.make_mesh((jax.device_count(),), (DATA,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the `data` axis."""
  return NamedSharding(mesh, P(DATA))


def put_batch(batch: Any, mesh: Mesh) -> Any:
  """Process-local numpy batch -> global jax arrays sharded on their leading axis."""
  sharding = data_sharded(mesh)
  n = mesh.devices.size // jax.process_count()

  def put(x):
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] % n:
      raise VidrlError(f"a batch leaf of shape {x.shape} cannot be split over {n} local devices; "
                       f"make the batch size a multiple of the device count")
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, batch)
