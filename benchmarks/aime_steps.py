"""Speed of AIME's phase-1 (world-model ELBO) and phase-2 (policy through the frozen model) optimiser steps.

  .venv/bin/python benchmarks/aime_steps.py                                   # all cases, official shapes
  .venv/bin/python benchmarks/aime_steps.py --cases=p1_mdp,p2_mdp --steps=20 --json=runs/bench/aime.jsonl
  .venv/bin/python benchmarks/aime_steps.py --batch 4 --length 8 --deter 16 --stoch 4 --hidden 16 --steps 2
  .venv/bin/python benchmarks/aime_steps.py --cases=p1_mdp,p2_mdp --official=OUTDIR/results.jsonl   # run_all.sh OUTDIR
  .venv/bin/python benchmarks/aime_steps.py --cases=p1_visual,p2_cpu --batch 2 --length 3 --deter 8 --stoch 4 \
      --hidden 8 --cnn_width 4 --steps 1 --warmup 0                        # smallest setting (tests/test_benchmarks.py)

Cases: `p1_mdp`, `p2_mdp`, `p1_visual`, `p2_visual` at the official walker shapes (batch 50 x length 50, RSSM
512 deterministic / 128 stochastic, 2x128 ELU MLPs, tanh-Gaussian policy 2x128; MDP keys orientations (14), height
(1), velocity (9); Visual key 'image' uint8 64x64x3 with conv width 32; action_dim 6), and `p1_cpu`, `p2_cpu` at
our `cpu` preset (configs/aime.py:cpu: its model, batch and window), each for the preset's walker MDP and LPOMDP
keys (LPOMDP: orientations + height). Phase 1 uses the configs' model (`idm=True`), so the detached IDM head is
trained as in our runs.

What is timed is the training step itself: `phases.phase1_task` / `phases.phase2_task` build the optimiser and
step exactly as `experiments/aime.py` does (through `methods/aime/pipeline.py`), and the step is jitted over the
device mesh with the state donated and the step's rng `fold_in(rng, step)`, as in `vidrl_jax/train/loop.py`. The
batch is random arrays of the right shapes and dtypes, already on the device (the loop's host-to-device copy is not
timed).

Reported per case: the median wall time per step over `--steps` steps after `--warmup` warm-up steps, the compile
time (trace + lower + compile), XLA's buffer sizes for the step (arguments + outputs + temporaries), the peak RSS
(reset before each case where /proc/self/clear_refs allows it, otherwise the process's peak so far), FLOPs per step
from XLA's cost analysis and the achieved FLOP/s.

Official code: nothing here is compared with a number from another day (the machines are noisy; absolute ms from
another sitting do not compare). Time the official PyTorch steps in the same sitting
(../shared/official-timing/: `run_all.sh [outdir]`, or `aime_bench.py --case ...` with RESULT_FILE set; never two
timings at once) and pass the `results.jsonl` it writes as `--official=PATH`: then the table gets the official
median ms per step and the ratio official / ours (> 1: ours faster) for `p1_mdp`, `p2_mdp`, `p1_visual` and
`p2_visual`, and only while no shape is overridden (the official times are at the official shapes).

FLOPs: XLA's cost analysis counts a `while` loop's body once, so the RSSM's `lax.scan` over time would be counted
for one step out of T. The FLOPs are therefore counted on a second lowering of the same step with every
`lax.scan` unrolled (pre-optimisation HLO, not compiled); the timed program keeps the rolled scan.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import sys
import time
from typing import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import _official  # noqa: E402
from configs.aime import get_config  # noqa: E402
from vidrl_jax.methods.aime.envs import observation_keys  # noqa: E402
from vidrl_jax.methods.aime import model as model_lib  # noqa: E402
from vidrl_jax.methods.aime import phases  # noqa: E402
from vidrl_jax.train import Task  # noqa: E402
from vidrl_jax.train import mesh as mesh_lib  # noqa: E402

CASES = ("p1_mdp", "p2_mdp", "p1_visual", "p2_visual", "p1_cpu", "p2_cpu")

_CASES = flags.DEFINE_list("cases", list(CASES), f"Which cases to time, among {', '.join(CASES)}.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per case (after the warm-up steps).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_BATCH = flags.DEFINE_integer("batch", None, "Override: windows per batch.")
_LENGTH = flags.DEFINE_integer("length", None, "Override: window length T.")
_DETER = flags.DEFINE_integer("deter", None, "Override: RSSM deterministic size.")
_STOCH = flags.DEFINE_integer("stoch", None, "Override: RSSM stochastic size.")
_HIDDEN = flags.DEFINE_integer("hidden", None, "Override: MLP width (world model and policy).")
_CNN_WIDTH = flags.DEFINE_integer("cnn_width", None, "Override: conv encoder/decoder width (Visual).")
_JSON = flags.DEFINE_string("json", None, "Append one JSON line per case to this file.")
_OFFICIAL = flags.DEFINE_string(
    "official", None, "results.jsonl of ../shared/official-timing (aime_bench.py / run_all.sh), measured in the same "
    "sitting: adds the official ms per step and official / ours for the cases at the official shapes.")

ENV = "walker-walk"          # only the keys and shapes matter: walker's sensors, 64x64 images, 6 actions
ACTION_DIM = 6
IMAGE_SHAPE = (64, 64, 3)
SENSOR_SHAPES = {"orientations": (14,), "height": (1,), "velocity": (9,)}

OFFICIAL_CASES = ("p1_mdp", "p2_mdp", "p1_visual", "p2_visual")   # aime_bench.py's cases (results: "aime_<case>")


def _config(preset: str) -> ml_collections.ConfigDict:
  """The AIME config of `preset` with the command line's shape overrides applied to model, phase 1 and phase 2."""
  c = get_config(preset)
  c.unlock()
  for field, flag in (("deter", _DETER), ("stoch", _STOCH), ("hidden", _HIDDEN), ("cnn_width", _CNN_WIDTH)):
    if flag.value is not None:
      c.model[field] = flag.value
  if _HIDDEN.value is not None:
    c.phase2.hidden = (_HIDDEN.value,) * len(c.phase2.hidden)
  for phase in (c.phase1, c.phase2):
    if _BATCH.value is not None:
      phase.batch_size = _BATCH.value
    if _LENGTH.value is not None:
      phase.window = _LENGTH.value
  return c


