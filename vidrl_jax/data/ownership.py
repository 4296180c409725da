"""Which dataset directories the project may write: only those it created and marked as its own.

A collector claims a directory before writing anything: it creates it (or takes an existing empty one) and writes
`_VIDRL_DATASET.json` FIRST (who wrote it, the format, what `done` means in it). The `_COMPLETE.json` marker with
the dataset's summary is written LAST. So:

  no directory, or an empty one     -> the project may create the dataset there
  owner marker, no completion       -> the project's own interrupted collection: its files may be redone
  owner marker and completion       -> a finished dataset: read it
  anything else (no owner marker)   -> a dataset the project did not write: it is read, never deleted, added to
                                       or overwritten; a collector pointed at it stops with one sentence

Datasets collected by earlier versions of the project carry `_COMPLETE.json` without an owner marker; they are
read as they are (like any foreign dataset) and never rewritten.
"""

from __future__ import annotations

import json

import jax

from vidrl_jax import io
from vidrl_jax.errors import VidrlError

OWNER = "_VIDRL_DATASET.json"
MARKER = "_COMPLETE.json"


def _read(path: str) -> dict:
  try:
    return io.read_json(path)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise VidrlError(f"marker {path} is corrupt ({e}); if the project wrote this directory, delete it to "
                     f"collect the data again") from None


def owner(directory: str) -> dict | None:
  """The owner marker's content, or None if the project did not create the directory."""
  path = io.join(directory, OWNER)
  return _read(path) if io.exists(path) else None


def read_complete(directory: str) -> dict | None:
  """The summary of a finished collection, or None when the completion marker is absent."""
  path = io.join(directory, MARKER)
  return _read(path) if io.exists(path) else None


def state(directory: str) -> str:
  """'absent', 'partial' (the project's own, unfinished), 'complete' (the project's own) or 'foreign'."""
  if not io.exists(directory) or (io.isdir(directory) and not io.listdir(directory)):
    return "absent"
  if owner(directory) is None:
    return "foreign"
  return "complete" if read_complete(directory) is not None else "partial"


def claim(directory: str, meta: dict, restart: bool = True) -> None:
  """Makes `directory` the project's own before anything is written to it. With `restart`, the .npz files of an
  interrupted collection of ours are removed (a collector that resumes file by file passes False).
  A directory the project did not create is never touched: one-sentence error.

  Several processes (a multi-host run collecting into one shared workdir) all call it: they first agree on the
  directory's state (a barrier before anyone writes, so each raises the same error or none), then process 0 alone
  claims it and removes stale files, and the others wait for that before they write their (identical) files."""
  _barrier(f"claim-check {directory}")
  s = state(directory)
  _barrier(f"claim-checked {directory}")
  if s == "foreign":
    raise VidrlError(f"{directory} holds files the project did not write (no {OWNER}); it is never written "
                     f"into: use it as a dataset as it is, or point the config's data directory elsewhere")
  if s == "complete":
    raise VidrlError(f"{directory} already holds a finished dataset; read it instead of collecting again")
  if jax.process_index() == 0:
    _claim(directory, s, meta, restart)
  _barrier(f"claimed {directory}")


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _claim(directory: str, s: str, meta: dict, restart: bool) -> None:
  """Process 0's part of `claim` for the state `s` ('absent' or 'partial')."""
  if s == "absent":
    io.makedirs(directory)
    io.write_json(io.join(directory, OWNER), {"created_by": "vidrl_jax", **meta})
    return
  if not restart:
    return
  for stale in io.glob(io.join(directory, "*.npz")):   # ours, interrupted: redo
    io.remove(stale)


def mark_complete(directory: str, summary: dict) -> None:
  """The last write of a collection (only into a directory the project claimed)."""
  if owner(directory) is None:
    raise VidrlError(f"{directory} was not claimed by the project (no {OWNER}); claim it before collecting")
  io.write_json(io.join(directory, MARKER), summary)


def claim_output(directory: str, fmt: str, meta: dict) -> None:
  """Claims `directory` for a report of format `fmt` (e.g. an aggregation over seeds): refused, with one sentence,
  when it holds files the project did not write or the project's files of another format; reused when an earlier
  report of the same format wrote it."""
  if state(directory) == "foreign":
    raise VidrlError(f"{directory} holds files the project did not write (no {OWNER}); it is never written into: "
                     f"pass a new or empty --out")
  current = owner(directory) if io.isdir(directory) else None
  if current is not None and current.get("format") != fmt:
    raise VidrlError(f"{directory} holds the project's {current.get('format')!r} files, not {fmt!r}; pass another "
                     f"--out")
  claim(directory, {"format": fmt, **meta}, restart=False)
