"""What every `experiments/<method>.py` launcher shares: multi-process start-up, one-sentence errors, the
XLA compilation cache."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from typing import Callable, Sequence

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from vidrl_jax import io
from vidrl_jax.errors import VidrlError


def main(train_and_evaluate: Callable, config, workdir: str, distributed: dict | None = None) -> None:
  """Runs `train_and_evaluate(config, workdir)`; a VidrlError ends the run with its sentence, exit status 1.
  `distributed`: the keyword arguments of `init_distributed` (the launcher's flags)."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint read at INFO
  enable_compilation_cache()
  if not workdir:
    sys.exit("error: --workdir is required (rerunning with the same workdir resumes the run)")
  try:
    init_distributed(**(distributed or {}))
  except VidrlError as e:
    sys.exit(f"error: {e}")
  if jax.process_index() == 0:
    try:
      io.makedirs(workdir)
      io.write_text(io.join(workdir, "config.json"), json.dumps(config.to_dict(), indent=2, default=str))
    except OSError as e:
      sys.exit(f"error: cannot write the workdir {workdir!r} ({_reason(e)}); pass a --workdir in a directory you "
               f"can write to")
  logging.info("devices: %s", jax.devices())
  try:
    results = train_and_evaluate(config, workdir)
  except VidrlError as e:
    sys.exit(f"error: {e}")
  print(json.dumps({k: v for k, v in results.items() if k not in ("plots", "data")}, indent=1, default=str))


def run_launcher(train_and_evaluate: Callable, default_config: str, what: str) -> None:
  """All of `experiments/<method>.py`: the `--config` (file:preset, `--config.key=value` overrides) and
  `--workdir` flags, then `main` under absl with one-sentence flag errors (`parse_flags`). `--help` lists these
  flags with the config's presets (its `PRESETS`); `default_config` is relative to the repository root."""
  path, _, preset = default_config.partition(":")
  if not io.exists(path):   # launched from another directory: the config beside the launcher's repository
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(sys.argv[0]))), path)
  presets = ", ".join(_presets(path)) or "see the config file"
  config = config_flags.DEFINE_config_file(
      "config", f"{path}:{preset}", f"{what} config file and preset, FILE:PRESET (presets: {presets}; default "
      f"{preset}); override any key with --config.<key>=<value>, e.g. --config.seed=1.")
  workdir = workdir_flag()
  dist = distributed_flags()
  for holder in (config, workdir, *dist.values()):   # absl's --help shows the main module's key flags
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[holder.name])
  app.run(lambda argv: main(train_and_evaluate, config.value, workdir.value,
                            {k: f.value for k, f in dist.items()}), flags_parser=parse_flags)


def _presets(path: str) -> list[str]:
  """The preset names of the config file at `path` (its module-level `PRESETS`), [] if it cannot be read."""
  try:
    spec = importlib.util.spec_from_file_location("_vidrl_config_for_help", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(getattr(module, "PRESETS", {}))
  except Exception:   # a broken or missing file is reported by --config itself, with one sentence
    return []


def _reason(error: OSError) -> str:
  """An OSError in a few words: 'Not a directory: /dev/null/x'."""
  if error.strerror:
    return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
  return str(error) or type(error).__name__


def distributed_flags() -> dict[str, flags.FlagHolder]:
  """The multi-process flags every launcher takes (`init_distributed`'s arguments)."""
  return dict(
      auto=flags.DEFINE_bool("distributed", False, "Start JAX's multi-process runtime, detecting the cluster (a TPU "
                             "pod slice, SLURM, Open MPI); also VIDRL_DISTRIBUTED=1."),
      coordinator_address=flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator "
                                              "(default: $JAX_COORDINATOR_ADDRESS)."),
      num_processes=flags.DEFINE_integer("num_processes", None, "Processes in the run (default: "
                                         "$JAX_NUM_PROCESSES)."),
      process_id=flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1 (default: "
                                      "$JAX_PROCESS_ID)."),
      heartbeat_timeout_s=flags.DEFINE_integer("heartbeat_timeout_s", 100, "Seconds without a heartbeat after "
                                               "which a process counts as dead and the others stop."),
      init_timeout_s=flags.DEFINE_integer("init_timeout_s", 300, "Seconds to wait for every process to join."))


