"""RLV's results: per-run curves from the metric log, aggregated per condition over seeds (per env step the IQM
with its 95% stratified-bootstrap confidence interval via `vidrl_jax.stats`/rliable, and mean +- s.e. as the
paper), the steps each condition takes to reach its baseline's final return and the ratio to the baseline's (with
a bootstrap interval over seeds), `results.md` and the PNGs (IQM curves with their interval bands).

A condition is a stage name plus its runs' label without the seed: run "medium/seed3" of stage `rlv` belongs to
condition `rlv/medium`; run "seed3" of stage `sac` to `sac`. Baselines: `sac` for the main runs, the ablations
and BCO(0); `shift/sac` (SAC with the same encoder) for the domain-shift runs.
"""

from __future__ import annotations

import os
import re
from typing import Any

import ml_collections
import numpy as np

from vidrl_jax import plots, stats
from vidrl_jax.train import MetricWriter
from vidrl_jax.train.loop import Task

CI_SEED = 0
# a pool's fields in results.json: its own returns and size, and its snapshot (`data.make_pools`)
POOL_FIELDS = ("mean_return", "std_return", "episodes", "snapshot_by", "target", "expert_episodes",
               "expert_greedy_return", "target_reached")
INTERVAL_NOTE = (f"seeds: the runs per condition. IQM: the interquartile mean over seeds (with fewer than 4 seeds "
                 f"nothing is trimmed: the mean); [a, b]: its {stats.interval_name()}, {stats.REPS} resamples of the "
                 f"seeds; the plots show the IQM curve with that interval per env step. Steps ratio intervals: "
                 f"seeds of both conditions resampled, whole curves kept.")


POOL_NOTE = ("mean return: the pool's own episodes (the expert's actions, stochastic unless data.greedy); snapshot by "
             "return: the expert at its first evaluation whose greedy return (over env.eval_envs episodes) reached "
             "the target, or at data.max_expert_episodes when none did; by episodes: after data.snapshots episodes.")


def stage_curves(writer: MetricWriter, task: Task) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
  """{condition: [(env steps, greedy return) per seed]} from a fused stage's `eval/return/<label>` rows."""
  rows = writer.rows(task.name)
  env_steps = {r["step"]: r["env_steps"] for r in rows if "env_steps" in r}
  runs: dict[str, dict[int, float]] = {}
  for r in rows:   # a resumed run rewrites its rows: the last one of a step wins
    for k, v in r.items():
      if k.startswith("eval/return/") and r["step"] in env_steps:
        runs.setdefault(k[len("eval/return/"):], {})[int(env_steps[r["step"]])] = float(v)
  out: dict[str, list] = {}
  for label, curve in runs.items():
    cond = re.sub(r"/?seed\d+$", "", label)
    name = f"{task.name}/{cond}" if cond else task.name
    x = np.array(sorted(curve), np.int64)
    out.setdefault(name, []).append((x, np.array([curve[s] for s in x], np.float64)))
  return out


def baseline_of(condition: str) -> str:
  return "shift/sac" if condition.startswith("shift/") else "sac"


