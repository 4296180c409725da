"""PPO on gymnax MinAtar: environment steps per second and training return against environment steps.

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/ppo_minatar.py \
      --games Breakout-MinAtar,SpaceInvaders-MinAtar,Asterix-MinAtar --encoder mlp --time_limit 240

One run per game: `ppo_config()` (64 envs x 128 steps, 4 epochs x 8 minibatches, lr 5e-4 annealed over
`--total_env_steps`, gamma 0.99) and `make_actor_critic(encoder=...)`, stepped until `--total_env_steps` or
`--time_limit` seconds. Steps per second exclude the first update (compilation); steps per CPU-second (process
time, all threads) tell whether other processes shared the machine (on an idle 2-core machine the wall rate is
up to twice that). The return at a mark is the mean `episode_return` (training episodes, sampled actions) of
the updates in the last `--window` env steps up to it. Prints a summary table and a return-vs-steps curve
(markdown).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from vidrl_jax.envs.gymnax_env import make_gymnax
from vidrl_jax.nets.actor_critic import make_actor_critic
from vidrl_jax.nets.impala import impala_channels
from vidrl_jax.rl import ppo


def network(encoder: str, num_actions: int, impala_multiplier: float):
  """(apply_fn, init_fn, description) of the benchmarked actor-critic."""
  if encoder == "mlp":
    return (*make_actor_critic(num_actions, "mlp", hidden=(256, 256)),
            "MLP 256-256 relu on the flattened 10x10xC frame")
  if encoder == "minatar":
    return (*make_actor_critic(num_actions, "minatar"), "MinAtar CNN: conv16 3x3 + dense 128")
  channels = impala_channels(impala_multiplier)
  return (*make_actor_critic(num_actions, "impala", channels=channels, features=256),
          f"IMPALA-CNN channels {channels}, fc 256")


def run_game(game: str, args: argparse.Namespace) -> dict:
  """Trains PPO on one game within the step and time budgets; returns its speed and return curve."""
  env = make_gymnax(game, args.num_envs)
  apply_fn, init_fn, net = network(args.encoder, env.num_actions, args.impala_multiplier)
  params = init_fn(jax.random.PRNGKey(args.seed), jnp.zeros((1,) + env.obs_shape, env.obs_dtype))
  config = ppo.ppo_config(num_envs=args.num_envs, num_steps=args.num_steps, total_env_steps=args.total_env_steps,
                          unroll_updates=args.unroll)
  task = ppo.make_ppo_task(env, apply_fn, params, config, name=game)
  state = jax.jit(task.init)(jax.random.PRNGKey(args.seed))
  step = jax.jit(task.step, donate_argnums=0)
  base = jax.random.PRNGKey(args.seed + 1)

  start = time.perf_counter()
  state, metrics = step(state, None, jax.random.fold_in(base, 0))
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  curve = [(float(metrics["env_steps"]), float(metrics["episode_return"]))]
  timed_start, cpu_start, timed_steps = time.perf_counter(), time.process_time(), 0
  for i in range(1, task.num_steps):
    if time.perf_counter() - timed_start > args.time_limit:
      break
    state, metrics = step(state, None, jax.random.fold_in(base, i))
    metrics = jax.device_get(metrics)
    timed_steps += args.num_envs * args.num_steps
    curve.append((float(metrics["env_steps"]), float(metrics["episode_return"])))
  elapsed = time.perf_counter() - timed_start
  cpu_s = time.process_time() - cpu_start
  steps = np.array([c[0] for c in curve])
  returns = np.array([c[1] for c in curve])

  def return_at(mark: float) -> float | None:
    if steps[-1] < mark * 0.999:
      return None
    sel = (steps <= mark) & (steps > mark - args.window)
    return float(returns[sel].mean())

  return dict(game=game, network=net, compile_s=compile_s, steps_per_s=timed_steps / max(elapsed, 1e-9),
              steps_per_cpu_s=timed_steps / max(cpu_s, 1e-9),
              env_steps=float(steps[-1]), final_return=float(returns[-5:].mean()),
              marks={m: return_at(m) for m in args.marks}, curve=curve)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--games", default="Breakout-MinAtar,SpaceInvaders-MinAtar,Asterix-MinAtar")
  parser.add_argument("--encoder", default="mlp", choices=["mlp", "minatar", "impala"])
  parser.add_argument("--impala_multiplier", type=float, default=1.0)
  parser.add_argument("--unroll", action="store_true", help="config.unroll_updates (CNN gradients on XLA:CPU)")
  parser.add_argument("--num_envs", type=int, default=64)
  parser.add_argument("--num_steps", type=int, default=128)
  parser.add_argument("--total_env_steps", type=int, default=3_000_000)
  parser.add_argument("--time_limit", type=float, default=240.0, help="seconds of training per game")
  parser.add_argument("--marks", default="1500000,3000000", help="env steps at which to report the return")
  parser.add_argument("--window", type=float, default=100_000, help="env steps averaged before each mark")
  parser.add_argument("--curve_every", type=float, default=250_000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="", help="optional json file for the raw results")
  args = parser.parse_args()
  args.marks = [float(m) for m in args.marks.split(",") if m]

  results = []
  for game in args.games.split(","):
    results.append(run_game(game, args))
    r = results[-1]
    print(f"{game}: {r['steps_per_s']:.0f} steps/s, {r['env_steps']:.0f} steps, return {r['final_return']:.2f}",
          flush=True)

  print(f"\nPPO on MinAtar, {args.num_envs} envs x {args.num_steps} steps, {jax.devices()[0].platform}, "
        f"network: {results[0]['network']}\n")
  head = ["game", "env steps/s", "per CPU-second", "compile s", "env steps run"] + [f"return @{m / 1e6:g}M" for m in args.marks]
  print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
  for r in results:
    marks = [("-" if v is None else f"{v:.2f}") for v in r["marks"].values()]
    print(f"| {r['game']} | {r['steps_per_s']:,.0f} | {r['steps_per_cpu_s']:,.0f} | {r['compile_s']:.1f} | {r['env_steps']:,.0f} | "
          + " | ".join(marks) + " |")

  print("\nTraining return (mean of the updates in the preceding window) against env steps:\n")
  grid = np.arange(args.curve_every, max(r["env_steps"] for r in results) * 1.001 + 1, args.curve_every)
  print("| env steps | " + " | ".join(r["game"] for r in results) + " |\n|" + "---|" * (len(results) + 1))
  for g in grid:
    cells = []
    for r in results:
      steps = np.array([c[0] for c in r["curve"]])
      rets = np.array([c[1] for c in r["curve"]])
      sel = (steps <= g) & (steps > g - args.window)
      cells.append(f"{rets[sel].mean():.2f}" if steps[-1] >= g * 0.999 and sel.any() else "-")
    print(f"| {g:,.0f} | " + " | ".join(cells) + " |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f)


if __name__ == "__main__":
  main()
