"""Frame datasets on disk: shards of contiguous frames, and a sampler of windows that never cross an episode.

On-disk format (the official LAPO chunk keys, so their Procgen data loads unchanged). One `.npz` shard holds a
contiguous stretch of one environment's stream:

  obs         uint8 (T, H, W, C)   frames (Procgen 64x64x3; MinAtar 10x10xC with 0/255 channels)
  ta          int   (T,)           the true action taken in obs[t] (evaluation only: LAPO training never reads it)
  done        bool  (T,)           the episode ended with the step taken in obs[t]; obs[t+1] starts a new one
  rewards     float (T,)           reward of the step taken in obs[t]
  ep_returns  float (T,)           return of the episode obs[t] belongs to (NaN if it did not end in the shard)

A window of `length` frames starting at t is valid when done[t : t+length-1] are all False and it ends inside the
shard. (The official LAPO loader ignores `done` and samples windows that straddle two episodes.)
"""

from __future__ import annotations

import glob
import os
import zipfile

import numpy as np

from vidrl_jax.errors import VidrlError

REQUIRED = ("obs", "done")


def npz_files(directory: str, what: str) -> list[str]:
  """Sorted `.npz` files of a dataset directory (`what`: 'shards', 'trajectories'); one clear error when there
  are none. Shared by every on-disk dataset reader."""
  if not os.path.isdir(directory):
    raise VidrlError(f"dataset directory {directory!r} does not exist; run the data-collection stage first "
                     f"or point the config's data directory at an existing dataset")
  paths = sorted(glob.glob(os.path.join(directory, "*.npz")))
  if not paths:
    raise VidrlError(f"dataset directory {directory!r} holds no .npz {what}; run the data-collection stage "
                     f"first or point the config's data directory at an existing dataset")
  return paths


def shard_paths(directory: str) -> list[str]:
  """Sorted `.npz` shards of a dataset directory; one clear error when there are none."""
  return npz_files(directory, "shards")


def load_shard(path: str, keys: tuple[str, ...] = ("obs", "ta", "done", "rewards", "ep_returns"),
               required: tuple[str, ...] = REQUIRED) -> dict[str, np.ndarray]:
  """Reads one shard fully; truncated/corrupt files, missing keys and length mismatches are one-line errors."""
  try:
    with np.load(path, allow_pickle=False) as z:
      present = set(z.files)
      missing = [k for k in required if k not in present]
      if missing:
        raise VidrlError(f"shard {path} lacks the key(s) {missing} (it has {sorted(present)}); "
                         f"regenerate it or convert it to the LAPO chunk format")
      data = {k: z[k] for k in keys if k in present}
  except VidrlError:
    raise
  except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as e:
    raise VidrlError(f"shard {path} is truncated or corrupt ({type(e).__name__}: {e}); delete it and rerun "
                     f"data collection") from None
  lengths = {k: len(v) for k, v in data.items()}
  if len(set(lengths.values())) != 1:
    raise VidrlError(f"shard {path} has keys of different lengths {lengths}; every key needs one entry per frame")
  if data["obs"].dtype != np.uint8:
    raise VidrlError(f"shard {path} stores obs as {data['obs'].dtype}; frames must be uint8 (0..255)")
  return data


class FrameDataset:
  """All shards of a directory (or an explicit list) in memory, with an episode-respecting window sampler."""

  def __init__(self, paths: list[str] | str, window: int, obs_shape: tuple[int, ...] | None = None):
    if isinstance(paths, str):
      paths = shard_paths(paths)
    if window < 2:
      raise VidrlError(f"a window needs at least 2 frames, got {window}")
    shards = [load_shard(p) for p in paths]
    for p, s in zip(paths, shards):
      if obs_shape is not None and tuple(s["obs"].shape[1:]) != tuple(obs_shape):
        raise VidrlError(f"shard {p} has frames of shape {s['obs'].shape[1:]} but the config expects "
                         f"{tuple(obs_shape)}; use a dataset made for this environment or regenerate it")
    self.paths = list(paths)
    self.window = window
    self.obs = np.concatenate([s["obs"] for s in shards])
    self.done = np.concatenate([s["done"].astype(bool) for s in shards])
    n = len(self.obs)
    self.ta = (np.concatenate([s["ta"] for s in shards]).astype(np.int32)
               if all("ta" in s for s in shards) else None)
    self.rewards = (np.concatenate([s["rewards"] for s in shards]).astype(np.float32)
                    if all("rewards" in s for s in shards) else None)
    self.ep_returns = (np.concatenate([s["ep_returns"] for s in shards]).astype(np.float32)
                       if all("ep_returns" in s for s in shards) else None)
    ends = np.cumsum([len(s["obs"]) for s in shards])
    self.starts = valid_starts(self.done, ends, window)
    if len(self.starts) == 0:
      raise VidrlError(f"no window of {window} frames fits inside one episode of the dataset ({n} frames); "
                       f"collect longer episodes or use fewer context frames")

  def __len__(self) -> int:
    return len(self.obs)

  def windows(self, starts: np.ndarray) -> np.ndarray:
    """Frames (B, window, H, W, C) for the given start indices."""
    return self.obs[starts[:, None] + np.arange(self.window)]

  def sample_starts(self, seed: int, step: int, batch_size: int, process: int = 0) -> np.ndarray:
    """Window starts for training step `step`: a pure function of (seed, step, process) for exact resumption."""
    rng = np.random.default_rng([seed, step, process])
    return self.starts[rng.integers(0, len(self.starts), size=batch_size)]

  def sample(self, seed: int, step: int, batch_size: int, process: int = 0) -> dict[str, np.ndarray]:
    starts = self.sample_starts(seed, step, batch_size, process)
    return {"frames": self.windows(starts)}

  def actions_at(self, starts: np.ndarray, offset: int) -> np.ndarray:
    """True actions taken in frame `start + offset` (evaluation only)."""
    if self.ta is None:
      raise VidrlError(f"the dataset in {os.path.dirname(self.paths[0])} has no 'ta' key; "
                       f"true actions are needed for this evaluation")
    return self.ta[starts + offset]


def valid_starts(done: np.ndarray, shard_ends: np.ndarray, window: int) -> np.ndarray:
  """Indices t such that frames t..t+window-1 lie in one shard and one episode (done[t:t+window-1] all False)."""
  n = len(done)
  csum = np.concatenate([[0], np.cumsum(done.astype(np.int64))])
  t = np.arange(max(n - window + 1, 0))
  no_done = (csum[t + window - 1] - csum[t]) == 0
  shard_of_first = np.searchsorted(shard_ends, t, side="right")
  shard_of_last = np.searchsorted(shard_ends, t + window - 1, side="right")
  return t[no_done & (shard_of_first == shard_of_last)].astype(np.int64)