def aggregate(curves: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
  """`stats.aggregate_curves` with the x axis named env_steps: per env step every seed evaluated, mean, s.e., IQM
  and their 95% stratified-bootstrap intervals; the seeds' finals."""
  out = stats.aggregate_curves(curves, seed=CI_SEED)
  out["env_steps"] = [int(s) for s in out.pop("x")]
  return out


def summarise(config: ml_collections.ConfigDict, pools: dict, curves: dict, seconds: dict) -> dict:
  """results.json's content: pools, per-condition aggregates, final-return statistics and the speed-ups."""
  agg = {k: aggregate(v) for k, v in sorted(curves.items()) if v}
  finals = {k: stats.summary(np.asarray(a["final"]), seed=CI_SEED) for k, a in agg.items() if a["final"]}
  speed = {}
  for name in agg:
    base = baseline_of(name)
    if name == base or base not in agg or not agg[base]["final"]:
      continue
    threshold = float(np.mean(agg[base]["final"]))
    speed[name] = dict(baseline=base,
                       **stats.steps_ratio(curves[name], curves[base], threshold, seed=CI_SEED))
  return dict(pools={q: {k: p[k] for k in POOL_FIELDS if k in p} for q, p in pools.items()},
              curves=agg, final=finals, speedup=speed, seeds=list(config.seeds), seconds=seconds,
              ablation_quality=str(config.ablation_quality))


def plots_of(workdir: str, results: dict, pools: dict) -> list[str]:
  """One PNG per quality (SAC, RLV, BCO(0) where run), one for the ablations, one per shift strength."""
  agg, paths = results["curves"], []
  groups: dict[str, list[str]] = {}
  for q in pools:
    groups[f"returns_{q}"] = ["sac", f"rlv/{q}", f"bco/{q}"]
  groups["ablations"] = ["sac", f"rlv/{results.get('ablation_quality', 'medium')}"] + [
      k for k in agg if k.startswith("ablation/")]
  shift_baselines = [k for k in agg if k.startswith("shift/") and k.count("/") == 1]   # shift/sac, shift/rnd
  for s in sorted({k.split("/")[-1] for k in agg if k.startswith("shift/") and k.count("/") == 2}):
    groups[f"shift_{s}"] = shift_baselines + [k for k in agg if k.startswith("shift/") and k.endswith(f"/{s}")]
  for file, names in groups.items():
    shown = {k: agg[k] for k in names if k in agg}
    if len(shown) < 2:
      continue
    series, spread, what = iqm_bands(shown)
    q = file.split("_", 1)[-1]
    hlines = {f"{q} data": pools[q]["mean_return"]} if q in pools and "mean_return" in pools[q] else None
    paths.append(plots.curves(os.path.join(workdir, f"{file}.png"), series, "environment steps",
                              "greedy return, IQM over seeds", f"RLV, Acrobot: {file}\n{what}", hlines=hlines,
                              spread=spread))
  return paths


def iqm_bands(shown: dict[str, dict]) -> tuple[dict, dict, str]:
  """(series, bands, what the band is) for `plots.curves` from `aggregate`s: per condition (labelled with its number
  of seeds) the IQM over seeds against env steps and its 95% stratified-bootstrap interval."""
  label = lambda k, v: f"{k} ({stats.seeds(v['n'])})"
  series = {label(k, v): (v["env_steps"], v["iqm"]) for k, v in shown.items()}
  spread = {label(k, v): (v["iqm_ci_low"], v["iqm_ci_high"]) for k, v in shown.items()}
  return series, spread, "shaded: 95% stratified-bootstrap CI of the IQM over seeds"


def _fmt(x: float | None, digits: int = 1) -> str:
  return "never" if x is None else f"{x:.{digits}f}"


def markdown(results: dict) -> str:
  """results.md: pools, final returns (mean +- s.e., IQM [95% CI]) and the steps to the baseline's final return."""
  lines = ["# RLV on Acrobot", "", "| observation pool | episodes | mean return | snapshot by | target | target "
           "reached | expert episodes | expert's greedy return |", "|---|---|---|---|---|---|---|---|"]
  number = lambda p, k: f"{p[k]:.1f}" if p.get(k) is not None else ""
  for q, p in results["pools"].items():
    ret = number(p, "mean_return") or "n/a (not written by the project)"
    reached = {True: "yes", False: "no (taken at the maximum)"}.get(p.get("target_reached"), "")
    lines.append(f"| {q} | {p.get('episodes', '')} | {ret} | {p.get('snapshot_by', '')} | {number(p, 'target')} | "
                 f"{reached} | {p.get('expert_episodes', '')} | {number(p, 'expert_greedy_return')} |")
  lines += ["", POOL_NOTE]
  lines += ["", "| condition | seeds | env steps | final return, mean +- s.e. | IQM [95% CI] | steps to baseline's "
            "final (ratio [95% CI]) |", "|---|---|---|---|---|---|"]
  for k, c in results["curves"].items():
    f, sp = results["final"].get(k), results["speedup"].get(k)
    if not f:
      continue
    ci = sp and sp["ratio_ci"]
    ratio = "baseline" if sp is None else (
        f"{_fmt(sp['steps_a'], 0)} vs {_fmt(sp['steps_b'], 0)} ({_fmt(sp['ratio'], 2)}"
        + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") + ")")
    lines.append(f"| {k} | {c['n']} | {c['env_steps'][-1]} | {f['mean']:.1f} +- {f['se']:.1f} | "
                 f"{f['iqm']:.1f} [{f['iqm_ci'][0]:.1f}, {f['iqm_ci'][1]:.1f}] | {ratio} |")
  lines += ["", INTERVAL_NOTE]
  lines += ["", "Seconds per stage (this invocation): " + ", ".join(f"{k} {v}" for k, v in
                                                                   results["seconds"].items()), ""]
  return "\n".join(lines)
