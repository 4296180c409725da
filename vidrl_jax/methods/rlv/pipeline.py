"""RLV on Acrobot (paper §4.1, Fig. 3): observation data of three qualities, then per quality and seed SAC on
interaction alone (the baseline) and RLV (SAC plus the observation pool, Algorithm 1) -> greedy return against
environment steps, mean +- standard error over seeds, `results.json`, `results.md` and one PNG per quality.

Every stage is a stage of the one loop (`vidrl_jax.train.run`) in `workdir`, so a rerun resumes: the expert and
the pools (`data.make_pools`), then `sac/seed{s}` (the baseline does not see the pools, so it is shared by the
three qualities) and `rlv/{quality}/seed{s}`. Curves are the `eval/mean_return` rows of each stage (one greedy
episode per evaluation env copy every `sac.eval_every_episodes` episodes); a loop step is `train_every`
vector steps of `env.num_envs` copies.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ml_collections
import numpy as np

from vidrl_jax import io, plots
from vidrl_jax.envs.base import VecEnv
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.rlv import data as rlv_data
from vidrl_jax.methods.rlv import model
from vidrl_jax.rl import offpolicy
from vidrl_jax.train import MetricWriter, run
from vidrl_jax.train.loop import Task

METHODS = ("sac", "rlv")


def rlv_task(name: str, env: VecEnv, config: ml_collections.ConfigDict, seed: int, pool: Any,
             eval_env: VecEnv) -> Task:
  """RLV as an online stage: SAC (`config.sac`) with the RLV aux (`methods.rlv.model.make_aux` on
  `rlv_config(**config.rlv)`) and the observation `pool` drawn `config.obs_batch` per update beside SAC's batch."""
  rlv = model.rlv_config(**config.rlv)
  aux = model.make_aux(rlv, env.action_shape[0])
  return offpolicy.sac_task(name, env, None, config.sac, seed, eval_env=eval_env, aux=aux,
                            extra_sources={rlv.source: (pool, int(config.obs_batch))})


def curve(writer: MetricWriter, stage: str, env_steps_per_loop_step: int) -> tuple[np.ndarray, np.ndarray]:
  """(env steps, greedy return) of a stage's evaluations."""
  rows = [r for r in writer.rows(stage) if "eval/mean_return" in r]
  steps = {r["step"]: r["eval/mean_return"] for r in rows}   # a resumed run rewrites its rows: the last wins
  x = np.array(sorted(steps), np.int64)
  return x * env_steps_per_loop_step, np.array([steps[s] for s in sorted(steps)], np.float64)


def aggregate(curves: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, list[float]]:
  """Mean and standard error over seeds at the env steps every seed evaluated (s.e. 0 for one seed)."""
  common = sorted(set.intersection(*[set(x.tolist()) for x, _ in curves]))
  ys = np.array([[dict(zip(x.tolist(), y))[s] for s in common] for x, y in curves])
  se = ys.std(0, ddof=1) / np.sqrt(len(ys)) if len(ys) > 1 else np.zeros(len(common))
  return dict(env_steps=[int(s) for s in common], mean=ys.mean(0).tolist(), se=se.tolist(),
              final=ys[:, -1].tolist() if common else [])


def steps_to(agg: dict, threshold: float) -> int | None:
  """The first env step at which a mean curve reaches `threshold` (None if it never does)."""
  hit = [s for s, m in zip(agg["env_steps"], agg["mean"]) if m >= threshold]
  return hit[0] if hit else None


