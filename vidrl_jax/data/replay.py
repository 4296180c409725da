"""The replay buffer of every off-policy learner and world model: a numpy ring of episode steps, read as a pool
of transitions (the buffer itself) or of windows (`windows(length)`) by the one sampler, `mix.Sampler`.

Layout (DreamerV2's episode rows, the official AIME keys with `pre_action` named `action`): row t holds
  obs/<key>    observation t, in the dtype of its spec (uint8 images stay uint8; nothing is stored as float twice)
  action       (A,) float32, the action that led to observation t (zeros on a first row)   [if action_dim > 0]
  reward       () float32, the reward received with observation t (0 on a first row)       [if rewards]
  is_first     True on the first observation of an episode
  is_last      True on the last observation of an episode (time limit or terminal)
  is_terminal  True where observation t is terminal (no bootstrapping from it)
Each observation is stored once: transition i -> (obs row i-1, action i, reward i, next_obs row i, discount
1 - is_terminal i) exists for every stored row i that is not a first row and whose predecessor is still stored.
`discount` is the continuation flag (no gamma): an episode cut by a time limit keeps 1, so learners bootstrap.

Windows of `length` rows (for world models) never cross an episode: no row after a window's first is a first row.
A vectorised env's copies run their episodes side by side, so the buffer keeps one ring per copy (`streams`);
rows follow each other only within a stream. The stored transitions (windows) are numbered stream by stream in
insertion order; `mix.Sampler` draws ids uniformly with replacement, so a batch is a function of (seed, counter)
and the buffer's contents. A transition batch has the fields of `sequence.Transitions` (a dataset read as
transitions), so an observation pool may be either.
Nothing here is a float copy of an image: batches index the stored arrays, and the learner converts on device.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vidrl_jax import io
from vidrl_jax.errors import VidrlError

FLAGS = ("is_first", "is_last", "is_terminal")
ObsSpec = Mapping[str, tuple[tuple[int, ...], Any]]   # key -> (shape, dtype)


class ReplayBuffer:
  """The last rows of episodes (see module docstring), in `streams` independent rings of `capacity // streams`
  rows: one per environment copy of a vectorised env, whose episodes run side by side (a single env: 1 stream)."""

  def __init__(self, capacity: int, obs_spec: ObsSpec, action_dim: int = 0, rewards: bool = True, streams: int = 1):
    if streams < 1 or capacity < 2 * streams:
      raise VidrlError(f"the replay needs at least one stream and 2 rows per stream, got capacity {capacity} for "
                       f"{streams} streams")
    if not obs_spec:
      raise VidrlError("the replay buffer needs at least one observation key in obs_spec")
    self.streams, self.slots = int(streams), int(capacity) // int(streams)
    self.capacity, self.action_dim, self.rewards = self.slots * self.streams, int(action_dim), bool(rewards)
    self.obs_spec = {k: (tuple(int(d) for d in s), np.dtype(t)) for k, (s, t) in obs_spec.items()}
    # Row (slot, stream) lives at flat index slot * streams + stream.
    self._obs = {k: np.zeros((self.capacity, *s), t) for k, (s, t) in self.obs_spec.items()}
    self._cols: dict[str, np.ndarray] = {f: np.zeros((self.capacity,), bool) for f in FLAGS}
    if self.action_dim:
      self._cols["action"] = np.zeros((self.capacity, self.action_dim), np.float32)
    if self.rewards:
      self._cols["reward"] = np.zeros((self.capacity,), np.float32)
    self._next = np.zeros((self.streams,), np.int64)   # per stream: slot the next row goes to
    self._size = np.zeros((self.streams,), np.int64)   # per stream: rows stored
    self._cache: dict[Any, np.ndarray] = {}   # index tables, cleared on every write

  def __len__(self) -> int:
    """Rows stored."""
    return int(self._size.sum())

  # ---- writing ----------------------------------------------------------------------------------------
  def add(self, obs: Mapping[str, Any], action: Any = None, reward: Any = 0.0, is_first: Any = False,
          is_last: Any = False, is_terminal: Any = False, streams: Any = None) -> None:
    """One row in each of `streams` (default: all): observation t with the action that led to it and the reward
    received with it. Values have a leading axis of len(streams), except in a single-stream buffer called
    without `streams`, which takes one unbatched row."""
    batched = streams is not None or self.streams > 1
    streams = np.arange(self.streams) if streams is None else np.asarray(streams, np.int64).reshape(-1)
    lift = (lambda v: v) if batched else (lambda v: np.asarray(v)[None])
    i = self._next[streams] * self.streams + streams
    for k, arr in self._obs.items():
      arr[i] = lift(obs[k])
    if self.action_dim:
      self._cols["action"][i] = 0.0 if action is None else lift(action)
    if self.rewards:
      self._cols["reward"][i] = lift(reward)
    for f, v in zip(FLAGS, (is_first, is_last, is_terminal)):
      self._cols[f][i] = lift(v)
    self._advance(streams, 1)

  def add_episode(self, episode: Mapping[str, Any]) -> None:
    """T+1 rows at once (single-stream buffers): `episode["obs"][key]` (T+1, ...), `action` (T+1, A) and
    `reward` (T+1,) where the buffer has them, and optionally `is_first`, `is_last`, `is_terminal` (T+1,)
    (default: first at 0, last at T, never terminal). An episode longer than the buffer keeps its last rows."""
    if self.streams != 1:
      raise VidrlError("add_episode writes whole episodes into a single-stream buffer; add rows with add(...)")
    n = len(next(iter(episode["obs"].values())))
    rows = {f"obs/{k}": np.asarray(episode["obs"][k]) for k in self.obs_spec}
    flags = dict(is_first=np.arange(n) == 0, is_last=np.arange(n) == n - 1, is_terminal=np.zeros(n, bool))
    for f in FLAGS:
      rows[f] = np.asarray(episode.get(f, flags[f]), bool)
    for f in ("action", "reward"):
      if f in self._cols:
        rows[f] = np.asarray(episode[f], np.float32)
    for k, v in rows.items():
      want = (n, *self._column(k).shape[1:])
      if v.shape != want:
        raise VidrlError(f"add_episode: {k} has shape {v.shape}, expected {want} for an episode of {n} rows")
    keep = min(n, self.capacity)
    idx = (self._next[0] + np.arange(n - keep, n)) % self.capacity
    for k, v in rows.items():
      self._column(k)[idx] = v[n - keep:]
    self._advance(np.zeros(1, np.int64), n)

  def _column(self, name: str) -> np.ndarray:
    return self._obs[name[4:]] if name.startswith("obs/") else self._cols[name]

  def _advance(self, streams: np.ndarray, n: int) -> None:
    self._next[streams] = (self._next[streams] + n) % self.slots
    self._size[streams] = np.minimum(self._size[streams] + n, self.slots)
    self._cache.clear()

  # ---- reading ----------------------------------------------------------------------------------------
  def _age_rows(self, stream: int) -> np.ndarray:
    """Flat indices of one stream's stored rows, oldest first."""
    oldest = self._next[stream] if self._size[stream] == self.slots else 0
    return ((oldest + np.arange(self._size[stream])) % self.slots) * self.streams + stream

  def _transition_ends(self) -> np.ndarray:
    """Rows that end a stored transition, stream by stream in insertion order."""
    if "ends" not in self._cache:
      parts = [rows[1:][~self._cols["is_first"][rows[1:]]] for rows in map(self._age_rows, range(self.streams))]
      self._cache["ends"] = np.concatenate(parts)
    return self._cache["ends"]

  def _window_starts(self, length: int) -> np.ndarray:
    key = ("starts", length)
    if key not in self._cache:
      parts = []
      for rows in map(self._age_rows, range(self.streams)):
        firsts = np.cumsum(self._cols["is_first"][rows])
        n = max(len(rows) - length + 1, 0)
        parts.append(rows[:n][firsts[length - 1:length - 1 + n] - firsts[:n] == 0])
      self._cache[key] = np.concatenate(parts)
    return self._cache[key]

  def newest_obs(self, stream: int = 0) -> dict[str, np.ndarray]:
    """The observation of the row added last to `stream`."""
    if self._size[stream] == 0:
      raise VidrlError(f"stream {stream} of the replay buffer is empty; it has no newest observation")
    i = ((self._next[stream] - 1) % self.slots) * self.streams + stream
    return {k: v[i].copy() for k, v in self._obs.items()}

  def num_transitions(self) -> int:
    return len(self._transition_ends())

  def num_windows(self, length: int) -> int:
    return len(self._window_starts(length))

  def population(self) -> int:
    """Transitions stored: the units a `mix.Sampler` draws from this buffer (ids 0..n-1, stream by stream)."""
    n = self.num_transitions()
    if n == 0:
      raise VidrlError("cannot sample a transition from a replay buffer that holds none; add an episode's "
                       "first two rows first")
    return n

  def gather(self, ids: np.ndarray) -> dict[str, Any]:
    """Transitions by id, leading axes ids.shape: `obs` and `next_obs` (dicts by key), `discount`, `is_last`
    (next_obs ends its episode: RLV's Eq. 2 rewards it), and `action`, `reward` where the buffer has them."""
    i = self._transition_ends()[ids]
    prev = (i - self.streams) % self.capacity
    out: dict[str, Any] = {"obs": {k: v[prev] for k, v in self._obs.items()},
                           "next_obs": {k: v[i] for k, v in self._obs.items()},
                           "discount": 1.0 - self._cols["is_terminal"][i].astype(np.float32),
                           "is_last": self._cols["is_last"][i]}
    for f in ("action", "reward"):
      if f in self._cols:
        out[f] = self._cols[f][i]
    return out

  def windows(self, length: int) -> "ReplayWindows":
    """The buffer's windows of `length` rows as a sampler pool (a live view: it sees every later write)."""
    return ReplayWindows(self, length)

  # ---- saving -----------------------------------------------------------------------------------------
  def state_dict(self) -> dict[str, np.ndarray]:
    """The filled part of the storage (flat index order) and the ring pointers, for `io.write_npz`."""
    used = int(self._size.max()) * self.streams
    out = {f"obs/{k}": v[:used] for k, v in self._obs.items()}
    out.update({f: v[:used] for f, v in self._cols.items()})
    out.update(capacity=np.int64(self.capacity), streams=np.int64(self.streams), next=self._next.copy(),
               size=self._size.copy())
    return out

  def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
    mine = self.state_dict()
    pointers = ("capacity", "streams", "next", "size")
    fits = (set(state) >= set(mine) and int(state["capacity"]) == self.capacity
            and int(state["streams"]) == self.streams
            and all(state[k].shape[1:] == v.shape[1:] and state[k].dtype == v.dtype
                    for k, v in mine.items() if k not in pointers))
    if not fits:
      raise VidrlError(f"the saved replay buffer (fields {sorted(state)}, capacity {state.get('capacity')}) does "
                       f"not fit this one (fields {sorted(mine)}, capacity {self.capacity}, {self.streams} "
                       f"streams, shapes {self.obs_spec}); use a new workdir")
    for k in mine:
      if k not in pointers:
        col = self._column(k)
        col[:] = 0
        col[:len(state[k])] = state[k]
    self._next, self._size = np.array(state["next"], np.int64), np.array(state["size"], np.int64)
    self._cache.clear()

  def save(self, path: str, **extra: np.ndarray) -> None:
    """Atomic, uncompressed npz of `state_dict()` plus `extra` arrays (names must not clash)."""
    arrays = self.state_dict()
    clash = sorted(set(arrays) & set(extra))
    if clash:
      raise VidrlError(f"extra arrays {clash} clash with the replay buffer's own names; rename them")
    io.write_npz(path, {**arrays, **{k: np.asarray(v) for k, v in extra.items()}}, compress=False)

  def load(self, path: str) -> dict[str, np.ndarray]:
    """Restores from `save`'s file; returns the extra arrays saved with it."""
    state = io.load_npz(path)
    self.load_state_dict(state)
    own = set(self.state_dict())
    return {k: v for k, v in state.items() if k not in own}


