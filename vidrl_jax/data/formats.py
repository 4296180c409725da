"""Format readers: official LAPO chunks, AIME trajectories and DreamerV2/APV episodes, loaded unchanged.

Each reader checks the files' headers (keys, lengths, shapes, dtypes: one-sentence errors), maps the format's keys
onto the rows of `sequence.SequenceDataset` and returns it; nothing but the per-row episode flags is read.

LAPO chunks (`lapo_chunks`; official data and this project's collector): one `.npz` per contiguous stretch of
one environment's stream, keys `obs` uint8 (T, 64, 64, 3) [or MinAtar (T, 10, 10, C)], `ta` int (T,) the action
taken in obs[t], `done` bool (T,), `rewards` (T,) of the step taken in obs[t], `ep_returns`, `values` (T,).
Read as obs['image'] = obs, action[t] = ta[t-1], reward[t] = rewards[t-1] (zero on an episode's first row and on
a chunk's first row, whose previous step is not in the file), extras 'ep_returns' and 'values' as stored.

What `done[t]` means differs between writers, so the reader takes a `done` convention:
  'last'   done[t]: the episode ended with the step taken in obs[t]; obs[t+1] starts the next one (this
           project's collector, `collect.py`; recorded in its owner marker);
  'first'  done[t]: obs[t] is the first frame of a new episode (the previous step ended the last one).
The official chunks follow 'first'. Their writer is not in schmidtdominik/LAPO (the data is a download), but its
PPO loop, whose buffer has the same fields (obs, actions, rewards, dones, values), stores the flag returned by the
*previous* step beside the current frame, `lapo/ppo.py` (commit c3844f7) lines 237-238 and 255-258:
    buf["obs"][step] = next_obs
    buf["dones"][step] = next_done
    ...
    next_obs, reward, done, info = envs.step(action.cpu().numpy())
    next_done = torch.from_numpy(done).to(device).float()
and `ProcgenEnv` (lapo/env_utils.py) resets automatically, so the frame stored with done = 1 is the new episode's
first frame (its GAE reads `nextnonterminal = 1.0 - buf["dones"][t + 1]`, line 131: the CleanRL convention). This
is inferred from the loop that matches the files, not read from their writer; the config's `data.done`
overrides. The official loader (`lapo/data_loader.py`) ignores `done` and its windows straddle episodes; ours
never do. With `done=None` the convention comes from the directory's owner marker, 'last' for data of earlier
versions of this project (`_COMPLETE.json` without owner marker), else 'first' (official data).

Episode files (`episodes`; AIME and DreamerV2/APV): one `.npz` per episode, observation keys (`image` uint8
(T+1, H, W, C), sensors (T+1, D) or (T+1,)), `pre_action` (AIME) or `action` (DreamerV2: `action[t]` led to
obs t, row 0 zeros, as AIME's `pre_action`: dreamerv2/common/driver.py lines 37-40 store the reset observation
with a zero action, lines 50-52 each later observation with the action that produced it; APV's replay.py is the
same), `reward` (reward[t] received with obs t), `is_first`, `is_last`, `is_terminal`, maybe `discount`. Actions and
rewards are optional (APV's action-free videos); `is_first` splits a file holding several episodes; without it
each file is one episode.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from vidrl_jax import io
from vidrl_jax.data import ownership, store
from vidrl_jax.data.sequence import RESIDENT_BYTES, Field, SequenceDataset, Source
from vidrl_jax.errors import VidrlError

DONE_CONVENTIONS = ("last", "first")
EPISODE_RESERVED = ("pre_action", "action", "reward", "is_first", "is_last", "is_terminal", "discount")


def npz_files(directory: str, what: str) -> list[str]:
  """Sorted `.npz` files of a dataset directory, local or a bucket URL (`what`: 'shards', 'episodes'); one clear
  error when none."""
  if not io.isdir(directory):
    raise VidrlError(f"dataset directory {directory!r} does not exist; run the data-collection stage first "
                     f"or point the config's data directory at an existing dataset")
  paths = io.glob(io.join(directory, "*.npz"))
  if not paths:
    raise VidrlError(f"dataset directory {directory!r} holds no .npz {what}; run the data-collection stage "
                     f"first or point the config's data directory at an existing dataset")
  return paths


def _members(path: str, cache_dir: str) -> dict[str, store.Member]:
  """The arrays of one dataset file; a file in a bucket is read from its local copy (`io.local_copy`)."""
  return store.members(io.local_copy(path, cache_dir), source=path)


def _check_lengths(name: str, columns: Mapping, keys: Sequence[str]) -> int:
  lengths = {k: int(columns[k].shape[0]) if len(columns[k].shape) else -1 for k in keys}
  if -1 in lengths.values() or len(set(lengths.values())) != 1:
    raise VidrlError(f"{name} has keys of different lengths {lengths}; every key needs one entry per step")
  return next(iter(lengths.values()))


def _check_image(name: str, columns: Mapping, key: str) -> None:
  c = columns[key]
  if np.dtype(c.dtype) != np.uint8 or len(c.shape) != 4:
    raise VidrlError(f"{name} stores {key!r} as {np.dtype(c.dtype)} of shape {tuple(c.shape)}; frames must be "
                     f"uint8 (T, H, W, C)")


def _same_rows(sources: Sequence[Source], keys: Sequence[str]) -> None:
  ref = sources[0]
  for s in sources[1:]:
    for k in keys:
      if s.row_shape(k) != ref.row_shape(k):
        raise VidrlError(f"{s.name} has {k!r} of shape {s.row_shape(k)} per step but {ref.name} has "
                         f"{ref.row_shape(k)}; all files of a dataset must come from one environment")


def _flag(col) -> np.ndarray:
  a = store.read_small(col) if isinstance(col, store.Member) else np.asarray(col)
  return a.reshape(len(a), -1)[:, 0].astype(bool) if a.ndim > 1 else a.astype(bool)


def _prepare(files: store.Files, sources: Sequence[Source], keys: Sequence[str]) -> None:
  """Caches every compressed member that batches read (once; see store.py), so opening surfaces bad files."""
  for s in sources:
    for k in keys:
      col = s.columns[k]
      if isinstance(col, store.Member) and col.compressed:
        store.ensure_cached(col, files.cache_dir)


def detect_done(directory: str) -> str:
  """The `done` convention of a LAPO-chunk directory (see the module docstring)."""
  mine = ownership.owner(directory)
  if mine is not None:
    return mine.get("done", "last")
  return "last" if ownership.read_complete(directory) is not None else "first"


def lapo_chunks(directory: str, done: str | None = None, obs_shape: Sequence[int] | None = None,
                cache_dir: str | None = None, max_open: int = 64,
                resident_bytes: int = RESIDENT_BYTES) -> SequenceDataset:
  """The LAPO chunks of `directory` as a SequenceDataset (obs key 'image'); `done`: 'last', 'first' or None.
  `cache_dir`, `max_open` (store.Files) and `resident_bytes` (sequence.py) bound disk copies and memory."""
  done = detect_done(directory) if done is None else done
  if done not in DONE_CONVENTIONS:
    raise VidrlError(f"unknown done convention {done!r}; use 'last' (done marks an episode's last frame) or "
                     f"'first' (done marks a new episode's first frame, the official LAPO chunks)")
  files = store.Files(cache_dir, max_open)
  sources = []
  for path in npz_files(directory, "shards"):
    cols = _members(path, files.cache_dir)
    missing = [k for k in ("obs", "done") if k not in cols]
    if missing:
      raise VidrlError(f"shard {path} lacks the key(s) {missing} (it has {sorted(cols)}); regenerate it or "
                       f"convert it to the LAPO chunk format")
    n = _check_lengths(f"shard {path}", cols, [k for k in ("obs", "done", "ta", "rewards", "ep_returns", "values")
                                               if k in cols])
    _check_image(f"shard {path}", cols, "obs")
    if obs_shape is not None and tuple(cols["obs"].shape[1:]) != tuple(obs_shape):
      raise VidrlError(f"shard {path} has frames of shape {tuple(cols['obs'].shape[1:])} but the config expects "
                       f"{tuple(obs_shape)}; use a dataset made for this environment or regenerate it")
    sources.append(Source(path, n, cols))
  _same_rows(sources, ["obs"])
  everywhere = lambda k: all(k in s.columns for s in sources)
  is_first = []
  for s in sources:
    d = _flag(s.columns["done"])
    is_first.append(d if done == "first" else np.concatenate([[False], d[:-1]]))
  obs = {"image": Field("obs", "image")}
  action = Field("ta", "action", shift=1) if everywhere("ta") else None
  reward = Field("rewards", "scalar", shift=1) if everywhere("rewards") else None
  extras = {k: Field(k, "scalar") for k in ("ep_returns", "values") if everywhere(k)}
  _prepare(files, sources, ["obs"] + [f.source for f in (action, reward, *extras.values()) if f is not None])
  return SequenceDataset(directory, sources, is_first, obs, action, reward, extras, files, resident_bytes)


def _episode_dataset(name: str, sources: list[Source], obs_keys: Sequence[str] | None, files: store.Files,
                     resident_bytes: int, actions: bool = True) -> SequenceDataset:
  if obs_keys is None:
    obs_keys = [k for k in sources[0].columns if k not in EPISODE_RESERVED and not k.startswith("log_")]
  obs_keys = list(obs_keys)
  has = lambda k: [k in s.columns for s in sources]
  action_key = "pre_action" if all(has("pre_action")) else "action" if all(has("action")) else None
  if not actions:
    action_key = None
  for s in sources:
    missing = [k for k in obs_keys if k not in s.columns]
    if missing:
      raise VidrlError(f"{s.name} lacks the key(s) {missing} (it has {sorted(s.columns)}); use observation keys "
                       f"the data has")
    if actions and action_key is None and ("pre_action" in s.columns or "action" in s.columns):
      raise VidrlError(f"{s.name} has actions but other episodes of {name} do not; keep action-labelled and "
                       f"action-free episodes in separate datasets")
    used = obs_keys + [k for k in (action_key, "reward", "is_first", "is_last", "is_terminal") if k in s.columns]
    n = _check_lengths(s.name, s.columns, used)
    if n < 1:
      raise VidrlError(f"{s.name} has no steps; drop it or collect longer episodes")
    if "image" in obs_keys:
      _check_image(s.name, s.columns, "image")
    s.length = n
  _same_rows(sources, obs_keys + ([action_key] if action_key else []))
  is_first = []
  for s in sources:
    f = _flag(s.columns["is_first"]) if "is_first" in s.columns else np.zeros(s.length, bool)
    f[0] = True
    is_first.append(f)
  obs = {k: Field(k, "image" if k == "image" else "vector") for k in obs_keys}
  action = Field(action_key, "action") if action_key else None
  reward = Field("reward", "scalar") if actions and all(has("reward")) else None
  extras = {k: Field(k, "flag") for k in ("is_last", "is_terminal") if all(has(k))}
  _prepare(files, sources, obs_keys + [f.source for f in (action, reward, *extras.values()) if f is not None])
  return SequenceDataset(name, sources, is_first, obs, action, reward, extras, files, resident_bytes)


def episodes(directories: str | Sequence[str], obs_keys: Sequence[str] | None = None, limit: int | None = None,
             cache_dir: str | None = None, max_open: int = 64,
             resident_bytes: int = RESIDENT_BYTES, actions: bool = True) -> SequenceDataset:
  """The episode files (AIME / DreamerV2 / APV) of one or more directories, the first `limit` of each in sorted
  order; `obs_keys` None = every key that is not an action, reward or flag. `actions=False` reads none of their
  actions and rewards (action-free video: files with and without actions may then be mixed)."""
  if isinstance(directories, str):
    directories = [directories]
  if limit is not None and limit < 1:
    raise VidrlError(f"the episode limit must be at least 1 (or None for all), got {limit}")
  files = store.Files(cache_dir, max_open)
  sources = [Source(p, 0, _members(p, files.cache_dir)) for d in directories for p in npz_files(d, "episodes")[:limit]]
  return _episode_dataset(", ".join(directories), sources, obs_keys, files, resident_bytes, actions)


def from_episodes(episodes_: Sequence[Mapping[str, np.ndarray]], obs_keys: Sequence[str] | None = None,
                  name: str = "in-memory episodes") -> SequenceDataset:
  """Episodes held in memory (dicts with the episode-file keys) as a SequenceDataset."""
  sources = [Source(f"episode {i}", 0, {k: np.asarray(v) for k, v in e.items()}) for i, e in enumerate(episodes_)]
  if not sources:
    raise VidrlError(f"the dataset {name} holds no episodes; collect data or point the config at a dataset")
  return _episode_dataset(name, sources, obs_keys, store.Files(), RESIDENT_BYTES)
