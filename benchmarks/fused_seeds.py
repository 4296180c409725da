"""Seeds side by side in one compiled program (`rl.fused`, PureJaxRL's vmap over runs) against one after another,
and against the host loop (`offpolicy.sac_task`: a jitted env scan and update burst per loop step, the replay on
the host), for SAC and RLV on RLV's Acrobot.

Reported per case: milliseconds per update of one run (a loop step of `train_every` env steps and as many
updates), after compilation, median over timed task steps; and the speed-up of R runs in one program over R
programs of one run each (R x the 1-run time / the R-run time).

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/fused_seeds.py [--runs 5] [--hidden 128,256] [--steps 1000]
  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/fused_seeds.py --runs 2 --hidden 8 --steps 100 --methods rlv \
      --repeats 1 --host_train_every 50                           # smallest setting (tests/test_benchmarks.py)

`--steps` (a multiple of 100, Acrobot's episode length) env steps and updates per timed task step; `--repeats`
timed task steps per case; the host loop is timed at each of `--host_train_every` ('' skips it). The smallest
setting is a smoke test, its times mean nothing: below the batch size (256) of collected transitions the first task
steps skip their updates, and the host loop's difference of two short runs is noise.

Measured 2026-12-02 on this 2-core CPU (load average 1.5), `--runs 5 --hidden 128 --steps 500`, ms per update:

  | method, 2x128 | 1 run | 5 runs in one program, per run | speed-up | compile s (1 / 5 runs) |
  | SAC           | 1.27  | 1.25                            | 1.02x    | 5.3 / 5.3              |
  | RLV           | 2.25  | 2.24                            | 1.01x    | 6.1 / 7.5              |

The update at batch 256 is compute-bound on these two cores, so side by side gains nothing here. The host loop,
SAC 2x128 (`host_ms(128, 2000, train_every)`: runs of 2,000 and 6,000 env steps; the difference of two runs is
noisy, 0.41 ms at train_every 50 with `host_ms(128, 1000, 50)`): 3.3 ms per update at train_every 1 (the official
schedule), 1.0 ms at train_every 50.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vidrl_jax.methods.rlv import data as rlv_data  # noqa: E402
from vidrl_jax.methods.rlv import model  # noqa: E402
from vidrl_jax.rl import fused, offpolicy, sac  # noqa: E402
from vidrl_jax.train import MetricWriter, loop_config, run  # noqa: E402


def _config(hidden: int, steps: int, train_every: int = 1):
  # random_steps=0: every loop step updates, so the time is the steady state's
  return sac.sac_config(actor_hidden=(hidden, hidden), critic_hidden=(hidden, hidden), random_steps=0,
                        train_every=train_every, num_episodes=100, eval_every_episodes=steps // 100,
                        checkpoint_every_episodes=0)


def _pool(n: int = 10_000) -> dict:
  r = np.random.default_rng(0)
  return dict(obs=r.normal(size=(1, n, 6)).astype(np.float32), next_obs=r.normal(size=(1, n, 6)).astype(np.float32),
              discount=np.ones((1, n), np.float32), is_last=np.zeros((1, n), bool), size=np.array([n], np.int32))


def fused_ms(runs: int, hidden: int, steps: int, method: str, repeats: int = 3) -> tuple[float, float]:
  """(ms per update of one run, compile + first task step s) of `runs` runs in one fused program."""
  env = rlv_data.acrobot(1)
  kw = {}
  if method == "rlv":
    kw = dict(aux=model.make_aux(model.rlv_config(adversarial=False), 1), extra_pools={"observation": _pool()},
              pool_batch=256)
  task = fused.fused_sac_task(method, env, _config(hidden, steps), [fused.Run(f"s{s}", s) for s in range(runs)],
                              **kw)
  state = jax.jit(task.init)(jax.random.PRNGKey(0))
  step = jax.jit(task.step, donate_argnums=0)
  t = time.perf_counter()
  state, _ = step(state, None, jax.random.PRNGKey(0))
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    state, _ = step(state, None, jax.random.PRNGKey(0))
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t)
  return 1e3 * float(np.median(times)) / (steps * runs), compile_s


def host_ms(hidden: int, steps: int, train_every: int) -> float:
  """ms per update of the host loop's SAC (VecCollector), one run: two fresh runs of `steps` and `3 * steps` env
  steps, the difference of their times over the difference of their updates (compilation cancels)."""
  env = rlv_data.acrobot(1)
  times = []
  for n in (steps, 3 * steps):
    config = _config(hidden, steps, train_every)
    config.num_episodes = n // 100
    with tempfile.TemporaryDirectory() as d:
      t = time.perf_counter()
      run(offpolicy.sac_task("sac", env, None, config, 0), loop_config(progress=False, checkpoint_every=10**9), d,
          MetricWriter(d), 0)
      times.append(time.perf_counter() - t)
  return 1e3 * (times[1] - times[0]) / (2 * steps)


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--runs", type=int, default=5)
  p.add_argument("--hidden", default="128,256")
  p.add_argument("--steps", type=int, default=1000)
  p.add_argument("--methods", default="sac,rlv")
  p.add_argument("--repeats", type=int, default=3, help="timed task steps per fused case (median)")
  p.add_argument("--host_train_every", default="1,50", help="train_every values of the host-loop timing ('': none)")
  a = p.parse_args()
  if a.steps < 100 or a.steps % 100 or a.repeats < 1:
    p.error("--steps must be a positive multiple of 100 (Acrobot's episode length) and --repeats >= 1")
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, load average {os.getloadavg()[0]:.1f}")
  print("| method | hidden | ms/update, 1 run | ms/update per run, "
        f"{a.runs} runs in one program | speed-up | compile s (1 / {a.runs}) |")
  print("|---|---|---|---|---|---|")
  for method in a.methods.split(","):
    for h in (int(x) for x in a.hidden.split(",")):
      one, c1 = fused_ms(1, h, a.steps, method, a.repeats)
      many, cr = fused_ms(a.runs, h, a.steps, method, a.repeats)
      print(f"| {method} | {h} | {one:.2f} | {many:.2f} | {one / many:.2f}x | {c1:.1f} / {cr:.1f} |", flush=True)
  for h in (int(x) for x in a.hidden.split(",")):
    for te in (int(x) for x in a.host_train_every.split(",") if x):
      print(f"host loop (offpolicy.sac_task), SAC, hidden {h}, train_every {te}: "
            f"{host_ms(h, a.steps, te):.2f} ms/update", flush=True)


if __name__ == "__main__":
  main()
