"""What every `experiments/<method>.py` launcher shares: multi-host start-up and one-sentence errors."""

from __future__ import annotations

import json
import os
import sys
from typing import Callable

import jax
from absl import flags, logging

from vidrl_jax.errors import VidrlError


def main(train_and_evaluate: Callable, config, workdir: str) -> None:
  """Runs `train_and_evaluate(config, workdir)`; a VidrlError ends the run with its sentence, exit status 1."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint read at INFO
  enable_compilation_cache()
  if os.environ.get("VIDRL_DISTRIBUTED") == "1":   # multi-host TPU/GPU: set by the pod launcher
    jax.distributed.initialize()
  if not workdir:
    sys.exit("error: --workdir is required (rerunning with the same workdir resumes the run)")
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(config.to_dict(), f, indent=2, default=str)
  logging.info("devices: %s", jax.devices())
  try:
    results = train_and_evaluate(config, workdir)
  except VidrlError as e:
    sys.exit(f"error: {e}")
  print(json.dumps({k: v for k, v in results.items() if k not in ("plots", "data")}, indent=1, default=str))


def enable_compilation_cache() -> None:
  """XLA's persistent compilation cache: stages with the same shapes (AIME's many phase-2 cells, reruns of a
  workdir) load their compiled programs instead of recompiling. VIDRL_COMPILATION_CACHE='' turns it off."""
  path = os.environ.get("VIDRL_COMPILATION_CACHE", os.path.expanduser("~/.cache/vidrl_jax/xla"))
  if path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def workdir_flag() -> flags.FlagHolder:
  return flags.DEFINE_string("workdir", None, "Run directory: metrics, checkpoints, plots, results.json.")
