"""Speed of APV's update (`methods.apv.agent.agent`): the world-model step (Eq. 6 with the video bonus, both
optimisers) and the imagination + actor-critic step (`rl.dreamer.ActorCritic.update`, horizon 15), alone and as one
update, for the stacked (APV) and the single (DreamerV2) model.

  .venv/bin/python benchmarks/apv_steps.py                                      # the cpu preset's shapes
  .venv/bin/python benchmarks/apv_steps.py --preset=paper --batch=16 --length=50 --calls=2

Shapes: `configs/apv.py:<preset>` (model, actor-critic, batch x length, image size), or the flags. What is timed
is one jitted call (state donated) on a random batch already on the device; ms = the median over `--calls` timed
calls after one warm-up. FLOPs: XLA's cost analysis of the same program (a `lax.scan` body counts once: the RSSM
filter's T steps and imagination's H steps are counted as one, so the GFLOP/s column is a lower bound), compile s:
lower + compile.

Reference: `--dreamerv3=<checkout of danijar/dreamerv3>` times the official DreamerV3 JAX train step at the same
sizes (`benchmarks/_dreamerv3.py`, in its own environment: `bash scripts/setup_dreamerv3.sh`) after ours,
in the same sitting, `--rounds` times alternating; DreamerV3 has one train step (world model, imagination and
actor-critic), compared with our whole update.

  .venv/bin/python benchmarks/apv_steps.py --dreamerv3=/path/to/dreamerv3 --rounds=3
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from vidrl_jax.config import apply_overrides  # noqa: E402
from vidrl_jax.methods.apv import agent  # noqa: E402
from vidrl_jax.methods.apv import model as model_lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("stacked", "single")

_PRESET = flags.DEFINE_string("preset", "cpu", "configs/apv.py preset whose shapes are timed.")
_KINDS = flags.DEFINE_list("kinds", list(KINDS), "Models: stacked (APV), single (DreamerV2).")
_BATCH = flags.DEFINE_integer("batch", 0, "Sequences per batch (0: the preset's).")
_LENGTH = flags.DEFINE_integer("length", 0, "Sequence length (0: the preset's).")
_CALLS = flags.DEFINE_integer("calls", 5, "Timed calls per case after one warm-up.")
_DREAMERV3 = flags.DEFINE_string("dreamerv3", "", "A checkout of danijar/dreamerv3: time its train step as well.")
_DREAMERV3_PYTHON = flags.DEFINE_string("dreamerv3_python", os.path.join(ROOT, ".venv-dreamerv3", "bin", "python"),
                                        "The interpreter of DreamerV3's environment (scripts/setup_dreamerv3.sh).")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Rounds of (ours, DreamerV3) timings, alternating.")


def _config(preset: str, overrides: dict):
  spec = importlib.util.spec_from_file_location("apv_config", os.path.join(ROOT, "configs", "apv.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return apply_overrides(module.get_config(preset), overrides)


def _time(fn, args, calls: int) -> tuple[float, float, float]:
  """(median ms, compile s, GFLOP counted) of jitted `fn(*args)` whose first argument is donated and returned."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=0).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  state, rest, times = args[0], args[1:], []
  for i in range(calls + 1):
    t = time.perf_counter()
    state, out = compiled(state, *rest)
    jax.block_until_ready((state, out))
    if i:
      times.append(time.perf_counter() - t)
  return 1000 * float(np.median(times)), compile_s, flops / 1e9


def measure(kind: str, preset: str, batch: int, length: int, calls: int) -> list[dict]:
  overrides = {"model.kind": kind, "bonus.beta": 1.0 if kind == "stacked" else 0.0}
  if batch:
    overrides["finetune.batch_size"] = batch
  if length:
    overrides["finetune.length"] = length
  c = _config(preset, overrides)
  B, T, S, A = c.finetune.batch_size, c.finetune.length, c.env.image_size, 4
  model, ac, init, update = agent.agent(A, c, 1000)
  rng = np.random.default_rng(0)
  is_first = np.zeros((B, T), bool)
  is_first[:, 0] = True
  batch_ = jax.device_put({"obs": {"image": rng.integers(0, 256, (B, T, S, S, 3), dtype=np.uint8)},
                           "is_first": is_first, "action": rng.uniform(-1, 1, (B, T, A)).astype(np.float32),
                           "reward": rng.standard_normal((B, T)).astype(np.float32)})
  key = jax.random.PRNGKey(1)
  state = jax.jit(init)(jax.random.PRNGKey(0))
  # the posterior starts of one batch, for the actor-critic step alone
  _, (_, post, _) = jax.jit(lambda s: model_lib.finetune_loss(model, s.params, s.bonus, batch_, key, c.bonus))(state)
  start = jax.tree.map(lambda x: x.reshape(-1, x.shape[-1]), post)

  fresh = lambda: jax.jit(init)(jax.random.PRNGKey(0))   # each program gets its own state (the first is donated)
  total_ms, total_c, total_f = _time(update, (fresh(), batch_, key), calls)
  s = fresh()
  ac_ms, ac_c, ac_f = _time(lambda a, p, st, r: ac.update(a, p["rssm"], st,
                                                                 agent.imagination_heads(model, p, c.ac.discount), r),
                            (s.ac, s.params, start, key), calls)
  row = dict(kind=kind, batch=B, length=T, image=S)
  rows = [dict(row, part="update", ms=total_ms, compile_s=total_c, gflop=total_f),
          dict(row, part="world_model (update - actor_critic)", ms=total_ms - ac_ms, compile_s=float("nan"),
               gflop=total_f - ac_f),
          dict(row, part="actor_critic", ms=ac_ms, compile_s=ac_c, gflop=ac_f)]
  return rows