class ReplayWindows:
  """Windows of `length` consecutive rows of one episode in a replay buffer, a `mix.Sampler` pool: `gather(ids)`
  gives leading axes (*ids.shape, length), `obs` (dict by key) and every other row field."""

  def __init__(self, replay: ReplayBuffer, length: int):
    if length < 1:
      raise VidrlError(f"a window needs at least one row, got length {length}")
    self.replay, self.length = replay, int(length)

  def population(self) -> int:
    n = self.replay.num_windows(self.length)
    if n == 0:
      raise VidrlError(f"no episode in the replay buffer has {self.length} stored rows; add longer episodes or "
                       f"shorten the window")
    return n

  def gather(self, ids: np.ndarray) -> dict[str, Any]:
    r = self.replay
    s = r._window_starts(self.length)[ids]
    idx = (s[..., None] + r.streams * np.arange(self.length)) % r.capacity
    out: dict[str, Any] = {"obs": {k: v[idx] for k, v in r._obs.items()}}
    out.update({f: v[idx] for f, v in r._cols.items()})
    return out


# ---- the device form: a ring of transitions inside jit (`vidrl_jax.rl.fused`) --------------------------------
# A fused program (env, replay and updates in one jitted scan, vmapped over runs) cannot call back into the numpy
# buffer above, so it keeps its transitions in jax arrays: one row per transition (obs and next_obs both stored,
# cheap for the vector observations it serves), written at a position every run shares, drawn uniformly.

