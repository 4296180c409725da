"""Write rolled-out chunks of a vectorised environment as LAPO-chunk shards (format: `formats.py`).

The caller rolls the environment out (this module does not import `envs/`) and hands over chunks of `T` steps of
`N` environment copies; each chunk of each copy becomes one shard, a contiguous stream. `done[t]` follows the
'last' convention (the episode ended with the step taken in obs[t]), recorded in the owner marker. The directory
is claimed first (`ownership.py`: a directory the project did not create is never written) and the completion
marker with the dataset's summary is written last; an interrupted collection of ours is redone from scratch.
Shards are stored uncompressed so that readers memory-map them in place.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np

from vidrl_jax import io
from vidrl_jax.data import ownership


def returns_per_frame(done: np.ndarray, episode_return: np.ndarray) -> np.ndarray:
  """Per-frame return of the episode the frame belongs to: the return reported at the next episode end."""
  out = np.full(len(done), np.nan, np.float32)
  ends = np.flatnonzero(done)
  if len(ends):
    nxt = np.searchsorted(ends, np.arange(len(done)), side="left")
    ok = nxt < len(ends)
    out[ok] = episode_return[ends[nxt[ok]]]
  return out


def collect(chunks: Callable[[], Iterator[dict]], directory: str, meta: dict | None = None) -> dict:
  """Writes every chunk of `chunks()` to `directory` as shards, unless a finished collection is already there.

  A chunk holds (T, N, ...) arrays `obs`, `action`, `reward`, `done`, `episode_return` (the running return,
  final at `done`). `chunks` is only called when there is something to collect. Returns the summary stored in
  the completion marker (frames, episodes, mean and std of completed episode returns).
  """
  done_before = ownership.read_complete(directory) if ownership.owner(directory) is not None else None
  if done_before is not None:
    return done_before
  ownership.claim(directory, {"format": "lapo_chunks", "done": "last"})
  returns, frames = [], 0
  for c, traj in enumerate(chunks()):
    num_envs = np.shape(traj["done"])[1]
    for e in range(num_envs):
      done = np.asarray(traj["done"][:, e], bool)
      ep_ret = np.asarray(traj["episode_return"][:, e], np.float32)
      returns.extend(ep_ret[done].tolist())
      frames += len(done)
      io.write_npz(os.path.join(directory, f"shard_{c:04d}_{e:04d}.npz"), {
          "obs": np.asarray(traj["obs"][:, e], np.uint8),
          "ta": np.asarray(traj["action"][:, e], np.int32),
          "done": done,
          "rewards": np.asarray(traj["reward"][:, e], np.float32),
          "ep_returns": returns_per_frame(done, ep_ret),
      }, compress=False)
  summary = dict(meta or {})
  summary.update(frames=int(frames), episodes=len(returns),
                 mean_return=float(np.mean(returns)) if returns else float("nan"),
                 std_return=float(np.std(returns)) if returns else float("nan"))
  ownership.mark_complete(directory, summary)
  return summary
