"""What every `experiments/<method>.py` launcher shares: multi-host start-up and one-sentence errors."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Callable, Sequence

import jax
from absl import app, flags, logging
from ml_collections import config_flags

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


def run_launcher(train_and_evaluate: Callable, default_config: str, what: str) -> None:
  """All of `experiments/<method>.py`: the `--config` (file:preset, `--config.key=value` overrides) and
  `--workdir` flags, then `main` under absl with one-sentence flag errors (`parse_flags`)."""
  config = config_flags.DEFINE_config_file("config", default_config, f"{what} config and preset.")
  workdir = workdir_flag()
  app.run(lambda argv: main(train_and_evaluate, config.value, workdir.value), flags_parser=parse_flags)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing (pass as `app.run(main, flags_parser=launch.parse_flags)`) with one sentence and exit
  status 1, instead of a traceback, for a bad `--config` file, preset or key and a bad flag value."""
  try:
    rest = flags.FLAGS(list(argv))
    if "config" in flags.FLAGS:
      getattr(flags.FLAGS["config"].value, "lock")   # a config file that failed to load reports it only now
    return rest
  except VidrlError as e:                       # raised by the config file's get_config (e.g. an unknown preset)
    message = str(e)
  except flags.Error as e:                      # a flag absl rejects (bad value, unknown flag)
    message = str(e).splitlines()[0]
  except (AttributeError, KeyError) as e:       # --config.<key>=... names a key the config does not have
    message = _unknown_key_message(e, argv)
    if message is None:
      raise
  except OSError as e:                          # the --config file cannot be loaded
    if "config" not in str(e).lower():
      raise
    path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None and "--config" in argv[:-1]:
      path = argv[list(argv).index("--config") + 1]
    message = (f"cannot load the config file {(path or '?').split(':')[0]!r}; check the path "
               f"(e.g. --config configs/<method>.py:cpu)")
  sys.stderr.write(f"error: {message}\n")
  sys.exit(1)


def _unknown_key_message(error: Exception, argv: Sequence[str]) -> str | None:
  """The sentence for an override of a missing config key; None if no `--config.` override matches `error`."""
  while error.args and isinstance(error.args[0], Exception):   # AttributeError(KeyError("'key'\nDid you mean..."))
    error = error.args[0]
  text = str(error.args[0] if error.args else error)
  names = re.findall(r"'([^'\\]+)'", text)
  hint = re.search(r'Did you mean "([^"]+)"', text)
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    dotted = arg[len("--config."):].split("=", 1)[0]
    if names and names[0] in dotted.split("."):
      suggestion = f" (did you mean {hint.group(1)!r}?)" if hint else ""
      return f"the config has no key {dotted!r}{suggestion}; fix the override {arg.split('=', 1)[0]}"
  return None


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
