"""Speed of LAPO's stage-1 (IDM + FDM + VQ) and stage-2 (latent BC) optimiser steps.

  .venv/bin/python benchmarks/lapo_steps.py                 # all shapes
  .venv/bin/python benchmarks/lapo_steps.py --shapes=small,cpu --steps=10
  .venv/bin/python benchmarks/lapo_steps.py --shapes=paper --steps=3 --impls=matmul   # one impl only
  .venv/bin/python benchmarks/lapo_steps.py --shapes=small,paper --impls=xla --official=OUTDIR/results.jsonl
  .venv/bin/python benchmarks/lapo_steps.py --shapes=tiny --steps=1 --warmup=0   # smallest (tests/test_benchmarks.py)

Shapes: `paper` (batch 128, 64x64x3, IMPALA x4, U-Net scale 24 / 5 levels: the official code's), `small`
(batch 32, 64x64x3, IMPALA x1, U-Net scale 8), `cpu` (our cpu preset: MinAtar SpaceInvaders 10x10x6), and `tiny`
(batch 4, 8x8x3, IMPALA (4,), U-Net 4 / 2 levels: a smoke test of the script, not in the default list). Reports the
median wall time per step over `--steps` steps after `--warmup` (2) warm-up steps, the compile time, XLA's buffer
sizes for the step (arguments + outputs + temporaries), the process's peak RSS, FLOPs per step from XLA's cost
analysis and the achieved FLOP/s (FLOPs of the "xla" program: the convolutions' true work, also credited to "matmul").
`--impls`: the convolutions' implementation (`nets.conv.auto_impl`: "matmul", GEMMs with hand-written gradients,
the CPU default; "xla", XLA's own). Several impls are compiled side by side and their steps interleaved (step i
of every impl before step i + 1 of any), so that load from other processes falls on all alike; the column
"<first impl> / this" is the step time of the first impl over this one's. The 1-minute load average (`uptime`)
is printed before and after.

Official code: no number from another day is printed (the machines are noisy; absolute ms from another sitting do
not compare). Time the official PyTorch steps in the same sitting (../shared/official-timing/: `run_all.sh
[outdir]`, or `lapo_bench.py --case ...` with RESULT_FILE set; interleave, never two timings at once) and pass the
`results.jsonl` it writes as `--official=PATH`: the table then gets the official median ms per step and official /
ours (> 1: ours faster) for the official cases `stage1_small` (small, stage1), `stage1_paper` (paper, stage1) and
`stage2` (paper, stage2; the official step also backpropagates through the frozen IDM, which ours stops: its
`stage2_idm_nograd` case does the same work as ours and is not used here).
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import _official  # noqa: E402
from vidrl_jax import io  # noqa: E402
from vidrl_jax.data import formats  # noqa: E402
from vidrl_jax.data.sequence import Windows  # noqa: E402
from vidrl_jax.methods.lapo import stages  # noqa: E402
from vidrl_jax.nets import conv  # noqa: E402

_SHAPES = flags.DEFINE_list("shapes", ["cpu", "small", "paper"], "Which shape sets to time.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per measurement (after the warm-up steps).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per impl after compilation.")
_STAGES = flags.DEFINE_list("stages", ["stage1", "stage2"], "Which stages to time.")
_IMPLS = flags.DEFINE_list("impls", ["matmul", "xla"], "Convolution impls to time, interleaved: matmul, xla.")
_OFFICIAL = flags.DEFINE_string(
    "official", None, "results.jsonl of ../shared/official-timing (lapo_bench.py / run_all.sh), measured in the same "
    "sitting: adds the official ms per step and official / ours for the shapes and stages the official code times.")

SHAPES = {
    "paper": dict(obs=(64, 64, 3), batch=128, impala_channels=(64, 128, 128), impala_blocks=2,
                  fdm_base_channels=24, fdm_levels=5),
    "small": dict(obs=(64, 64, 3), batch=32, impala_channels=(16, 32, 32), impala_blocks=2,
                  fdm_base_channels=8, fdm_levels=5),
    "cpu": dict(obs=(10, 10, 6), batch=128, impala_channels=(16, 32), impala_blocks=1,
                fdm_base_channels=16, fdm_levels=2),
    "tiny": dict(obs=(8, 8, 3), batch=4, impala_channels=(4,), impala_blocks=1, fdm_base_channels=4, fdm_levels=2),
}
# (shapes, stage) -> lapo_bench.py's case (results.jsonl: "lapo_<case>").
OFFICIAL_CASES = {("small", "stage1"): "stage1_small", ("paper", "stage1"): "stage1_paper",
                  ("paper", "stage2"): "stage2"}


def _config(shape: dict):
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"))
  import lapo as lapo_config  # configs/lapo.py
  c = lapo_config.get_config("cpu")
  c.unlock()
  c.model.impala_channels = shape["impala_channels"]
  c.model.impala_blocks = shape["impala_blocks"]
  c.model.fdm_base_channels = shape["fdm_base_channels"]
  c.model.fdm_levels = shape["fdm_levels"]
  c.stage1.batch_size = c.stage2.batch_size = shape["batch"]
  return c


def _dataset(shape: dict, directory: str) -> Windows:
  rng = np.random.default_rng(0)
  n = 4 * shape["batch"]
  io.write_npz(os.path.join(directory, "bench.npz"), {
      "obs": rng.integers(0, 256, (n,) + shape["obs"], dtype=np.uint8), "done": np.zeros(n, bool)},
      compress=False)
  return formats.lapo_chunks(directory, done="last").windows(3)


def _compile(task, impl: str):
  with conv.auto_impl(impl):
    state = jax.jit(task.init)(jax.random.PRNGKey(0))
    batch = jax.tree.map(jnp.asarray, task.batch(0))
    t0 = time.perf_counter()
    # A fresh function per impl: jax's trace cache is keyed on the function, not on `auto_impl`.
    step = jax.jit(lambda state, batch, rng: task.step(state, batch, rng), donate_argnums=0)
    compiled = step.lower(state, batch, jax.random.PRNGKey(1)).compile()
    return compiled, state, batch, time.perf_counter() - t0


def _flops_and_bytes(compiled) -> tuple[float, float]:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  mem = compiled.memory_analysis()
  xla_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
               if mem is not None else float("nan"))
  return flops, xla_bytes


def _convolutions(compiled) -> int:
  """Convolution ops in the optimised program (a check that the impl switch took: "matmul" has few or none)."""
  return compiled.as_text().count(" convolution(")


def measure(task, steps: int, impls: list[str], warmup: int = 2) -> dict:
  """{impl: timings}: every impl compiled, then `warmup` + `steps` steps of each, interleaved (the first `warmup`
  untimed)."""
  runs = {impl: list(_compile(task, impl)) for impl in impls}
  times: dict = {impl: [] for impl in impls}
  rng = jax.random.PRNGKey(1)
  for i in range(warmup + steps):
    for impl, run in runs.items():
      t = time.perf_counter()
      run[1], metrics = run[0](run[1], run[2], rng)
      jax.block_until_ready(metrics)
      if i >= warmup:
        times[impl].append(time.perf_counter() - t)
  flops = _flops_and_bytes(runs["xla"][0])[0] if "xla" in runs else float("nan")
  out = {}
  for impl, (compiled, _, _, compile_s) in runs.items():
    ms = 1000 * float(np.median(times[impl]))
    out[impl] = dict(ms=ms, runs=[1000 * t for t in times[impl]], compile_s=compile_s, convs=_convolutions(compiled),
                     xla_gib=_flops_and_bytes(compiled)[1] / 2**30, gflop=flops / 1e9, gflops=flops / 1e9 / (ms / 1000))
  return out


def _load() -> str:
  return f"{os.getloadavg()[0]:.2f}"


def main(argv):
  del argv
  unknown = sorted(set(_SHAPES.value) - set(SHAPES)) + sorted(set(_STAGES.value) - {"stage1", "stage2"})
  if unknown or _STEPS.value < 1 or _WARMUP.value < 0:
    raise app.UsageError(f"unknown {unknown} (shapes: {', '.join(SHAPES)}; stages: stage1, stage2), or --steps < 1 "
                         "or --warmup < 0")
  official = _official.read(_OFFICIAL.value, "lapo_") if _OFFICIAL.value else None
  print(f"jax {jax.__version__}, devices {jax.devices()}, impls {_IMPLS.value} (interleaved)")
  if official is not None:
    print(_official.header(_OFFICIAL.value, official))
  print(f"| shapes | stage | impl | median ms/step | steps ms | compile s | XLA buffers GiB | peak RSS GiB | "
        f"GFLOP/step | GFLOP/s | conv ops | {_IMPLS.value[0]} / this | load before, after |"
        + (_official.COLUMNS if official is not None else ""))
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|" + (_official.RULE if official is not None else ""))
  for name in _SHAPES.value:
    shape = SHAPES[name]
    config = _config(shape)
    with tempfile.TemporaryDirectory() as d:
      data = _dataset(shape, d)
      for stage in _STAGES.value:
        if stage == "stage1":
          task = stages.stage1_task(config, data, "bench/stage1", 0, use_vq=True)
        else:
          from vidrl_jax.methods.lapo import models
          idm_params = models.idm(config).init(jax.random.PRNGKey(0), jnp.asarray(data.obs(np.arange(1), "image")))
          task = stages.stage2_task(config, data, idm_params, "bench/stage2", 0)
        load = _load()
        results = measure(task, _STEPS.value, _IMPLS.value, _WARMUP.value)
        load = f"{load}, {_load()}"
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        first = results[_IMPLS.value[0]]["ms"]
        case = OFFICIAL_CASES.get((name, stage))
        official_ms = official.get(case) if official is not None and case else None
        for impl, r in results.items():
          steps = ", ".join(f"{t:.0f}" for t in r["runs"])
          row = (f"| {name} (batch {shape['batch']}) | {stage} | {impl} | {r['ms']:.0f} | {steps} | "
                 f"{r['compile_s']:.1f} | {r['xla_gib']:.2f} | {rss:.2f} | {r['gflop']:.1f} | {r['gflops']:.0f} | "
                 f"{r['convs']} | {first / r['ms']:.2f} | {load} |")
          if official is not None:
            row += _official.cells(official_ms, r["ms"], "not in the file" if case else "no official case")
          print(row, flush=True)


if __name__ == "__main__":
  app.run(main)
