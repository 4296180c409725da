"""Trajectory datasets on disk (the AIME format), and a sampler of windows that never cross a trajectory.

On-disk format (the official AIME keys, so their released data loads unchanged). One `.npz` per trajectory of
T steps, i.e. T+1 rows:

  image        uint8   (T+1, 64, 64, 3)  frames (observation key; optional)
  <sensor>     float32 (T+1, D)          e.g. orientations (14), height (1), velocity (9), position (8); official
                                         files may store a scalar sensor as (T+1,): it is read as (T+1, 1)
  pre_action   float32 (T+1, A)          pre_action[t] is the action that led to row t; row 0 is zeros
  reward       float32 (T+1,)            reward received on arriving at row t
  is_first     bool    (T+1,)            row 0 of an episode
  is_last      bool    (T+1,)            last row of a trajectory (end of episode or time limit)
  is_terminal  bool    (T+1,)            the episode ended in a terminal state at row t

A `_COMPLETE.json` marker (the same name as `collect.py`'s) with the dataset's summary is written last by a
collector; released data has none and loads without it.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vidrl_jax import io
from vidrl_jax.data.collect import MARKER
from vidrl_jax.data.frames import npz_files
from vidrl_jax.errors import VidrlError

REQUIRED: tuple[str, ...] = ("pre_action", "reward", "is_first", "is_last", "is_terminal")
_FLAGS = ("is_first", "is_last", "is_terminal")


def _missing(source: str, missing: list[str], present: Sequence[str]) -> VidrlError:
  return VidrlError(f"{source} lacks the key(s) {missing} (it has {sorted(present)}); use observation keys the "
                    f"data has, or regenerate it in the AIME trajectory format")


def validate(traj: dict, obs_keys: Sequence[str], source: str) -> None:
  """One clear error naming `source` for missing keys, unequal lengths, fewer than 2 rows or non-finite floats."""
  keys = list(dict.fromkeys([*obs_keys, *REQUIRED]))
  missing = [k for k in keys if k not in traj]
  if missing:
    raise _missing(source, missing, list(traj))
  for k in keys:
    if np.ndim(traj[k]) == 0:
      raise VidrlError(f"{source} stores {k!r} as a scalar; every key needs one entry per step")
  lengths = {k: int(np.shape(traj[k])[0]) for k in keys}
  if len(set(lengths.values())) != 1:
    raise VidrlError(f"{source} has keys of different lengths {lengths}; every key needs one entry per step "
                     f"(T+1 rows); regenerate it")
  n = next(iter(lengths.values()))
  if n < 2:
    raise VidrlError(f"{source} has {n} step(s) but a trajectory needs at least 2 (the reset and one step); "
                     f"drop it or collect longer trajectories")
  if "image" in keys:
    image = traj["image"]
    if np.ndim(image) != 4 or np.asarray(image).dtype != np.uint8:
      raise VidrlError(f"{source} stores 'image' as {np.asarray(image).dtype} of shape {np.shape(image)}; "
                       f"frames must be uint8 (T+1, H, W, C)")
  for k in keys:
    a = np.asarray(traj[k])
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
      bad = int(np.flatnonzero(~np.isfinite(a).reshape(len(a), -1).all(axis=1))[0])
      raise VidrlError(f"{source} has a non-finite value in {k!r} (first at row {bad}); "
                       f"fix or drop this trajectory")


def normalise(traj: dict, obs_keys: Sequence[str]) -> dict[str, np.ndarray]:
  """`obs_keys` + REQUIRED as numpy with canonical dtypes and shapes; no copy where the input already fits.

  Sensor keys and pre_action become float32 (T+1, D) (a (T+1,) scalar becomes (T+1, 1)); reward float32
  (T+1,); flags bool (T+1,); image stays as it is (uint8).
  """
  out = {}
  for k in dict.fromkeys([*obs_keys, *REQUIRED]):
    a = np.asarray(traj[k])
    if k == "image":
      pass
    elif k in _FLAGS or k == "reward":
      if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
      a = a.astype(bool if k in _FLAGS else np.float32, copy=False)
    else:
      if a.ndim == 1:
        a = a[:, None]
      a = a.astype(np.float32, copy=False)
    out[k] = a
  return out


def write_trajectory(directory: str, index: int, traj: dict) -> str:
  """Validates `traj` (every non-required key is an observation) and writes `{index:06d}.npz` atomically."""
  path = os.path.join(directory, f"{index:06d}.npz")
  validate(traj, [k for k in traj if k not in REQUIRED], f"trajectory {path}")
  io.write_npz(path, {k: np.asarray(v) for k, v in traj.items()})
  return path


def list_trajectories(directory: str) -> list[str]:
  """Sorted `.npz` trajectories of a dataset directory; one clear error when there are none."""
  return npz_files(directory, "trajectories")


def load_trajectory(path: str, obs_keys: Sequence[str]) -> dict[str, np.ndarray]:
  """Reads `obs_keys` + REQUIRED of one file, normalised (see `normalise`) and validated."""
  keys = list(dict.fromkeys([*obs_keys, *REQUIRED]))
  source = f"trajectory {path}"
  try:
    with np.load(path, allow_pickle=False) as z:
      missing = [k for k in keys if k not in z.files]
      if missing:
        raise _missing(source, missing, z.files)
      raw = {k: z[k] for k in keys}
  except VidrlError:
    raise
  except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError) as e:
    raise VidrlError(f"{source} is truncated or corrupt ({type(e).__name__}: {e}); delete it and re-collect "
                     f"the data") from None
  validate(raw, obs_keys, source)
  return normalise(raw, obs_keys)


def load_trajectories(directories: str | Sequence[str], obs_keys: Sequence[str],
                      limit: int | None = None) -> list[dict]:
  """The trajectories of one or more directories (the first `limit` files of each, in sorted order)."""
  if isinstance(directories, str):
    directories = [directories]
  if limit is not None and limit < 1:
    raise VidrlError(f"the trajectory limit must be at least 1 (or None for all), got {limit}")
  return [load_trajectory(p, obs_keys) for d in directories for p in list_trajectories(d)[:limit]]


def mark_complete(directory: str, summary: dict) -> None:
  """Writes the `_COMPLETE.json` marker: the last write of a collection."""
  io.write_json(os.path.join(directory, MARKER), summary)


def read_complete(directory: str) -> dict | None:
  """The summary of a completed collection, or None when the marker is absent (a partial collection)."""
  path = os.path.join(directory, MARKER)
  if not os.path.exists(path):
    return None
  try:
    return io.read_json(path)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise VidrlError(f"completion marker {path} is corrupt ({e}); delete it to re-collect the data") from None


def concat_obs(obs: dict, keys: Sequence[str]):
  """Vector observation keys concatenated on the last axis as float32 (numpy in, numpy out; else jax)."""
  if not keys:
    raise VidrlError("concat_obs needs at least one observation key; list the sensor keys in the config")
  if "image" in keys:
    raise VidrlError("concat_obs takes vector observation keys only; encode 'image' with a network instead "
                     "and leave it out of the vector keys")
  missing = [k for k in keys if k not in obs]
  if missing:
    raise VidrlError(f"the observation lacks the key(s) {missing} (it has {sorted(obs)}); "
                     f"use keys the data has")
  parts = [obs[k] for k in keys]
  if all(isinstance(p, np.ndarray) for p in parts):
    return np.concatenate([p.astype(np.float32, copy=False) for p in parts], axis=-1)
  return jnp.concatenate([jnp.asarray(p, jnp.float32) for p in parts], axis=-1)


def episode_return(traj: dict) -> float:
  """Sum of the trajectory's rewards."""
  return float(np.sum(np.asarray(traj["reward"], np.float64)))


