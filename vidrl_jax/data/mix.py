"""The one batch sampler: fixed shares from several pools, a pure function of (seed, counter), sliced by process.

A pool is anything that numbers its units 0..n-1 and gathers them by id (`Pool`): a `ReplayBuffer` (its
transitions) or `replay.windows(T)`, a dataset's `Windows` or `SequenceDataset.transitions()`. So RLV mixes
a growing interaction replay with an observation pool that is either a replay filled from episodes or a dataset
read from disk (256 + 256 per update), POI two datasets (9 action-labelled + 3 action-free windows), and an
off-policy learner draws its one replay, all the same way:

  share i of `Sampler({name: (pool, share), ...}, seed)` at counter c (the training step, or the updates drawn so
  far) is the global draw `np.random.default_rng([seed, c, i]).integers(0, n, (*lead, share))` over the pool's
  n units, and process p of `process_count` takes the rows [..., p*b:(p+1)*b] of its last axis (b = share /
  process_count), so every process and a resumed run agree on the batch, and each process reads only its rows.

`lead` stacks the draws of several updates (K updates in one jitted burst: lead=(K,)). A pool's draw does not
depend on the other pools, and share 0 is what `default_rng([seed, c])` draws (numpy pads a seed of fewer than
four 32-bit words with zeros). `draw` is the same rule for one pool (`sequence.Windows.draw` uses it).
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import numpy as np

from vidrl_jax.errors import VidrlError


class Pool(Protocol):
  """What a `Sampler` draws from."""

  def population(self) -> int:
    """The number of units (transitions or windows) to draw from, ids 0..n-1; a one-sentence VidrlError when
    there are none."""
    ...

  def gather(self, ids: np.ndarray) -> dict[str, Any]:
    """Units by id (a 1-D int array): a dict (observations a nested dict) of arrays with leading axis len(ids)."""
    ...


def _check_slice(share: int, process_index: int, process_count: int) -> None:
  if process_count < 1 or not 0 <= process_index < process_count:
    raise VidrlError(f"process index {process_index} is not in [0, {process_count}); pass jax.process_index() "
                     f"and jax.process_count()")
  if share < 1 or share % process_count:
    raise VidrlError(f"the batch size {share} must be a positive multiple of the process count {process_count}; "
                     f"change the config's batch size or share")


def draw(population: int, seed: int, counter: int, shape: tuple[int, ...] | int, process_index: int = 0,
         process_count: int = 1, stream: int = 0) -> np.ndarray:
  """This process's ids of the global draw of (seed, counter, stream) with `shape` (see the module docstring)."""
  shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)
  if seed < 0 or counter < 0:
    raise VidrlError(f"the seed and the training step must be non-negative, got seed {seed} and step {counter}")
  _check_slice(shape[-1] if shape else 0, process_index, process_count)
  if min(shape) < 0:
    raise VidrlError(f"the leading axes of a draw must be non-negative, got {shape}")
  ids = np.random.default_rng([seed, counter, stream]).integers(0, population, size=shape)
  b = shape[-1] // process_count
  return ids[..., process_index * b:(process_index + 1) * b]


def _reshape(tree: Any, lead: tuple[int, ...]) -> Any:
  if isinstance(tree, Mapping):
    return {k: _reshape(v, lead) for k, v in tree.items()}
  return tree.reshape(lead + tree.shape[1:])


class Sampler:
  """Fixed shares of several pools per batch, e.g. RLV's {"interaction": (replay, 256), "observation":
  (video, 256)}: `sample(counter, lead)` returns {name: this process's batch of that pool, leading axes
  (*lead, share / process_count)} (see the module docstring)."""

  def __init__(self, sources: Mapping[str, tuple[Pool, int]], seed: int, process_index: int = 0,
               process_count: int = 1):
    shares = {k: n for k, (_, n) in sources.items()}
    if not sources or any(int(n) < 1 for n in shares.values()):
      raise VidrlError(f"a sampler needs at least one pool and a share >= 1 from each, got {shares}; pass "
                       f"{{name: (pool, share)}}")
    missing = [k for k, (p, _) in sources.items() if not callable(getattr(p, "gather", None))
               or not callable(getattr(p, "population", None))]
    if missing:
      raise VidrlError(f"sampler source(s) {missing} are not pools (population() and gather(ids)); pass a "
                       f"ReplayBuffer, replay.windows(T), dataset.windows(T) or dataset.transitions()")
    self.sources = {k: (p, int(n)) for k, (p, n) in sources.items()}
    self.seed, self.process_index, self.process_count = int(seed), int(process_index), int(process_count)
    for n in shares.values():
      _check_slice(int(n), self.process_index, self.process_count)

  @property
  def batch_size(self) -> int:
    """Units per update over all pools and processes."""
    return sum(n for _, n in self.sources.values())

  def sample(self, counter: int, lead: tuple[int, ...] = ()) -> dict[str, dict[str, Any]]:
    out = {}
    for i, (name, (pool, share)) in enumerate(self.sources.items()):
      ids = draw(pool.population(), self.seed, int(counter), (*lead, share), self.process_index,
                 self.process_count, stream=i)
      out[name] = _reshape(pool.gather(ids.reshape(-1)), ids.shape)
    return out