def speedup(curves: dict) -> dict:
  """Paper Fig. 3b's question per quality: steps for SAC and for RLV to reach SAC's final mean return, and their
  ratio (RLV / SAC; below 0.5 is the issue's bar)."""
  sac = curves["sac"]
  if not sac["env_steps"]:
    return {}
  threshold = float(np.mean(sac["final"]))
  out = {}
  for name, agg in curves.items():
    if name.startswith("rlv/"):
      a, b = steps_to(sac, threshold), steps_to(agg, threshold)
      out[name] = dict(threshold=threshold, sac_steps=a, rlv_steps=b,
                       ratio=None if a is None or b is None else b / a)
  return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  unknown = sorted(set(config.methods) - set(METHODS))
  if not config.seeds:
    raise VidrlError("config.seeds is empty; give at least one seed, e.g. --config.seeds='(0,)'")
  if unknown or "sac" not in config.methods:
    raise VidrlError(f"config.methods {tuple(config.methods)} must hold 'sac' (the baseline) and may hold "
                     f"'rlv'; known methods are {METHODS}")
  t0 = time.time()
  writer = MetricWriter(workdir)
  pools = rlv_data.make_pools(config, workdir, writer)
  t_data = time.time() - t0
  env = rlv_data.acrobot(config.env.num_envs, config.env.episode_steps)
  eval_env = rlv_data.acrobot(config.env.eval_envs, config.env.episode_steps)
  per_step = int(config.sac.train_every) * env.num_envs
  stages: dict[str, list[str]] = {"sac": []}
  for seed in config.seeds:
    name = f"sac/seed{seed}"
    run(offpolicy.sac_task(name, env, None, config.sac, seed, eval_env=eval_env), config.loop, workdir, writer,
        seed)
    stages["sac"].append(name)
  if "rlv" in config.methods:
    for quality, pool in pools.items():
      observations = rlv_data.load_pool(pool["dir"])
      stages[f"rlv/{quality}"] = []
      for seed in config.seeds:
        name = f"rlv/{quality}/seed{seed}"
        run(rlv_task(name, env, config, seed, observations, eval_env), config.loop, workdir, writer, seed)
        stages[f"rlv/{quality}"].append(name)
  curves = {k: aggregate([curve(writer, s, per_step) for s in names]) for k, names in stages.items()}
  results = dict(pools={q: {k: p[k] for k in ("mean_return", "std_return", "episodes", "expert_episodes")
                            if k in p} for q, p in pools.items()},
                 curves=curves, speedup=speedup(curves), seeds=list(config.seeds), seconds=dict(data=round(t_data, 1),
                                                                       total=round(time.time() - t0, 1)))
  results["plots"] = _plots(workdir, curves, pools)
  io.write_json(os.path.join(workdir, "results.json"), results)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(report(results))
  return results


def _plots(workdir: str, curves: dict, pools: dict) -> list[str]:
  paths = []
  for quality, pool in pools.items():
    shown = {k: v for k, v in curves.items() if k in ("sac", f"rlv/{quality}")}
    series = {k: (v["env_steps"], v["mean"]) for k, v in shown.items()}
    spread = {k: (np.subtract(v["mean"], v["se"]), np.add(v["mean"], v["se"])) for k, v in shown.items()}
    paths.append(plots.curves(os.path.join(workdir, f"returns_{quality}.png"), series, "environment steps",
                              "greedy return (mean +- s.e.)", f"Acrobot, {quality}-quality observations",
                              hlines={f"{quality} data": pool["mean_return"]} if "mean_return" in pool else None,
                              spread=spread))
  return paths


def report(results: dict) -> str:
  """results.md: the pools' returns and each method's final greedy return (mean +- s.e. over seeds)."""
  n = len(results["seeds"])
  lines = ["# RLV on Acrobot", "", "| observation pool | episodes | expert episodes | mean return |",
           "|---|---|---|---|"]
  for q, p in results["pools"].items():
    ret = f"{p['mean_return']:.1f}" if "mean_return" in p else "n/a (not written by the project)"
    lines.append(f"| {q} | {p.get('episodes', '')} | {p.get('expert_episodes', '')} | {ret} |")
  lines += ["", f"Final greedy return over {n} seed(s) (mean +- s.e.):", "",
            "| method | env steps | final return |", "|---|---|---|"]
  for k, c in results["curves"].items():
    if c["env_steps"]:
      se = np.std(c["final"], ddof=1) / np.sqrt(n) if n > 1 else 0.0
      lines.append(f"| {k} | {c['env_steps'][-1]} | {np.mean(c['final']):.1f} +- {se:.1f} |")
  for k, v in results.get("speedup", {}).items():
    lines.append(f"\n{k}: SAC's final return {v['threshold']:.1f} reached after {v['rlv_steps']} env steps "
                 f"(SAC: {v['sac_steps']}; ratio {v['ratio']})")
  lines += ["", f"Time: data {results['seconds']['data']} s, total {results['seconds']['total']} s.", ""]
  return "\n".join(lines)
