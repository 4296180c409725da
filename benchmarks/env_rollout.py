"""Environment steps per second with random actions: raw envpool Procgen from Python, Procgen inside `jax.jit`
through envpool's XLA interface, and gymnax MinAtar vmapped inside `jax.jit`.

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/env_rollout.py [--game bigfish] [--num_envs 16] [--steps 1000]

Each row is the median over `--repeats` timed runs of `--steps` batched steps, after one untimed warm-up run
(which also compiles). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vidrl_jax.envs import rollout
from vidrl_jax.envs.base import VecEnv
from vidrl_jax.envs.gymnax_env import make_gymnax
from vidrl_jax.envs.procgen import make_procgen, make_procgen_pool


def median_rate(run: Callable[[], None], env_steps: int, repeats: int) -> tuple[float, float, float]:
  """Warms up once, then returns the (median, min, max) env steps per second over `repeats` calls of `run`."""
  run()
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    rates.append(env_steps / (time.perf_counter() - start))
  return statistics.median(rates), min(rates), max(rates)


def python_envpool(args: argparse.Namespace) -> Callable[[], None]:
  """(a) envpool's own synchronous `step` called from a Python loop."""
  pool = make_procgen_pool(args.game, args.num_envs)
  pool.reset()
  actions = np.random.default_rng(0).integers(0, 15, (args.steps, args.num_envs)).astype(np.int32)

  def run():
    for a in actions:
      pool.step(a)
  return run


def jitted_rollout(env: VecEnv, steps: int) -> Callable[[], None]:
  """A jitted `lax.scan` rollout of a uniform random policy through `env.step` (state carried across runs)."""
  def policy(params, obs, rng):
    del params, obs
    return jax.random.randint(rng, (env.num_envs,), 0, env.num_actions)

  fn = jax.jit(lambda s, o, k: rollout(env, policy, None, s, o, k, steps)[:2])
  carry = list(env.reset(jax.random.key(0)))
  keys = iter(jax.random.split(jax.random.key(1), 1000))

  def run():
    carry[:] = jax.block_until_ready(fn(*carry, next(keys)))
  return run


def raw_xla_rollout(args: argparse.Namespace) -> Callable[[], None]:
  """(b0) envpool's XLA `step` alone in a jitted scan (envpool's own next-step auto-reset, no bookkeeping)."""
  pool = make_procgen_pool(args.game, args.num_envs)
  pool.reset()
  handle, _, _, xla_step = pool.xla()

  def body(h, key):
    h, (obs, *_) = xla_step(h, jax.random.randint(key, (args.num_envs,), 0, 15))
    return h, obs[:, 0, 0, 0]

  fn = jax.jit(lambda h, k: jax.lax.scan(body, h, jax.random.split(k, args.steps)))
  state = [jnp.asarray(handle)]

  def run():
    state[0] = jax.block_until_ready(fn(state[0], jax.random.key(0))[0])
  return run


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--game', default='bigfish', help='Procgen game')
  parser.add_argument('--minatar', default='Breakout-MinAtar', help='gymnax MinAtar env')
  parser.add_argument('--num_envs', type=int, default=16)
  parser.add_argument('--minatar_envs', type=int, default=None, help='copies for gymnax (default: --num_envs)')
  parser.add_argument('--steps', type=int, default=1000, help='batched steps per timed run')
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  minatar_envs = args.minatar_envs or args.num_envs

  rows = [
      (f'(a) envpool Procgen `{args.game}`, Python loop', args.num_envs, python_envpool(args)),
      (f'(b) Procgen `{args.game}` `VecEnv`, jit + scan (XLA interface)', args.num_envs,
       jitted_rollout(make_procgen(args.game, args.num_envs), args.steps)),
      ('(b0) envpool XLA step alone, jit + scan', args.num_envs, raw_xla_rollout(args)),
      (f'(c) gymnax `{args.minatar}`, vmap + jit + scan', minatar_envs,
       jitted_rollout(make_gymnax(args.minatar, minatar_envs), args.steps)),
  ]
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}; {args.steps} batched steps per run, '
        f'median of {args.repeats} runs after a warm-up\n')
  print('| rollout | envs | env steps/s (median) | min – max |')
  print('|---|---:|---:|---:|')
  for name, n, run in rows:
    med, lo, hi = median_rate(run, n * args.steps, args.repeats)
    print(f'| {name} | {n} | {med:,.0f} | {lo:,.0f} – {hi:,.0f} |', flush=True)


if __name__ == '__main__':
  main()
