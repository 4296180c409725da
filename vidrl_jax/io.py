"""The project's one file API: every file it reads, writes, lists or deletes goes through here, so a workdir or a
dataset directory may be a local path or a bucket URL (`gs://...`, `s3://...`).

Local paths (no `scheme://`, or `file://`) use the operating system directly, as before. A write goes to a temp
file beside the target and is renamed over it (`os.replace`), so a reader, or a resumed run, never sees half a file.

URLs go through the fsspec filesystem of their protocol (`fsspec.core.url_to_fs`; `gs://` needs the `gcsfs`
package, `s3://` `s3fs`: requirements-tpu.txt installs gcsfs). A write is staged in a local temp file and uploaded
with one `put_file`: an object store makes an object visible only once its upload is complete (GCS, S3), so the
final object is written directly, never half-visible, without a temp object and a server-side copy (the staged
file needs local disk space for the largest file written, e.g. a replay buffer's checkpoint). Object stores
have no directories: `makedirs` is a no-op there and a "directory" exists while an object lies under it. URL
support targets object stores (gs://, s3://, az://) and fsspec's `memory://`, which the tests use.
Paths are joined with `join` (`os.path.join` keeps `scheme://` intact); `abspath` leaves URLs as they are.

What stays local on purpose (memory maps and OS-level caches cannot live in a bucket) is listed, with the reason,
in tests/test_io.py's allow-list: the uncompressed dataset cache (data/store.py, memory-mapped) and downloads of
bucket datasets into it (`local_copy`).
"""

from __future__ import annotations

import builtins
import glob as _glob
import hashlib
import io as _io
import json
import os
import shutil
import tempfile
from typing import Any, Callable

import fsspec
import numpy as np

from vidrl_jax.errors import VidrlError

join = os.path.join


def is_url(path: str) -> bool:
  """True for `scheme://...` paths other than `file://` (those go through fsspec)."""
  protocol, _ = fsspec.core.split_protocol(str(path))
  return protocol not in (None, "file", "local")


def _local(path: str) -> str:
  return fsspec.core.split_protocol(str(path))[1] if str(path).startswith("file://") else str(path)


def _fs(path: str):
  """(filesystem, path inside it) of a URL; a protocol whose package is missing is a one-sentence error."""
  try:
    return fsspec.core.url_to_fs(path)
  except (ImportError, ValueError) as e:
    raise VidrlError(f"cannot open {path!r} ({e}); install the filesystem package of its protocol (gcsfs for "
                     f"gs://, s3fs for s3://) or use a local path") from None


def abspath(path: str) -> str:
  """Local paths made absolute; URLs unchanged (`os.path.abspath` would turn `gs://b/x` into `$PWD/gs:/b/x`)."""
  return path if is_url(path) else os.path.abspath(_local(path))


def open(path: str, mode: str = "r"):  # noqa: A001  (the module's reading `open`, for io.open(path))
  """A file object for reading (`r`, `rb`); writes go through the atomic `write_*` functions."""
  if any(c in mode for c in "wax+"):
    raise ValueError(f"io.open is for reading (mode {mode!r}); use io.write_bytes/write_text/write_json")
  if not is_url(path):
    return builtins.open(_local(path), mode)
  fs, p = _fs(path)
  return fs.open(p, mode)


def exists(path: str) -> bool:
  if not is_url(path):
    return os.path.exists(_local(path))
  fs, p = _fs(path)
  return fs.exists(p)


def isdir(path: str) -> bool:
  if not is_url(path):
    return os.path.isdir(_local(path))
  fs, p = _fs(path)
  return fs.isdir(p)


def makedirs(path: str) -> None:
  """Creates a local directory and its parents if missing. A no-op for URLs: object stores have no directories
  (a write creates its prefix), and gcsfs's `makedirs` would create a missing bucket instead of failing."""
  if not is_url(path):
    os.makedirs(_local(path), exist_ok=True)


def listdir(path: str) -> list[str]:
  """Sorted names (not paths) of the entries of a directory; [] when it does not exist."""
  if not is_url(path):
    return sorted(os.listdir(_local(path))) if os.path.isdir(_local(path)) else []
  fs, p = _fs(path)
  return sorted(os.path.basename(e.rstrip("/")) for e in fs.ls(p, detail=False)) if fs.isdir(p) else []


