"""Environment steps per second of RLV's environments: Meta-World push on the host (state only, 48x48 frames, 48x48
frames in the strong shifted domain) and gymnax Acrobot (RLV's thresholded version) in a jitted `lax.scan`.

  MUJOCO_GL=egl JAX_PLATFORMS=cpu .venv/bin/python benchmarks/rlv_env_speed.py
  MUJOCO_GL=egl JAX_PLATFORMS=cpu .venv/bin/python benchmarks/rlv_env_speed.py --steps 2000 --scan 1000

Meta-World: `MetaWorldEnv` stepped with uniform random actions for `--steps` decisions (a reset every 200), after
one warm-up episode; the image cases render every observation (`vidrl_jax.envs.mjrender`, fast settings: no
anti-aliasing, shadows or reflections). Acrobot: `methods.rlv.data.acrobot(num_envs)` stepped `--scan` times per
call of one jitted `lax.scan` with uniform random actions (auto-reset inside), timed after compiling; env steps/s
counts every copy's steps.

Measured on the 2-core CPU machine (MuJoCo 3.17 with Mesa llvmpipe under EGL; other jobs share the two cores, so
the numbers move with their load), with the first command above, 2026-12-02 00:00 UTC (load average about 3) and
2026-12-01 23:48 UTC (load average about 5):
  metaworld push-v3 state                   1,868 / 1,904 steps/s
  metaworld push-v3 48x48 image               185 /   106 steps/s
  metaworld push-v3 48x48 strong domain       205 /    89 steps/s
  gymnax Acrobot num_envs=1               255,914 / 150,502 steps/s   (compile 1.3 / 1.8 s)
  gymnax Acrobot num_envs=16            1,485,703 / 930,245 steps/s   (compile 1.6 / 2.3 s)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def metaworld_speed(steps: int, image_size: int, domain: str) -> float:
  """Decisions per second of push-v3 with random actions (physics, state, and frames where image_size > 0)."""
  from vidrl_jax.envs.metaworld import MetaWorldEnv
  env = MetaWorldEnv("push-v3", image_size=image_size, domain=domain)
  actions = np.random.default_rng(0).uniform(-1, 1, (steps, env.action_dim)).astype(np.float32)
  env.reset(0)
  for a in actions[:env.max_steps]:   # warm-up episode
    env.step(a)
  t0 = time.perf_counter()
  for i, a in enumerate(actions):
    if i % env.max_steps == 0:
      env.reset(i)
    env.step(a)
  return steps / (time.perf_counter() - t0)


def acrobot_speed(num_envs: int, scan: int, repeats: int) -> tuple[float, float]:
  """Env steps per second (all copies) of RLV's Acrobot in a jitted lax.scan, and the compile time in seconds."""
  import jax

  from vidrl_jax.methods.rlv.data import acrobot
  env = acrobot(num_envs)

  @jax.jit
  def run(state, rng):
    def body(state, key):
      k_act, k_env = jax.random.split(key)
      action = jax.random.uniform(k_act, (num_envs, 1), minval=-1.0, maxval=1.0)
      state, _, reward, _, _ = env.step(state, action, k_env)
      return state, reward
    state, rewards = jax.lax.scan(body, state, jax.random.split(rng, scan))
    return state, rewards.sum()

  state, _ = env.reset(jax.random.key(0))
  t0 = time.perf_counter()
  state, total = run(state, jax.random.key(1))
  jax.block_until_ready(total)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i in range(repeats):
    state, total = run(state, jax.random.key(2 + i))
  jax.block_until_ready(total)
  return num_envs * scan * repeats / (time.perf_counter() - t0), compile_s


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=1000, help="Meta-World decisions per case")
  parser.add_argument("--scan", type=int, default=1000, help="Acrobot steps per jitted scan")
  parser.add_argument("--repeats", type=int, default=20, help="timed scans per Acrobot case")
  args = parser.parse_args()
  for label, size, domain in (("state", 0, "none"), ("48x48 image", 48, "none"), ("48x48 strong domain", 48,
                                                                                  "strong")):
    print(f"metaworld push-v3 {label:22s} {metaworld_speed(args.steps, size, domain):10,.0f} steps/s", flush=True)
  for n in (1, 16):
    speed, compile_s = acrobot_speed(n, args.scan, args.repeats)
    print(f"gymnax Acrobot num_envs={n:<3d}           {speed:10,.0f} steps/s   (compile {compile_s:.1f} s)",
          flush=True)


if __name__ == "__main__":
  main()
