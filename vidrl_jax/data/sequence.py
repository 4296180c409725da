"""One sequence dataset for every method: dict observations, optional actions and rewards, episode-safe windows.

A `SequenceDataset` is a list of sources (files, or in-memory episodes) cut into runs: maximal stretches of rows
that lie in one source and one episode. Every format reader (`formats.py`) maps its keys onto the same rows:

  obs[k][t]    observation k at row t (images uint8 as stored; vectors float32 (D,), a scalar sensor as (1,))
  action[t]    the action that led to row t (DreamerV2/AIME `pre_action` convention; zeros on an episode's
               first row); absent for action-free video
  reward[t]    the reward received on arriving at row t (zero on an episode's first row); optional
  is_first[t]  row t starts an episode

Nothing is read into memory when a dataset is opened except the per-row episode flags: arrays stay memory-mapped
(`store.py`) and memory holds the run index (a few numbers per episode). Keys are made resident (one array over
all sources, so a batch is one indexing operation) while their total stays within `resident_bytes` (default
256 MiB; non-image keys first, then the smallest): a small dataset samples at in-memory speed, and a dataset
larger than that budget, or than RAM, is read through the maps, so memory stays bounded whatever its size.

`Windows` is the sampler: every window of `length` rows inside one run, numbered run by run in order; with
`pad > 0` a window may start up to `pad` rows before its run, those rows repeating the run's first row (BCO's
clipped frame stacks). The one sampling convention (`mix.draw`): the global batch of step `step` is
`default_rng([seed, step]).integers(0, num_windows, batch_size)` and process p of n takes rows
p*b .. (p+1)*b-1 with b = batch_size / n, so every process and a resumed run agree on it. `Windows` and
`Transitions` (windows of 2 rows read as replay transitions) are pools of `mix.Sampler`, which draws fixed shares
from several of them the same way (share i from `default_rng([seed, step, i])`; POI: 9 labelled + 3 action-free).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from vidrl_jax.data import mix, store
from vidrl_jax.errors import VidrlError

RESIDENT_BYTES = 256 << 20


@dataclasses.dataclass(frozen=True)
class Field:
  """Where a dataset key comes from: `source` key of the file, read at row t - `shift`, converted by `kind`.

  kind: 'image' (uint8 as stored), 'vector' (float32, (T,) read as (T, 1)), 'scalar' (float32 (T,)),
  'flag' (bool (T,)), 'action' (float32 if floating else int32), 'raw' (as stored).
  `shift=1` serves formats that store the action/reward of the step taken *in* row t (LAPO chunks): row t then
  gets the source's row t-1, and zero where row t starts an episode or its source.
  """
  source: str
  kind: str = "raw"
  shift: int = 0


def convert(a: np.ndarray, kind: str, row_shape: tuple[int, ...]) -> np.ndarray:
  """Values of a field whose stored rows have `row_shape`, in the canonical dtype and shape (no copy where the
  input already fits)."""
  a = np.asarray(a)
  if kind == "vector":
    return (a[..., None] if row_shape == () else a).astype(np.float32, copy=False)
  if kind in ("scalar", "flag"):
    a = a[..., 0] if row_shape == (1,) else a
    return a.astype(bool if kind == "flag" else np.float32, copy=False)
  if kind == "action":
    return a.astype(np.float32 if np.issubdtype(a.dtype, np.floating) else np.int32, copy=False)
  return a


class Source:
  """One file or in-memory episode stream: `length` rows, arrays by source key (store.Member or ndarray)."""

  def __init__(self, name: str, length: int, columns: Mapping[str, "store.Member | np.ndarray"]):
    self.name, self.length, self.columns = name, int(length), dict(columns)

  def row_shape(self, key: str) -> tuple[int, ...]:
    return tuple(self.columns[key].shape[1:])

  def dtype(self, key: str) -> np.dtype:
    return np.dtype(self.columns[key].dtype)


class SequenceDataset:
  """Sources cut into runs at `is_first`; `windows(length, pad)` gives a sampler. Build it with `formats.py`."""

  def __init__(self, name: str, sources: Sequence[Source], is_first: Sequence[np.ndarray],
               obs: Mapping[str, Field], action: Field | None = None, reward: Field | None = None,
               extras: Mapping[str, Field] | None = None, files: store.Files | None = None,
               resident_bytes: int = RESIDENT_BYTES):
    if not sources:
      raise VidrlError(f"the dataset {name} holds no episodes; collect data or point the config at a dataset")
    self.name = name
    self.sources = list(sources)
    self.obs = dict(obs)
    self.action, self.reward = action, reward
    self.extras = dict(extras or {})
    self.files = files if files is not None else store.Files()
    src, begin, length, first = [], [], [], []
    for i, (s, f) in enumerate(zip(self.sources, is_first)):
      f = np.asarray(f, bool).copy()
      starts = np.flatnonzero(f)
      starts = np.unique(np.concatenate([[0], starts])) if s.length else starts
      ends = np.append(starts[1:], s.length)
      src.append(np.full(len(starts), i, np.int64))
      begin.append(starts)
      length.append(ends - starts)
      first.append(f[starts] if len(starts) else np.zeros(0, bool))
    self.run_source = np.concatenate(src)
    self.run_begin = np.concatenate(begin).astype(np.int64)
    self.run_length = np.concatenate(length).astype(np.int64)
    self.run_first = np.concatenate(first)
    self._offsets = np.concatenate([[0], np.cumsum([s.length for s in self.sources])]).astype(np.int64)
    self._resident: dict[str, np.ndarray] = {}
    self.resident_keys = self._plan_resident(int(resident_bytes))

  def _plan_resident(self, budget: int) -> set[str]:
    """Source keys held in memory: non-image keys first, then by size, while their total fits `budget`."""
    fields = [self.action, self.reward, *self.obs.values(), *self.extras.values()]
    kinds = {f.source: f.kind for f in fields if f is not None}
    size = {k: sum(int(np.prod(s.columns[k].shape)) * s.dtype(k).itemsize for s in self.sources) for k in kinds}
    keep, used = set(), 0
    for k in sorted(kinds, key=lambda k: (kinds[k] == "image", size[k])):
      if used + size[k] <= budget:
        keep.add(k)
        used += size[k]
    return keep

  def _resident_array(self, key: str) -> np.ndarray:
    if key not in self._resident:
      self._resident[key] = np.concatenate([np.asarray(self.array(i, key)) for i in range(len(self.sources))])
    return self._resident[key]

  # ---- description -------------------------------------------------------------------------------------------
  @property
  def obs_keys(self) -> tuple[str, ...]:
    return tuple(self.obs)

  @property
  def has_actions(self) -> bool:
    return self.action is not None

  @property
  def num_runs(self) -> int:
    return len(self.run_begin)

  @property
  def num_steps(self) -> int:
    """Total rows over all sources."""
    return int(sum(s.length for s in self.sources))

  def spec(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """(row shape, dtype) of an observation key (or 'action'/'reward'/an extra) as batches carry it."""
    field = self._field(key)
    s = self.sources[0]
    probe = np.zeros((1, *s.row_shape(field.source)), s.dtype(field.source))
    out = convert(probe, field.kind, s.row_shape(field.source))
    return tuple(out.shape[1:]), out.dtype

  @property
  def action_dim(self) -> int:
    """Width of a vector action (1 for a scalar/discrete action)."""
    if self.action is None:
      raise VidrlError(f"the dataset {self.name} has no actions (action-free video); use a dataset with actions")
    shape, _ = self.spec("action")
    return int(np.prod(shape)) if shape else 1

  def _field(self, key: str) -> Field:
    found = {**self.obs, "action": self.action, "reward": self.reward, **self.extras}.get(key)
    if found is None:
      raise VidrlError(f"the dataset {self.name} has no key {key!r} (observations {list(self.obs)}, actions "
                       f"{'yes' if self.action else 'no'}, rewards {'yes' if self.reward else 'no'}, extras "
                       f"{list(self.extras)}); use a key the data has")
    return found

  def windows(self, length: int, pad: int = 0) -> "Windows":
    """Every window of `length` rows inside one run (see the module docstring for `pad`)."""
    return Windows(self, length, pad)

  def transitions(self) -> "Transitions":
    """Every pair of consecutive rows inside one run, read as replay transitions (`Transitions`)."""
    return Transitions(self.windows(2))

  # ---- reading ----------------------------------------------------------------------------------------------
  def array(self, source: int, key: str):
    col = self.sources[source].columns[key]
    return col if isinstance(col, np.ndarray) else self.files.get(col)

  def read(self, field: Field, source: np.ndarray, rows: np.ndarray, is_first: np.ndarray) -> np.ndarray:
    """Values of `field` at rows (B, L) of the given sources (B,), canonical dtype and shape."""
    if not len(source):
      s = self.sources[0]
      empty = convert(np.zeros((0, *s.row_shape(field.source)), s.dtype(field.source)), field.kind,
                      s.row_shape(field.source))
      return empty.reshape(rows.shape + empty.shape[1:])
    if field.source in self.resident_keys:               # one indexing operation for the whole batch
      arr = self._resident_array(field.source)
      r = rows - field.shift
      vals = convert(arr[self._offsets[source][:, None] + np.maximum(r, 0)], field.kind,
                     tuple(self.sources[0].columns[field.source].shape[1:]))
      return self._zero_before(vals, field, r, is_first)
    out = None
    for s in np.unique(source):
      m = source == s
      r = rows[m] - field.shift
      arr = self.array(int(s), field.source)
      vals = self._zero_before(convert(arr[np.maximum(r, 0)], field.kind, tuple(arr.shape[1:])), field, r,
                               is_first[m])
      if out is None:
        out = np.empty(rows.shape + vals.shape[2:], vals.dtype)
      out[m] = vals
    return out

  @staticmethod
  def _zero_before(vals: np.ndarray, field: Field, r: np.ndarray, is_first: np.ndarray) -> np.ndarray:
    """A shifted field is zero where its row starts an episode or has no previous row in its source."""
    if not field.shift:
      return vals
    keep = (r >= 0) & ~is_first
    return vals * keep.reshape(keep.shape + (1,) * (vals.ndim - 2)).astype(vals.dtype)


class Windows:
  """Windows of one dataset, restricted to a selection of runs and of each run's window offsets [lo, hi)."""

  def __init__(self, data: SequenceDataset, length: int, pad: int = 0, runs: np.ndarray | None = None,
               lo: np.ndarray | None = None, hi: np.ndarray | None = None):
    if length < 1:
      raise VidrlError(f"a window needs at least 1 row, got {length}")
    if not 0 <= pad < length:
      raise VidrlError(f"the window padding must lie in [0, {length}), got {pad}")
    self.data, self.length, self.pad = data, int(length), int(pad)
    self._full = np.maximum(data.run_length - length + 1 + pad, 0)     # windows per run of the dataset
    self._base = np.concatenate([[0], np.cumsum(self._full)[:-1]]).astype(np.int64)
    self.runs = np.arange(data.num_runs) if runs is None else np.asarray(runs, np.int64)
    self.lo = np.zeros(len(self.runs), np.int64) if lo is None else np.asarray(lo, np.int64)
    self.hi = self._full[self.runs] if hi is None else np.asarray(hi, np.int64)
    self._counts = np.maximum(self.hi - self.lo, 0)
    self._ends = np.cumsum(self._counts)
    if self.num_windows == 0 and runs is None:       # a part of a split may be empty; the whole set may not
      longest = int(data.run_length.max()) if data.num_runs else 0
      raise VidrlError(f"no window of {length} rows fits inside one episode of {data.name} (the longest run "
                       f"has {longest} rows); use a shorter window or longer episodes")

  @property
  def num_windows(self) -> int:
    return int(self._ends[-1]) if len(self._ends) else 0

  def __len__(self) -> int:
    return self.num_windows

  def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(run index, first row; may precede the run by up to `pad`) of window ids in [0, num_windows)."""
    ids = np.asarray(ids, np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= self.num_windows):
      raise VidrlError(f"window ids must lie in [0, {self.num_windows}), got [{ids.min()}, {ids.max()}]")
    i = np.searchsorted(self._ends, ids, side="right")
    k = self.lo[i] + ids - (self._ends[i] - self._counts[i])
    run = self.runs[i]
    return run, self.data.run_begin[run] + k - self.pad

  def parent_ids(self, ids: np.ndarray) -> np.ndarray:
    """The same windows' ids in the dataset's full window set (`data.windows(length, pad)`)."""
    ids = np.asarray(ids, np.int64)
    i = np.searchsorted(self._ends, ids, side="right")
    return self._base[self.runs[i]] + self.lo[i] + ids - (self._ends[i] - self._counts[i])

  def population(self) -> int:
    """The windows to draw from (a `mix.Sampler` pool); one sentence when this part holds none."""
    if self.num_windows == 0:
      raise VidrlError(f"this part of {self.data.name} holds no window of {self.length} rows; use more or longer "
                       f"episodes, or another validation fraction")
    return self.num_windows

  def draw(self, seed: int, step: int, batch_size: int, process_index: int = 0, process_count: int = 1,
           stream: int = 0) -> np.ndarray:
    """This process's window ids of the global batch of step `step` (`mix.draw`, see the module docstring)."""
    return mix.draw(self.population(), seed, step, batch_size, process_index, process_count, stream)

  def sample(self, seed: int, step: int, batch_size: int, process_index: int = 0, process_count: int = 1) -> dict:
    """This process's rows of the batch of step `step`: a pure function of (seed, step, process)."""
    return self.gather(self.draw(seed, step, batch_size, process_index, process_count))

  def obs(self, ids: np.ndarray, key: str) -> np.ndarray:
    """Only observation `key` of the windows, (B, length, ...)."""
    return self.gather(ids, keys=(key,), labels=False)["obs"][key]

  def gather(self, ids: np.ndarray, length: int | None = None, keys: Sequence[str] | None = None,
             labels: bool | Sequence[str] = True) -> dict:
    """Windows by id: {'obs': {k: (B, L, ...)}, 'action', 'reward' (if the data has them), 'is_first' (B, L),
    'episode' (B,) the run index, and the extras}; `keys` limits the observation keys read, `labels` which of
    action, reward and the extras (True: all, False: none, or their names)."""
    length = self.length if length is None else int(length)
    run, start = self.locate(ids)
    d = self.data
    rows = np.maximum(start[:, None] + np.arange(length), d.run_begin[run][:, None])
    if length and (rows[:, -1] >= d.run_begin[run] + d.run_length[run]).any():
      raise VidrlError(f"windows of {length} rows run past their episode; gather at most {self.length} rows")
    source = d.run_source[run]
    is_first = (rows == d.run_begin[run][:, None]) & d.run_first[run][:, None]
    keys = d.obs if keys is None else keys
    out = {"obs": {k: d.read(d._field(k), source, rows, is_first) for k in keys}, "is_first": is_first,
           "episode": run.astype(np.int64)}
    for name, field in (("action", d.action), ("reward", d.reward), *d.extras.items()):
      if field is not None and (labels is True or (labels is not False and name in labels)):
        out[name] = d.read(field, source, rows, is_first)
    return out

  def split(self, val_fraction: float, seed: int) -> tuple["Windows", "Windows"]:
    """(train, val): round(val_fraction * runs) random runs (at least 1, at most all but 1) go to val, drawn by
    `default_rng([seed, 7])`; a lone run is split in time instead (its last windows go to val)."""
    if not 0 < val_fraction < 1:
      raise VidrlError(f"the validation fraction must lie strictly between 0 and 1, got {val_fraction}")
    n = len(self.runs)
    if n == 1:
      cut = self.lo[0] + int(round((1 - val_fraction) * self._counts[0]))
      return (Windows(self.data, self.length, self.pad, self.runs, self.lo, np.minimum(self.hi, cut)),
              Windows(self.data, self.length, self.pad, self.runs, np.maximum(self.lo, cut), self.hi))
    n_val = min(max(int(round(val_fraction * n)), 1), n - 1)
    val = np.zeros(n, bool)
    val[np.random.default_rng([seed, 7]).permutation(n)[:n_val]] = True
    parts = []
    for mask in (~val, val):
      parts.append(Windows(self.data, self.length, self.pad, self.runs[mask], self.lo[mask], self.hi[mask]))
    return parts[0], parts[1]


