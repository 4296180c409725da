"""Speed of RLV's update step (SAC + the RLV aux of `methods.rlv.model.make_aux`, 256 interaction + 256
observation transitions per update) against plain SAC (256 interaction transitions, no aux), state and 48x48 image.

  .venv/bin/python benchmarks/rlv_steps.py                                   # all cases
  .venv/bin/python benchmarks/rlv_steps.py --cases=acrobot --calls=3 --json=runs/bench/rlv.jsonl

Cases (each timed as `sac` and as `rlv`):
- `acrobot`: 6-d state, 1-d action, SAC's defaults (2x256 MLPs, no encoder), RLV as the Acrobot preset runs it
  (no domain-adversarial term, c3 = 0, paper §4.1).
- `state39`: a Meta-World-like 39-d state, 4-d action, `state_encoder_hidden=(256, 256)` (a shared state encoder,
  trained by the critic and the aux losses) and RLV with the adversarial term (discriminator + encoder term).
- `image48`: pixel SAC on {'image': uint8 (48, 48, 3)} (`sac_config`'s image settings: RLV's conv encoder 16/16/32
  5x5 with 2x2 max-pools, pad-4 random crops, 2x256 MLPs), 4-d action, RLV with the adversarial term.

What is timed is `sac.make_update_burst`'s program, as the training loop runs it: one jitted call of `--burst` K
updates (a `lax.scan`, state donated) on stacked random batches already on the device; ms per update = the median
over `--calls` timed calls (after one warm-up call) of the call's time / K. Compile time: lower + compile of that
burst. Memory: XLA's buffer sizes of the burst (arguments + outputs + temporaries, `memory_analysis`). FLOPs: XLA's
cost analysis of ONE update compiled alone (its count of a scan's body is once, not K times), and FLOP/s = those
FLOPs / the measured ms per update.

Measured 2026-12-01 on this 2-core CPU, shared with other jobs (load average 4.7 during the runs, so the times
are noisy: medians, two runs), JAX 0.10.2, XLA:CPU, batch 256 (+ 256 observation transitions for RLV):

  run 1: .venv/bin/python benchmarks/rlv_steps.py              (burst 50 state / 4 image, 5 timed calls)
  case            ms/update  compile s  XLA MiB  MFLOP/update  GFLOP/s  RLV / SAC (time)
  acrobot/sac          5.84        3.9     11.5         558.5     95.6
  acrobot/rlv         16.76        5.9     18.2        1132.5     67.6  2.87
  state39/sac         12.37        5.1     24.2        1253.3    101.3
  state39/rlv         19.69        7.4     39.7        3004.9    152.7  1.59
  image48/sac        976.00       11.3    753.4       22224.3     22.8
  image48/rlv       4329.09       23.6   2385.4       78918.2     18.2  4.44

  run 2: .venv/bin/python benchmarks/rlv_steps.py --cases=acrobot,state39 --calls 9
  acrobot/sac          4.84        4.6     11.5         558.5    115.3
  acrobot/rlv         17.06        5.7     18.2        1132.5     66.4  3.52
  state39/sac         10.94        4.8     24.2        1253.3    114.6
  state39/rlv         33.87        7.0     39.7        3004.9     88.7  3.10

RLV's update does 2.0x (Acrobot, no adversarial term), 2.4x (39-d with the adversarial term) and 3.6x (48x48
image) the FLOPs of SAC's: SAC's losses see 512 rows instead of 256, and the inverse model, the discriminator and
the encoder passes of both halves come on top. On these two cores RLV's state update costs 1.6-3.5x SAC's (run
to run noise is as large as the difference between cases), the image update about 4.4x; a 48x48 RLV update takes
about 4 s here, so image runs of any length need an accelerator.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from vidrl_jax.methods.rlv import model  # noqa: E402
from vidrl_jax.rl import sac  # noqa: E402

CASES = ("acrobot", "state39", "image48")
IMAGE = (48, 48, 3)

_CASES = flags.DEFINE_list("cases", list(CASES), f"Which cases to time, among {', '.join(CASES)}.")
_CALLS = flags.DEFINE_integer("calls", 5, "Timed burst calls per case (after one warm-up call).")
_BURST = flags.DEFINE_integer("burst", 50, "Updates per burst call, state cases.")
_IMAGE_BURST = flags.DEFINE_integer("image_burst", 4, "Updates per burst call, image case.")
_BATCH = flags.DEFINE_integer("batch", 256, "Interaction transitions per update (and observation ones for RLV).")
_JSON = flags.DEFINE_string("json", None, "Append one JSON line per case to this file.")


def _setting(case: str) -> tuple[object, int, dict, dict]:
  """(obs spec for sac.init, action dim, sac_config overrides, rlv_config overrides)."""
  if case == "acrobot":
    return 6, 1, {}, dict(adversarial=False)
  if case == "state39":
    return 39, 4, dict(state_encoder_hidden=(256, 256)), {}
  return {"image": (IMAGE, np.uint8)}, 4, {}, {}


def _obs(spec, shape: tuple[int, ...], rng: np.random.Generator):
  if isinstance(spec, dict):
    return {"image": rng.integers(0, 256, shape + IMAGE, dtype=np.uint8)}
  return rng.standard_normal(shape + (spec,), dtype=np.float32)


def _batches(spec, action_dim: int, k: int, b: int, with_observation: bool, seed: int = 0) -> dict:
  """K stacked SAC batches as `offpolicy.sac_task` hands them to the burst (plus the observation pool's draws)."""
  rng = np.random.default_rng(seed)
  out = dict(obs=_obs(spec, (k, b), rng), next_obs=_obs(spec, (k, b), rng),
             action=rng.uniform(-1, 1, (k, b, action_dim)).astype(np.float32),
             reward=rng.standard_normal((k, b), dtype=np.float32), discount=np.ones((k, b), np.float32))
  if with_observation:
    out["observation"] = dict(obs=_obs(spec, (k, b), rng), next_obs=_obs(spec, (k, b), rng),
                              discount=np.ones((k, b), np.float32), is_last=rng.uniform(size=(k, b)) < 0.01)
  return jax.device_put(out)


def measure(case: str, method: str, k: int, calls: int, b: int) -> dict:
  spec, action_dim, sac_overrides, rlv_overrides = _setting(case)
  config = sac.sac_config(**sac_overrides)
  aux = model.make_aux(model.rlv_config(**rlv_overrides), action_dim) if method == "rlv" else None
  learner = sac.learner_config(config)
  state = sac.init(jax.random.PRNGKey(0), spec, action_dim, config, aux)
  batches = _batches(spec, action_dim, k, b, aux is not None)
  rng = jax.random.PRNGKey(1)

  t0 = time.perf_counter()
  compiled = sac._update_burst_jit.lower(state, batches, rng, config=learner, aux=aux).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  xla_mib = ((mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes) / 2**20
             if mem is not None else float("nan"))

  one = jax.tree.map(lambda x: x[0], batches)
  cost = jax.jit(lambda s, bt, r: sac.update(s, bt, r, learner, aux)).lower(state, one, rng).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", float("nan"))) if cost else float("nan")

  times = []
  for i in range(calls + 1):
    t = time.perf_counter()
    state, metrics = compiled(state, batches, rng)
    jax.block_until_ready((state, metrics))
    if i > 0:
      times.append((time.perf_counter() - t) / k)
  ms = 1000 * float(np.median(times))
  return dict(case=case, method=method, burst=k, calls=calls, batch=b, ms=ms, compile_s=compile_s, xla_mib=xla_mib,
              mflop=flops / 1e6, gflops=flops / 1e9 / (ms / 1000), critic_loss=float(metrics["critic_loss"][-1]),
              backend=jax.default_backend())


def main(argv) -> None:
  del argv
  unknown = sorted(set(_CASES.value) - set(CASES))
  if unknown:
    raise app.UsageError(f"unknown cases {unknown}; pick among {CASES}")
  print(f"{'case':16s} {'ms/update':>10s} {'compile s':>10s} {'XLA MiB':>8s} {'MFLOP/upd':>10s} {'GFLOP/s':>8s} "
        f"{'RLV/SAC':>8s}", flush=True)
  for case in _CASES.value:
    k = _IMAGE_BURST.value if case == "image48" else _BURST.value
    base = None
    for method in ("sac", "rlv"):
      r = measure(case, method, k, _CALLS.value, _BATCH.value)
      base = r["ms"] if method == "sac" else base
      ratio = f"{r['ms'] / base:8.2f}" if method == "rlv" else f"{'':8s}"
      print(f"{case + '/' + method:16s} {r['ms']:10.2f} {r['compile_s']:10.1f} {r['xla_mib']:8.1f} {r['mflop']:10.1f} "
            f"{r['gflops']:8.2f} {ratio}", flush=True)
      if _JSON.value:
        os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
        with open(_JSON.value, "a") as f:
          f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
  app.run(main)