def glob(pattern: str) -> list[str]:
  """Sorted paths matching `pattern`, spelled as the pattern's directory (wildcards in the last part only)."""
  if not is_url(pattern):
    return sorted(_glob.glob(_local(pattern)))
  directory = os.path.dirname(pattern)
  if _glob.has_magic(directory):
    raise ValueError(f"io.glob takes wildcards in the last path component only, got {pattern!r}")
  fs, p = _fs(pattern)
  return sorted(join(directory, os.path.basename(m)) for m in fs.glob(p))


def remove(path: str) -> None:
  if not is_url(path):
    os.remove(_local(path))
    return
  fs, p = _fs(path)
  fs.rm_file(p)


def rmtree(path: str) -> None:
  """Deletes a directory the project wrote, with everything under it (nothing when it does not exist)."""
  if not is_url(path):
    if os.path.isdir(_local(path)):
      shutil.rmtree(_local(path))
    return
  fs, p = _fs(path)
  if fs.exists(p):
    fs.rm(p, recursive=True)


def _atomic(path: str, write: Callable) -> None:
  """Calls `write(binary file)` and publishes the result at `path` only once `write` has returned."""
  local = not is_url(path)
  target = abspath(path)
  directory = os.path.dirname(target) if local else None
  if local:
    os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    if local:
      os.replace(tmp, target)
    else:
      fs, p = _fs(path)
      fs.put_file(tmp, p)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
  _atomic(path, lambda f: f.write(data))


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode())


def append_text(path: str, text: str) -> None:
  """Appends `text` to a file (created if missing). Locally one `O_APPEND` write, so lines land whole. Object stores
  cannot append: the object is read and rewritten whole (atomically), so callers batch their appends."""
  if not is_url(path):
    makedirs(os.path.dirname(abspath(path)))
    with builtins.open(_local(path), "a") as f:
      f.write(text)
    return
  old = b""
  if exists(path):
    with open(path, "rb") as f:
      old = f.read()
  write_bytes(path, old + text.encode())


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
  write_text(path, json.dumps(_jsonable(data), indent=2, sort_keys=True))


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def cached_json(path: str, compute: Callable[[], Any]) -> Any:
  """The JSON result at `path`, or `compute()` written there atomically the first time: a rerun of the same
  workdir reads a finished step's result instead of computing it again. Every process computes (a computation
  may hold collectives); process 0 alone writes."""
  if exists(path):
    return read_json(path)
  result = compute()
  if _process_index() == 0:
    write_json(path, result)
  return result


def _process_index() -> int:
  import jax   # imported here: the file API itself needs no JAX
  return jax.process_index()


def write_npz(path: str, arrays: dict[str, np.ndarray], compress: bool = True) -> None:
  save = np.savez_compressed if compress else np.savez
  _atomic(path, lambda f: save(f, **arrays))


def load_npz(path: str) -> dict[str, np.ndarray]:
  """Every array of an npz file, read into memory (a URL's bytes are fetched whole: `np.load` needs to seek)."""
  if is_url(path):
    with open(path, "rb") as f:
      source = _io.BytesIO(f.read())
  else:
    source = _local(path)
  with np.load(source, allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


_VERSION_FIELDS = ("size", "generation", "md5Hash", "ETag", "etag", "LastModified", "updated", "mtime", "created")


def local_copy(path: str, cache_dir: str) -> str:
  """`path` itself when local; a URL's file downloaded once into `cache_dir` (atomically), keyed by the URL and
  the object's version (size, generation / etag / modification time as its filesystem reports them), so a
  rewritten object is fetched anew. For readers that need a local file: memory maps (data/store.py)."""
  if not is_url(path):
    return _local(path)
  fs, p = _fs(path)
  info = fs.info(p)
  version = "|".join(str(info.get(k)) for k in _VERSION_FIELDS)
  key = hashlib.sha1(f"{path}|{version}".encode()).hexdigest()[:24]
  target = os.path.join(cache_dir, "remote", f"{key}-{os.path.basename(p)}")
  if not os.path.exists(target):   # local-only: the dataset cache (see the module docstring)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".tmp-")
    os.close(fd)
    try:
      fs.get_file(p, tmp)
      os.replace(tmp, target)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  return target