def init_distributed(auto: bool = False, coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, heartbeat_timeout_s: int = 100, init_timeout_s: int = 300) -> bool:
  """Starts JAX's multi-process runtime when asked to; returns whether it did.

  Asked to by `auto` (or VIDRL_DISTRIBUTED=1: JAX detects the cluster, e.g. every host of a TPU pod slice) or by a
  process count and id, from the arguments or the environment variables JAX_NUM_PROCESSES and JAX_PROCESS_ID
  (with the coordinator's host:port from JAX_COORDINATOR_ADDRESS, which JAX reads itself), for clusters JAX does not
  detect, e.g. processes on one machine or hosts started by hand. After it, `jax.devices()` lists every process's
  devices, the mesh (`train.mesh.make_mesh`) spans them, and each process feeds its own slice of every batch. A
  process that dies makes the others stop within `heartbeat_timeout_s` (JAX's coordination service ends them
  with "the JAX distributed service detected fatal errors ... another task died")."""
  env = os.environ
  auto = auto or env.get("VIDRL_DISTRIBUTED") == "1"
  coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
  num_processes = _env_int("JAX_NUM_PROCESSES") if num_processes is None else num_processes
  process_id = _env_int("JAX_PROCESS_ID") if process_id is None else process_id
  explicit = num_processes is not None or process_id is not None
  if not auto and not explicit:
    return False
  if explicit and (num_processes is None or process_id is None or coordinator_address is None):
    raise VidrlError(f"a multi-process run started by hand needs the coordinator address, the process count and "
                     f"this process's id, got {coordinator_address!r}, {num_processes!r} and {process_id!r}; pass "
                     f"--coordinator_address=host:port --num_processes=N --process_id=i (or JAX_COORDINATOR_ADDRESS, "
                     f"JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
  if explicit and not 0 <= process_id < num_processes:
    raise VidrlError(f"process id {process_id} is not in [0, {num_processes}); give each process its own id "
                     f"0 .. {num_processes - 1}")
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=init_timeout_s, heartbeat_timeout_seconds=heartbeat_timeout_s)
  except (ValueError, RuntimeError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise VidrlError(f"JAX's multi-process runtime did not start ({first}); outside a cluster JAX detects (TPU "
                     f"pod, SLURM) pass --coordinator_address, --num_processes and --process_id, start the same "
                     f"command on every process within {init_timeout_s} s, and check that process 0's address is "
                     f"reachable") from None
  logging.warning("process %d of %d, %d local of %d devices", jax.process_index(), jax.process_count(),
                  jax.local_device_count(), jax.device_count())
  return True


def _env_int(name: str) -> int | None:
  value = os.environ.get(name, "").strip()
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise VidrlError(f"the environment variable {name}={value!r} is not an integer; set it to a number or unset "
                     f"it") from None


_HELP_FLAGS = ("-?", "-h", "--help", "--helpshort", "--helpfull", "--helpxml")


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing (pass as `app.run(main, flags_parser=launch.parse_flags)`) with one sentence and exit
  status 1, instead of a traceback, for a bad `--config` file, preset or key and a bad flag value."""
  try:
    try:
      rest = flags.FLAGS(list(argv))
    except SystemExit:   # absl exits with status 1 after printing --help; asking for help is no error
      if any(a.split("=")[0] in _HELP_FLAGS for a in argv[1:]):
        sys.exit(0)
      raise
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
  return flags.DEFINE_string("workdir", None, "Run directory (required; a local path or a bucket URL): metrics, "
                             "TensorBoard events, checkpoints, plots, results.json. Rerunning with the same workdir "
                             "resumes the run.")
