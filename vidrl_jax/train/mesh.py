"""Data parallelism with `jax.jit` over a device mesh: batches split on the `data` axis, parameters replicated.

The same code runs on 1 CPU, N simulated CPU devices (`jax_num_cpu_devices`), a GPU, or a multi-host TPU pod
(after `jax.distributed.initialize()`, see `vidrl_jax.launch.init_distributed`): the mesh spans every process's
devices, and every process passes only its own slice of each batch (`put_batch`).
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


def data_sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
  """Batch axis `axis` (0: the leading one; 1: an update burst's (K, B, ...)) split over the `data` axis."""
  return NamedSharding(mesh, P(*([None] * axis), DATA))


def put_batch(batch: Any, mesh: Mesh, axis: int = 0) -> Any:
  """Process-local numpy batch -> global jax arrays sharded on batch axis `axis`: each process passes only its own
  rows (`jax.process_index()`'s slice of the global batch, as `data.mix.draw` gives them), which become the global
  array's rows on this process's devices."""
  sharding = data_sharded(mesh, axis)
  n = mesh.devices.size // jax.process_count()

  def put(x):
    x = np.asarray(x)
    if x.ndim <= axis or x.shape[axis] % n:
      raise VidrlError(f"a batch leaf of shape {x.shape} cannot be split over {n} local devices on axis {axis}; "
                       f"make the batch size a multiple of the device count")
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, batch)


def local_copy(tree: Any) -> Any:
  """The tree with every fully replicated global array replaced by its copy on this process's first device.

  Host-side code that mixes a train state with process-local arrays (an online collector acting in its
  environment, an evaluation) cannot pass arrays spanning other processes' devices to `jit`; a replicated
  array's local shard is the whole value. Other leaves (numpy, sharded arrays) are returned as they are."""
  def local(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and x.is_fully_replicated:
      return x.addressable_data(0)
    return x
  return jax.tree.map(local, tree)
