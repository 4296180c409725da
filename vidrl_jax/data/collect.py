"""Roll a policy out in a vectorised environment and write its frames as dataset shards (format: `frames.py`).

Each chunk of `shard_len` steps of each environment copy becomes one shard, so a shard is one contiguous stream.
A `_COMPLETE.json` marker with the dataset's summary is written last: a directory without it is a partial
collection, which is deleted and redone on the next run, never read as a dataset.
"""

from __future__ import annotations

import glob
import os
from functools import partial
from typing import Callable

import jax
import numpy as np

from vidrl_jax import io
from vidrl_jax.envs import rollout
from vidrl_jax.envs.base import VecEnv

MARKER = "_COMPLETE.json"


def returns_per_frame(done: np.ndarray, episode_return: np.ndarray) -> np.ndarray:
  """Per-frame return of the episode the frame belongs to: the return reported at the next episode end."""
  out = np.full(len(done), np.nan, np.float32)
  ends = np.flatnonzero(done)
  if len(ends):
    nxt = np.searchsorted(ends, np.arange(len(done)), side="left")
    ok = nxt < len(ends)
    out[ok] = episode_return[ends[nxt[ok]]]
  return out


def collect(env: VecEnv, policy_fn: Callable, params, rng: jax.Array, steps_per_env: int, directory: str,
            shard_len: int, meta: dict | None = None) -> dict:
  """Writes `steps_per_env * env.num_envs` frames to `directory` (skipped if already complete).

  `policy_fn(params, obs, rng) -> action`. Returns the summary stored in the marker (frames, episodes, mean
  and std of completed episode returns).
  """
  marker = os.path.join(directory, MARKER)
  if os.path.exists(marker):
    return io.read_json(marker)
  os.makedirs(directory, exist_ok=True)
  for stale in glob.glob(os.path.join(directory, "*.npz")):
    os.remove(stale)

  rng, r_reset = jax.random.split(rng)
  env_state, obs = env.reset(r_reset)
  run_chunk = jax.jit(partial(rollout, env, policy_fn, num_steps=shard_len))
  returns = []
  num_chunks = -(-steps_per_env // shard_len)
  for c in range(num_chunks):
    rng, r = jax.random.split(rng)
    env_state, obs, traj = run_chunk(params, env_state, obs, r)
    traj = jax.device_get(traj)
    for e in range(env.num_envs):
      done = np.asarray(traj["done"][:, e], bool)
      ep_ret = np.asarray(traj["episode_return"][:, e], np.float32)
      returns.extend(ep_ret[done].tolist())
      io.write_npz(os.path.join(directory, f"shard_{c:04d}_{e:04d}.npz"), {
          "obs": np.asarray(traj["obs"][:, e], np.uint8),
          "ta": np.asarray(traj["action"][:, e], np.int32),
          "done": done,
          "rewards": np.asarray(traj["reward"][:, e], np.float32),
          "ep_returns": returns_per_frame(done, ep_ret),
      })
  summary = dict(meta or {})
  summary.update(frames=int(num_chunks * shard_len * env.num_envs), episodes=len(returns),
                 mean_return=float(np.mean(returns)) if returns else float("nan"),
                 std_return=float(np.std(returns)) if returns else float("nan"))
  io.write_json(marker, summary)
  return summary