def _window(traj: dict, keys: Sequence[str], start: int, length: int) -> dict:
  """Rows start..start+length-1 of one (normalised) trajectory, without a batch axis."""
  s = slice(start, start + length)
  return {"obs": {k: traj[k][s] for k in keys}, "action": traj["pre_action"][s], "reward": traj["reward"][s],
          "is_first": traj["is_first"][s]}


def _stack(rows: list[dict]) -> dict:
  return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *rows)


def first_window(traj: dict, keys: Sequence[str], length: int) -> dict:
  """The first `length` rows of `traj` as a batch of 1 (same keys as `TrajectoryDataset.sample`, less 'index')."""
  validate(traj, keys, "the trajectory")
  t = normalise(traj, keys)
  n = len(t["reward"])
  if n < length:
    raise VidrlError(f"a window of {length} steps does not fit a trajectory of {n}; use a shorter window")
  return _stack([_window(t, keys, 0, length)])


class TrajectoryDataset:
  """Whole trajectories in memory (numpy; images stay uint8, nothing is concatenated), with a window sampler."""

  def __init__(self, trajectories: list[dict], obs_keys: Sequence[str], window: int, seed: int = 0):
    if window < 1:
      raise VidrlError(f"a window needs at least 1 step, got {window}")
    if seed < 0:
      raise VidrlError(f"the data seed must be non-negative, got {seed}")
    if not trajectories:
      raise VidrlError("the dataset holds no trajectories; collect or load some first")
    self.obs_keys = tuple(obs_keys)
    self.window = int(window)
    self.seed = int(seed)
    trajs = []
    for i, t in enumerate(trajectories):
      validate(t, self.obs_keys, f"trajectory {i}")
      trajs.append(normalise(t, self.obs_keys))
    ref = trajs[0]
    for i, t in enumerate(trajs):
      for k in (*self.obs_keys, "pre_action"):
        if t[k].shape[1:] != ref[k].shape[1:]:
          raise VidrlError(f"trajectory {i} has {k!r} of shape {t[k].shape[1:]} per step but trajectory 0 has "
                           f"{ref[k].shape[1:]}; all trajectories of a dataset must come from one environment")
    self.trajectories = trajs
    self.lengths = np.array([len(t["reward"]) for t in trajs], np.int64)
    counts = np.maximum(self.lengths - self.window + 1, 0)
    if counts.sum() == 0:
      raise VidrlError(f"no trajectory has at least {self.window} steps (the longest has {self.lengths.max()}); "
                       f"use a shorter window (the config's window, e.g. --config.window={self.lengths.max()}) "
                       f"or collect longer trajectories")
    self._ends = np.cumsum(counts)                       # window starts of trajectory i: _ends[i-1] .. _ends[i]-1
    self._counts = counts

  @property
  def num_trajectories(self) -> int:
    return len(self.trajectories)

  @property
  def num_steps(self) -> int:
    """Total rows (frames) over all trajectories."""
    return int(self.lengths.sum())

  @property
  def num_windows(self) -> int:
    return int(self._ends[-1])

  @property
  def action_dim(self) -> int:
    return int(self.trajectories[0]["pre_action"].shape[-1])

  def locate(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(trajectory index, start row) of flat window numbers in [0, num_windows)."""
    index = np.searchsorted(self._ends, flat, side="right")
    return index.astype(np.int64), (flat - (self._ends[index] - self._counts[index])).astype(np.int64)

  def gather(self, index: np.ndarray, start: np.ndarray, length: int | None = None) -> dict:
    """Windows of `length` (default: the dataset's window) rows at the given (trajectory, start) pairs."""
    length = self.window if length is None else length
    batch = _stack([_window(self.trajectories[i], self.obs_keys, s, length) for i, s in zip(index, start)])
    batch["index"] = np.asarray(index, np.int64)
    return batch

  def sample(self, step: int, batch_size: int, process_index: int = 0, process_count: int = 1) -> dict:
    """This process's rows of the batch of training step `step`, uniform over all window starts.

    A pure function of (seed, step, process_index, process_count): the global batch is drawn from (seed, step)
    and process p takes rows p*b .. (p+1)*b-1 with b = batch_size // process_count, so a resumed run and every
    process agree on it.
    """
    if step < 0:
      raise VidrlError(f"the training step must be non-negative, got {step}")
    if process_count < 1 or not 0 <= process_index < process_count:
      raise VidrlError(f"process index {process_index} is not in [0, {process_count}); pass jax.process_index() "
                       f"and jax.process_count()")
    if batch_size < 1 or batch_size % process_count:
      raise VidrlError(f"the batch size {batch_size} must be a positive multiple of the process count "
                       f"{process_count}; change the config's batch size")
    rng = np.random.default_rng([self.seed, step])
    flat = rng.integers(0, self.num_windows, size=batch_size)
    b = batch_size // process_count
    index, start = self.locate(flat[process_index * b:(process_index + 1) * b])
    return self.gather(index, start)

  def split(self, fraction: float, seed: int) -> tuple["TrajectoryDataset", "TrajectoryDataset"]:
    """(first, second) with round(fraction * n) random trajectories in the first, at least 1 in each part."""
    n = self.num_trajectories
    if not 0 < fraction < 1:
      raise VidrlError(f"the split fraction must lie strictly between 0 and 1, got {fraction}")
    if n < 2:
      raise VidrlError(f"splitting needs at least 2 trajectories, the dataset has {n}; collect more")
    k = min(max(int(round(fraction * n)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    parts = sorted(perm[:k].tolist()), sorted(perm[k:].tolist())
    return tuple(TrajectoryDataset([self.trajectories[i] for i in p], self.obs_keys, self.window, self.seed)
                 for p in parts)

  def windows(self, window: int | None = None) -> Iterator[dict]:
    """Every non-overlapping window (rows 0..w-1, w..2w-1, ...) of every trajectory, each as a batch of 1."""
    w = self.window if window is None else window
    for i, n in enumerate(self.lengths):
      for s in range(0, int(n) - w + 1, w):
        yield self.gather(np.array([i]), np.array([s]), w)
