"""Frames per second of DeepMind Control rendering on this machine, default against fast rendering.

  MUJOCO_GL=egl JAX_PLATFORMS=cpu .venv/bin/python benchmarks/render_speed.py
  MUJOCO_GL=egl .venv/bin/python benchmarks/render_speed.py --tasks walker-walk,cheetah-run --size 64 --frames 200

For each task, `--frames` frames of `--size` x `--size` from camera 0, each way on a freshly built env (the
quality fields only act before the first render), timed for `physics.render` alone and for the env's `step` with
its rendered 'image' observation (action repeat 2, random actions), with
- `default`: dm_control's settings (4x multisample anti-aliasing, shadows, reflections);
- `quality`: only `set_fast_render` (offsamples 0 and shadowsize 0: no anti-aliasing, no shadow map; render only);
- `fast`: `vidrl_jax.envs.dmc`'s fast rendering (`set_fast_render` and `FAST_RENDER_FLAGS`: the shadow and
  reflection flags off too), the default where JAX runs on the CPU.
Under EGL without a GPU, MuJoCo renders with Mesa's llvmpipe (software), where the difference is largest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidrl_jax.envs.dmc import FAST_RENDER_FLAGS, make_host_env  # noqa: E402


def render_fps(task: str, size: int, frames: int, mode: str) -> float:
  """Frames per second of `physics.render` alone in `mode` (default, quality or fast), after a warm-up frame."""
  env = make_host_env(task, image_size=0, fast_render=mode != "default")
  env.reset(0)
  flags = FAST_RENDER_FLAGS if mode == "fast" else None
  env.physics.render(size, size, camera_id=0, render_flag_overrides=dict(flags or {}))
  t0 = time.perf_counter()
  for _ in range(frames):
    env.physics.render(size, size, camera_id=0, render_flag_overrides=dict(flags or {}))
  return frames / (time.perf_counter() - t0)


def step_fps(task: str, size: int, frames: int, mode: str) -> float:
  """Decisions per second of `env.step` with a rendered image observation (physics and rendering)."""
  if mode == "quality":
    return float("nan")
  env = make_host_env(task, image_size=size, fast_render=mode == "fast")
  env.reset(0)
  actions = np.random.default_rng(0).uniform(-1, 1, (frames, env.action_dim)).astype(np.float32)
  t0, done = time.perf_counter(), 0
  while done < frames:
    for a in actions[done:done + env.max_steps]:
      env.step(a)
    done += min(env.max_steps, frames - done)
    if done < frames:
      env.reset(done)
  return frames / (time.perf_counter() - t0)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", default="walker-walk,cheetah-run")
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--frames", type=int, default=200)
  parser.add_argument("--json", default="", help="append one JSON line per task here")
  args = parser.parse_args()
  print(f"MUJOCO_GL={os.environ.get('MUJOCO_GL', '')}, {args.size}x{args.size}, {args.frames} frames")
  print(f"{'task':<14}{'what':<14}{'default fps':>12}{'quality fps':>12}{'fast fps':>10}{'fast speed-up':>14}")
  for task in args.tasks.split(","):
    row = {"task": task, "size": args.size, "frames": args.frames}
    for what, fn in (("render", render_fps), ("step+render", step_fps)):
      fps = {mode: fn(task, args.size, args.frames, mode) for mode in ("default", "quality", "fast")}
      row[what] = {f"{mode}_fps": round(v, 1) for mode, v in fps.items() if v == v}
      print(f"{task:<14}{what:<14}{fps['default']:>12.1f}{fps['quality']:>12.1f}{fps['fast']:>10.1f}"
            f"{fps['fast'] / fps['default']:>13.1f}x")
    if args.json:
      with open(args.json, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  main()