def _obs_spec(keys: list[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  return {k: (IMAGE_SHAPE, np.dtype(np.uint8)) if k == "image" else (SENSOR_SHAPES[k], np.dtype(np.float32))
          for k in keys}


def _batch(spec: dict, batch_size: int, length: int, seed: int = 0) -> dict:
  """Random (B, T, ...) windows: uint8 images, float32 sensors, actions inside tanh's range."""
  rng = np.random.default_rng(seed)
  obs = {}
  for k, (shape, dtype) in spec.items():
    full = (batch_size, length) + shape
    obs[k] = (rng.integers(0, 256, full, dtype=np.uint8) if dtype == np.uint8
              else rng.standard_normal(full, dtype=np.float32))
  action = rng.uniform(-0.99, 0.99, (batch_size, length, ACTION_DIM)).astype(np.float32)
  return {"obs": obs, "action": action}


@contextlib.contextmanager
def _unrolled_scans() -> Iterator[None]:
  """Every `jax.lax.scan` traced inside is fully unrolled (so XLA's cost analysis sees all T steps)."""
  original = jax.lax.scan
  jax.lax.scan = functools.partial(original, unroll=True)
  try:
    yield
  finally:
    jax.lax.scan = original


def _reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS mark (VmHWM) of this process; False where that is not allowed."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _peak_rss_gib(reset_ok: bool) -> float:
  if reset_ok:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 2**20           # kB
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(task: Task, batch: dict, steps: int, warmup: int) -> dict[str, float]:
  """Times `task.step` jitted as the training loop jits it (mesh shardings, donated state, folded rng)."""
  mesh = mesh_lib.make_mesh()
  repl = mesh_lib.replicated(mesh)
  rng_init, rng_steps = jax.random.split(jax.random.PRNGKey(0))
  abstract = jax.eval_shape(task.init, rng_init)
  shardings = jax.tree.map(lambda _: repl, abstract)
  state = jax.jit(task.init, out_shardings=shardings)(rng_init)
  batch = mesh_lib.put_batch(batch, mesh)

  def step_fn(state, batch, step):
    return task.step(state, batch, jax.random.fold_in(rng_steps, step))

  jitted = jax.jit(step_fn, in_shardings=(shardings, mesh_lib.data_sharded(mesh), repl),
                   out_shardings=(shardings, repl), donate_argnums=0)
  step0 = jnp.asarray(0, jnp.int32)
  t0 = time.perf_counter()
  compiled = jitted.lower(state, batch, step0).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  xla_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
               if mem is not None else float("nan"))

  times = []
  for i in range(warmup + steps):
    t = time.perf_counter()
    state, metrics = compiled(state, batch, jnp.asarray(i, jnp.int32))
    jax.block_until_ready((state, metrics))
    if i >= warmup:
      times.append(time.perf_counter() - t)
  loss = float(metrics["loss/total"]) if "loss/total" in metrics else float("nan")

  # A fresh wrapper so that jax's trace cache cannot hand back the rolled trace.
  def counted(state, batch, step):
    return step_fn(state, batch, step)

  with _unrolled_scans():
    cost = jax.jit(counted).lower(abstract, batch, step0).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")

  ms = 1000 * float(np.median(times))
  return dict(ms=ms, compile_s=compile_s, xla_gib=xla_bytes / 2**30, gflop=flops / 1e9,
              gflops=flops / 1e9 / (ms / 1000), loss=loss)


def _cases(name: str) -> list[tuple[str, str, str]]:
  """(row label, config preset, observation setting) rows for one `--cases` entry."""
  phase, kind = name.split("_", 1)
  if kind == "cpu":
    settings = [s for s in get_config("cpu").settings if s != "visual"]
    return [(f"{name}/{s}", "cpu", s) for s in settings]
  return [(name, "paper", kind)]


def _task(phase: str, preset: str, setting: str) -> tuple[Task, dict, ml_collections.ConfigDict]:
  """The phase's training task (as experiments/aime.py builds it), a random batch, and the config used."""
  config = _config(preset)
  keys = observation_keys(ENV, setting)
  spec = _obs_spec(keys)
  wm = model_lib.make_world_model(spec, keys, ACTION_DIM, config.model)
  pc = config.phase1 if phase == "p1" else config.phase2
  batch = _batch(spec, pc.batch_size, pc.window)
  if phase == "p1":
    return phases.phase1_task("bench/phase1", wm, None, pc, seed=0), batch, config
  wm_params = jax.jit(wm.init)(jax.random.PRNGKey(1))          # the frozen phase-1 model (random weights)
  return phases.phase2_task("bench/phase2", wm, wm_params, None, pc, seed=0), batch, config


def main(argv: list[str]) -> None:
  del argv
  unknown = [c for c in _CASES.value if c not in CASES]
  if unknown:
    raise app.UsageError(f"unknown case(s) {unknown}; choose among {', '.join(CASES)}")
  if _STEPS.value < 1 or _WARMUP.value < 0:
    raise app.UsageError("--steps must be >= 1 and --warmup >= 0")
  overridden = any(f.value is not None for f in (_BATCH, _LENGTH, _DETER, _STOCH, _HIDDEN, _CNN_WIDTH))
  official = _official.read(_OFFICIAL.value, "aime_") if _OFFICIAL.value else None
  print(f"jax {jax.__version__}, devices {jax.devices()}" + (" (shapes overridden)" if overridden else ""))
  if official is not None:
    print(_official.header(_OFFICIAL.value, official))
  print("| case | shapes | median ms/step | compile s | XLA buffers GiB | peak RSS GiB | GFLOP/step | GFLOP/s |"
        + (_official.COLUMNS if official is not None else ""))
  print("|---|---|---|---|---|---|---|---|" + (_official.RULE if official is not None else ""))
  for name in _CASES.value:
    for label, preset, setting in _cases(name):
      phase = name.split("_", 1)[0]
      task, batch, config = _task(phase, preset, setting)
      pc = config.phase1 if phase == "p1" else config.phase2
      m = config.model
      shapes = f"{pc.batch_size}x{pc.window}, {m.deter}/{m.stoch}, {m.hidden}" + (
          f", cnn {m.cnn_width}" if setting == "visual" else "")
      reset_ok = _reset_peak_rss()
      r = measure(task, batch, _STEPS.value, _WARMUP.value)
      rss = _peak_rss_gib(reset_ok)
      # The official times are at the official shapes only: no reference for the cpu preset or overridden shapes.
      official_ms = official.get(name) if official is not None and name in OFFICIAL_CASES and not overridden else None
      ratio = official_ms / r["ms"] if official_ms is not None else None
      row = (f"| {label} | {shapes} | {r['ms']:.1f} | {r['compile_s']:.1f} | {r['xla_gib']:.3f} | {rss:.2f} | "
             f"{r['gflop']:.3g} | {r['gflops']:.3g} |")
      if official is not None:
        row += _official.cells(official_ms, r["ms"], "no official case" if name not in OFFICIAL_CASES
                               else "shapes overridden" if overridden else "not in the file")
      print(row, flush=True)
      if _JSON.value:
        row = dict(case=label, preset=preset, setting=setting, obs_keys=list(batch["obs"]),
                   batch=pc.batch_size, length=pc.window, deter=m.deter, stoch=m.stoch, hidden=m.hidden,
                   cnn_width=m.cnn_width, idm=bool(m.idm), steps=_STEPS.value, warmup=_WARMUP.value,
                   median_ms=r["ms"], compile_s=r["compile_s"], xla_buffers_gib=r["xla_gib"], peak_rss_gib=rss,
                   peak_rss_per_case=reset_ok, gflop_per_step=r["gflop"], achieved_gflops=r["gflops"],
                   loss=r["loss"], official_file=_OFFICIAL.value, official_ms=official_ms,
                   official_over_ours=ratio, shapes_overridden=overridden, jax=jax.__version__,
                   device=str(jax.devices()[0]), time=time.strftime("%Y-%m-%dT%H:%M:%S"))
        os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
        with open(_JSON.value, "a") as f:
          f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  app.run(main)
