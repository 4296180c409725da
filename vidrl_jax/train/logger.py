"""Metrics to `metrics.jsonl` and TensorBoard event files, a finiteness check, and the final `results.json`.

Every file goes through `vidrl_jax.io`, so the workdir may be a bucket URL. A local workdir gets each metrics row
appended at once and TensorBoard events written in place, as before. Object stores cannot append, so for a URL
workdir rows are batched and the object is rewritten at most every `flush_secs` seconds and on `flush`/`close`
(the loop flushes at the end of every stage), and TensorBoard writes its events into a local staging directory
whose files are uploaded to `<workdir>/tb/` at the same moments: tensorboardX writes gs:// and s3:// only with
extra cloud packages and no other fsspec protocol, and this way every protocol works the same.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from typing import Mapping

import jax
import numpy as np

from vidrl_jax import io
from vidrl_jax.errors import VidrlError


class MetricWriter:
  """One writer per workdir. Each row is `{"stage", "step", "time", <metric>: value, ...}`.

  Only process 0 writes (multi-host runs log once).
  """

  def __init__(self, workdir: str, flush_secs: float = 30.0):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0
    self.path = io.join(workdir, "metrics.jsonl")
    self.remote = io.is_url(workdir)
    self.flush_secs = float(flush_secs)
    self._tb = None
    self._staging = None      # URL workdir: local directory of the TensorBoard events, uploaded on sync
    self._pending: list[str] = []
    self._synced = time.monotonic()
    if self.enabled:
      io.makedirs(workdir)

  def _board(self):
    if self._tb is None:
      from tensorboardX import SummaryWriter  # imported lazily: only process 0 needs it
      logdir = io.join(self.workdir, "tb")
      if self.remote:
        self._staging = tempfile.TemporaryDirectory(prefix="vidrl-tb-")
        logdir = self._staging.name
      self._tb = SummaryWriter(logdir, flush_secs=30)
    return self._tb

  def write(self, stage: str, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled or not metrics:
      return
    row = {"stage": stage, "step": int(step), "time": round(time.time(), 3)}
    row.update({k: _scalar(v) for k, v in metrics.items()})
    self._pending.append(json.dumps(row) + "\n")
    board = self._board()
    for k, v in metrics.items():
      board.add_scalar(f"{stage}/{k}", _scalar(v), int(step))
    self._sync(force=not self.remote or time.monotonic() - self._synced >= self.flush_secs)

  def _sync(self, force: bool = True) -> None:
    """Writes the pending rows (and, for a URL workdir, uploads the TensorBoard events)."""
    if not force or not self.enabled:
      return
    if self._pending:
      io.append_text(self.path, "".join(self._pending))
      self._pending = []
    if self._staging is not None:
      if self._tb is not None:
        self._tb.flush()
      for name in io.listdir(self._staging.name):
        with io.open(io.join(self._staging.name, name), "rb") as f:
          io.write_bytes(io.join(self.workdir, "tb", name), f.read())
    self._synced = time.monotonic()

  def truncate(self, stage: str, after_step: int) -> None:
    """Drops rows of `stage` logged after `after_step` (a resumed run rewrites them)."""
    self._sync()
    if not self.enabled or not io.exists(self.path):
      return
    keep = []
    with io.open(self.path) as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut by an interruption
        if row.get("stage") == stage and row.get("step", 0) > after_step:
          continue
        keep.append(json.dumps(row) + "\n")
    io.write_text(self.path, "".join(keep))

  def rows(self, stage: str | None = None) -> list[dict]:
    self._sync()
    if not io.exists(self.path):
      return []
    with io.open(self.path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if stage is None or r["stage"] == stage]

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()
    self._sync()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()   # joins tensorboardX's writer thread: every event is in the file before the upload
      self._tb = None
    self._sync()
    if self._staging is not None:
      self._staging.cleanup()
      self._staging = None


def _scalar(v) -> float:
  return float(np.asarray(v))


def check_finite(metrics: Mapping[str, float], stage: str, step: int, last_checkpoint: int | None) -> None:
  """Stops the run with one sentence when a logged value is NaN or infinite."""
  bad = sorted(k for k, v in metrics.items() if not math.isfinite(_scalar(v)))
  if bad:
    kept = (f"the last good checkpoint (step {last_checkpoint}) is kept" if last_checkpoint is not None
            else "no checkpoint was written")
    raise VidrlError(f"{stage}: non-finite {', '.join(bad)} by step {step}; {kept}; lower the learning rate "
                     f"or check the data, then rerun with the same --workdir to resume")


def write_results(workdir: str, results: Mapping, markdown: str | None = None) -> str:
  """`results.json` (and `results.md` when `markdown` is given) in the workdir, written by process 0 only."""
  path = io.join(workdir, "results.json")
  if jax.process_index() == 0:
    io.write_json(path, dict(results))
    if markdown is not None:
      io.write_text(io.join(workdir, "results.md"), markdown if markdown.endswith("\n") else markdown + "\n")
  return path