class Transitions:
  """A dataset read as a replay buffer's transitions (`mix.Sampler` pool): window (t, t+1) of a `Windows` set of
  2 rows gives `obs` = obs t, `next_obs` = obs t+1, `action`, `reward` of row t+1 (what led to it and came with
  it; where the data has them), `discount` 1 - is_terminal t+1 (1 without that key) and `is_last` of row t+1 (the
  `is_last` key, or without it the last row of its run: an episode's end or its file's). These are the fields and
  dtypes of `ReplayBuffer.gather`, so an observation pool may be a replay or a dataset (RLV)."""

  def __init__(self, windows: Windows):
    if windows.length != 2 or windows.pad:
      raise VidrlError(f"transitions are windows of 2 rows without padding, got length {windows.length} and pad "
                       f"{windows.pad}; pass data.windows(2) or one of its split parts")
    self.windows = windows

  def population(self) -> int:
    return self.windows.population()

  def gather(self, ids: np.ndarray) -> dict:
    w, d = self.windows, self.windows.data
    flags = [k for k in ("is_last", "is_terminal") if k in d.extras]
    b = w.gather(ids, labels=[k for k in ("action", "reward") if getattr(d, k) is not None] + flags)
    if "is_last" in b:
      is_last = b["is_last"][:, 1]
    else:
      run, start = w.locate(ids)
      is_last = start + 1 == d.run_begin[run] + d.run_length[run] - 1
    terminal = b["is_terminal"][:, 1] if "is_terminal" in b else np.zeros(len(is_last), bool)
    out = {"obs": {k: v[:, 0] for k, v in b["obs"].items()}, "next_obs": {k: v[:, 1] for k, v in b["obs"].items()},
           "discount": 1.0 - terminal.astype(np.float32), "is_last": is_last}
    out.update({f: b[f][:, 1] for f in ("action", "reward") if f in b})
    return out