def ring_init(spec: ObsSpec, capacity: int) -> dict:
  """Zeros {field: (capacity, *shape)} for spec {field: (shape, dtype)}."""
  if capacity < 1:
    raise VidrlError(f"a device replay needs capacity >= 1, got {capacity}")
  return {k: jnp.zeros((int(capacity), *s), t) for k, (s, t) in spec.items()}


def ring_add(ring: dict, rows: dict, index: Any) -> dict:
  """`rows` {field: (n, ...)} written at rows index .. index + n - 1 (jittable; `index` may be traced). The
  capacity is a multiple of n and `index` of n, so a write never wraps: an in-place slice update, not a scatter
  (which XLA's CPU backend may turn into a copy of the whole ring per write)."""
  if set(rows) != set(ring):
    raise VidrlError(f"rows have fields {sorted(rows)} but the device replay has {sorted(ring)}")
  out = {}
  for k, buf in ring.items():
    n = rows[k].shape[0]
    if buf.shape[0] % n:
      raise VidrlError(f"a device replay of {buf.shape[0]} rows takes writes of {n} rows only if {n} divides it; "
                       f"round the capacity to a multiple of {n}")
    start = (index,) + (0,) * (buf.ndim - 1)
    out[k] = jax.lax.dynamic_update_slice(buf, rows[k].astype(buf.dtype), start)
  return out


def ring_sample(ring: dict, rng: Any, size: Any, shape: tuple[int, ...]) -> dict:
  """Rows drawn uniformly with replacement from the first `size` (the stored ones), leading axes `shape`."""
  ids = jax.random.randint(rng, shape, 0, size)
  return {k: v[ids] for k, v in ring.items()}
