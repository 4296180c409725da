"""Metrics to `metrics.jsonl` and TensorBoard event files, a finiteness check, and the final `results.json`."""

from __future__ import annotations

import json
import math
import os
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

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)

  def _board(self):
    if self._tb is None:
      from tensorboardX import SummaryWriter  # imported lazily: only process 0 needs it
      self._tb = SummaryWriter(os.path.join(self.workdir, "tb"), flush_secs=30)
    return self._tb

  def write(self, stage: str, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled or not metrics:
      return
    row = {"stage": stage, "step": int(step), "time": round(time.time(), 3)}
    row.update({k: _scalar(v) for k, v in metrics.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    board = self._board()
    for k, v in metrics.items():
      board.add_scalar(f"{stage}/{k}", _scalar(v), int(step))

  def truncate(self, stage: str, after_step: int) -> None:
    """Drops rows of `stage` logged after `after_step` (a resumed run rewrites them)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    keep = []
    with open(self.path) as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut by an interruption
        if row.get("stage") == stage and row.get("step", 0) > after_step:
          continue
        keep.append(json.dumps(row) + "\n")
    blob = "".join(keep).encode()
    io._atomic(self.path, lambda f: f.write(blob))

  def rows(self, stage: str | None = None) -> list[dict]:
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if stage is None or r["stage"] == stage]

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


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


def write_results(workdir: str, results: Mapping) -> str:
  path = os.path.join(workdir, "results.json")
  if jax.process_index() == 0:
    io.write_json(path, dict(results))
  return path
