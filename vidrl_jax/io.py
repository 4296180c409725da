"""Atomic file writes (a reader, or a resumed run, never sees half a file) and cached JSON results."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable

import numpy as np


def _atomic(path: str, write) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _jsonable(x: Any):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.generic, np.ndarray)) or hasattr(x, "__array__"):
    arr = np.asarray(x)
    return arr.item() if arr.ndim == 0 else arr.tolist()
  return x


def write_json(path: str, data: Any) -> None:
  blob = json.dumps(_jsonable(data), indent=2, sort_keys=True).encode()
  _atomic(path, lambda f: f.write(blob))


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def cached_json(path: str, compute: Callable[[], Any]) -> Any:
  """The JSON result at `path`, or `compute()` written there atomically the first time: a rerun of the same
  workdir reads a finished step's result instead of computing it again."""
  if os.path.exists(path):
    return read_json(path)
  result = compute()
  write_json(path, result)
  return result


def write_npz(path: str, arrays: dict[str, np.ndarray], compress: bool = True) -> None:
  save = np.savez_compressed if compress else np.savez
  _atomic(path, lambda f: save(f, **arrays))
