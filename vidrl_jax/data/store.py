"""Arrays of `.npz` files without reading them into memory: memory-mapped in place, or through a one-time cache.

A member that `np.savez` stored uncompressed is memory-mapped where it lies in the zip file. A compressed member
(`np.savez_compressed`, e.g. the official LAPO chunks, AIME trajectories and DreamerV2 episodes) cannot be mapped:
it is decompressed once, in blocks of `BLOCK` bytes, into an uncompressed `.npy` under the cache directory and
that file is mapped. The cache lies in a directory the project owns (default `~/.cache/vidrl_jax/datasets`,
override with `$VIDRL_DATA_CACHE` or the `cache_dir` argument), never beside the user's files; an entry is keyed
by the source file's path, size and modification time, so a changed file is cached anew.

Everything here is local on purpose (memory maps need local files): a dataset in a bucket (`gs://...`) is first
downloaded whole into `<cache>/remote/` by `io.local_copy` (formats.py does it, once per object version), and its
local copy is read from then on. The file calls of this module are the allow-listed exceptions of tests/test_io.py.

`Files` keeps at most `max_open` arrays mapped (each map holds a file descriptor), least recently used first out,
so memory and descriptors do not grow with the number of files of a dataset.
"""

from __future__ import annotations

import collections
import hashlib
import os
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from vidrl_jax.errors import VidrlError

BLOCK = 1 << 20   # bytes decompressed at a time when caching a compressed member
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")


def default_cache_dir() -> str:
  return os.environ.get("VIDRL_DATA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vidrl_jax",
                                                            "datasets")


def _corrupt(path: str, e: Exception) -> VidrlError:
  return VidrlError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); replace the file (or, for data "
                    f"this project collected, delete its directory and rerun the collection)")


def _header(f) -> tuple[tuple[int, ...], np.dtype, bool]:
  version = np.lib.format.read_magic(f)
  if version == (1, 0):
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
  else:
    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
  return tuple(shape), np.dtype(dtype), bool(fortran)


class Member:
  """One array of an npz file: its shape and dtype from the header, and where its bytes are."""

  def __init__(self, path: str, key: str, shape, dtype, fortran: bool, compressed: bool, offset: int | None):
    self.path, self.key, self.shape, self.dtype = path, key, shape, dtype
    self.fortran, self.compressed, self.offset = fortran, compressed, offset


def members(path: str, source: str | None = None) -> dict[str, Member]:
  """The arrays of a local npz file (headers only; no data is read); a bad file is a one-sentence error naming
  `source` (the file's own path by default; formats.py passes the URL of a downloaded file)."""
  source = source or path
  out = {}
  try:
    with open(path, "rb") as raw, zipfile.ZipFile(raw) as zf:   # local-only: a local file or its local copy
      for info in zf.infolist():
        if not info.filename.endswith(".npy"):
          continue
        with zf.open(info) as f:
          shape, dtype, fortran = _header(f)
          header_len = f.tell()
        if dtype.hasobject:
          raise VidrlError(f"{source} stores {info.filename[:-4]!r} as Python objects; datasets need plain "
                           f"arrays")
        offset = None
        if info.compress_type == zipfile.ZIP_STORED:
          raw.seek(info.header_offset)
          fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
          offset = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1] + header_len
        out[info.filename[:-4]] = Member(path, info.filename[:-4], shape, dtype, fortran,
                                         info.compress_type != zipfile.ZIP_STORED, offset)
  except VidrlError:
    raise
  except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError, struct.error) as e:
    raise _corrupt(source, e) from None
  return out


def read_small(member: Member) -> np.ndarray:
  """A member read fully into memory (for per-step flags and other small arrays)."""
  try:
    with np.load(member.path, allow_pickle=False) as z:   # local-only: see the module docstring
      return np.asarray(z[member.key])
  except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError) as e:
    raise _corrupt(member.path, e) from None


def _cache_path(member: Member, cache_dir: str) -> str:
  st = os.stat(member.path)
  ident = f"{os.path.realpath(member.path)}|{st.st_size}|{st.st_mtime_ns}|{member.key}"
  return os.path.join(cache_dir, hashlib.sha1(ident.encode()).hexdigest()[:24] + ".npy")


def ensure_cached(member: Member, cache_dir: str) -> str:
  """The uncompressed `.npy` of a compressed member, written once (atomically) in blocks of BLOCK bytes."""
  target = _cache_path(member, cache_dir)
  if os.path.exists(target):   # local-only from here on: the cache is memory-mapped
    return target
  os.makedirs(cache_dir, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tmp-", suffix=".npy")
  os.close(fd)
  try:
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=member.dtype, shape=member.shape,
                                    fortran_order=member.fortran)
    flat = out.reshape(-1, order="A").view(np.uint8) if out.size else None
    try:
      with zipfile.ZipFile(member.path) as zf, zf.open(member.key + ".npy") as f:
        _header(f)
        done, total = 0, out.nbytes
        while done < total:
          chunk = f.read(min(BLOCK, total - done))
          if not chunk:
            raise EOFError(f"{member.key!r} ends after {done} of {total} bytes")
          flat[done:done + len(chunk)] = np.frombuffer(chunk, np.uint8)
          done += len(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError) as e:
      raise _corrupt(member.path, e) from None
    out.flush()
    del out, flat
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return target


def open_member(member: Member, cache_dir: str) -> np.ndarray:
  """A read-only memory map of the member (in place if stored, else of its cached copy)."""
  order = "F" if member.fortran else "C"
  if not member.compressed:
    if int(np.prod(member.shape)) == 0:
      return np.zeros(member.shape, member.dtype)
    mapped = np.memmap(member.path, member.dtype, mode="r", offset=member.offset, shape=member.shape, order=order)
  else:
    mapped = np.load(ensure_cached(member, cache_dir), mmap_mode="r")
  return np.asarray(mapped)     # a plain ndarray view of the map (faster indexing than the np.memmap subclass)


class Files:
  """An LRU of memory-mapped members: at most `max_open` maps (and file descriptors) at a time."""

  def __init__(self, cache_dir: str | None = None, max_open: int = 64):
    self.cache_dir = cache_dir or default_cache_dir()
    self.max_open = max(int(max_open), 1)
    self._open: collections.OrderedDict = collections.OrderedDict()

  def get(self, member: Member) -> np.ndarray:
    key = (member.path, member.key)
    if key in self._open:
      self._open.move_to_end(key)
      return self._open[key]
    arr = open_member(member, self.cache_dir)
    self._open[key] = arr
    while len(self._open) > self.max_open:
      self._open.popitem(last=False)
    return arr

  def __len__(self) -> int:
    return len(self._open)