def dreamerv3(preset: str, batch: int, length: int, calls: int) -> dict:
  """The official DreamerV3 train step at the preset's DreamerV2 sizes (RSSM, CNN depth and layers, heads, batch x
  length, horizon, image), timed in DreamerV3's environment; the JSON row of `_dreamerv3.py`."""
  c = _config(preset, {})
  sizes = dict(deter=c.model.deter, hidden=c.model.hidden, stoch=c.model.stoch, classes=c.model.classes,
               depth=c.model.cnn_width, kernel=c.model.enc_kernels[0], units=c.ac.actor_hidden[0],
               layers=len(c.ac.actor_hidden), batch=batch or c.finetune.batch_size,
               length=length or c.finetune.length, image=c.env.image_size, horizon=c.ac.horizon, calls=calls)
  mults = ",".join(str(2 ** i) for i in range(len(c.model.enc_kernels)))
  if not os.access(_DREAMERV3_PYTHON.value, os.X_OK):
    raise app.UsageError(f"no DreamerV3 environment at {_DREAMERV3_PYTHON.value}; run bash scripts/setup_dreamerv3.sh "
                         f"or pass --dreamerv3_python")
  cmd = [_DREAMERV3_PYTHON.value, os.path.join(ROOT, "benchmarks", "_dreamerv3.py"),
         f"--src={_DREAMERV3.value}", f"--mults={mults}", *(f"--{k}={v}" for k, v in sizes.items())]
  out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"case"')]
  if out.returncode or not rows:
    raise RuntimeError(f"the DreamerV3 reference failed:\n{out.stderr[-3000:]}")
  return dict(rows[-1], batch=sizes["batch"], length=sizes["length"], image=sizes["image"])


def main(argv) -> None:
  del argv
  unknown = sorted(set(_KINDS.value) - set(KINDS))
  if unknown:
    raise app.UsageError(f"unknown kinds {unknown}; pick among {KINDS}")
  print(f"{'model':8s} {'part':36s} {'B x T':>8s} {'image':>5s} {'ms':>9s} {'compile s':>9s} {'GFLOP':>8s} "
        f"{'GFLOP/s':>8s}", flush=True)
  def show(r):
    print(f"{r['kind']:8s} {r['part']:36s} {str(r['batch']) + 'x' + str(r['length']):>8s} {r['image']:5d} "
          f"{r['ms']:9.1f} {r['compile_s']:9.1f} {r['gflop']:8.3f} {r['gflop'] / (r['ms'] / 1000):8.2f}", flush=True)

  updates, reference = {}, []
  for _ in range(_ROUNDS.value):
    for kind in _KINDS.value:
      for r in measure(kind, _PRESET.value, _BATCH.value, _LENGTH.value, _CALLS.value):
        show(r)
        if r["part"] == "update":
          updates.setdefault(kind, []).append(r["ms"])
    if _DREAMERV3.value:
      d = dreamerv3(_PRESET.value, _BATCH.value, _LENGTH.value, _CALLS.value)
      reference.append(d["median_ms"])
      show(dict(d, kind="DV3", part=f"official train step (jax {d['jax']})", ms=d["median_ms"]))
  if reference:
    for kind, ms in updates.items():
      print(f"DreamerV3 / ours ({kind} update), medians over {len(ms)} round(s): "
            f"{np.median(reference):.1f} / {np.median(ms):.1f} ms = {np.median(reference) / np.median(ms):.2f}x "
            f"(> 1: ours faster)", flush=True)


if __name__ == "__main__":
  app.run(main)
