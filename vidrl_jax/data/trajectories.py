"""Trajectories on disk in the AIME format: the writer and its checks, and the vector-observation helper.

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

Episodes are read (memory-mapped, never loaded whole) by `formats.episodes` into a `sequence.SequenceDataset`;
this module writes them (uncompressed, so readers map them in place) and checks them. A collector claims its
directory and marks it complete through `ownership.py`; released data has no markers and is only ever read.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from vidrl_jax import io
from vidrl_jax.errors import VidrlError

REQUIRED: tuple[str, ...] = ("pre_action", "reward", "is_first", "is_last", "is_terminal")


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


def write_trajectory(directory: str, index: int, traj: dict) -> str:
  """Validates `traj` (every non-required key is an observation) and writes `{index:06d}.npz` atomically."""
  path = os.path.join(directory, f"{index:06d}.npz")
  validate(traj, [k for k in traj if k not in REQUIRED], f"trajectory {path}")
  io.write_npz(path, {k: np.asarray(v) for k, v in traj.items()}, compress=False)
  return path


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
