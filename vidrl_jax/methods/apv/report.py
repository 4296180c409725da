"""APV's results (paper Fig. 5-6): per target task and variant, the seeds' success-rate curves (IQM with rliable's
95% intervals), the final success rate, the success rate averaged over the run's evaluations (the area under the
curve over its length, which still separates runs whose final rates are all 0), and each variant against DreamerV2
from scratch at equal env steps: rliable's probability of improvement on both.

`report` reads one workdir (the pipeline's own end); `aggregate_workdirs` reads several finished workdirs of one
config that ran different variants or seeds side by side (e.g. `--config.variants='("dreamerv2",)'` in a second
workdir) and writes the same table, `results.json`, `results.md` and curves into a directory of its own.
"""

from __future__ import annotations

import json

import ml_collections
import numpy as np

from vidrl_jax import config as config_lib
from vidrl_jax import io, plots, stats
from vidrl_jax.data import ownership
from vidrl_jax.errors import VidrlError
from vidrl_jax.train import MetricWriter, write_results

BASELINE = "dreamerv2"
AGGREGATE_FORMAT = "apv_aggregate"
# what may differ between the workdirs of one aggregated table
PER_WORKDIR = ("variants", "seeds", "pretrain.workdir", "probe")


def stage(task: str, variant: str, seed: int) -> str:
  return f"finetune/{task}/{variant}/seed{seed}"


def curves(writers: list[MetricWriter], task: str, variant: str, seeds) -> list[tuple[np.ndarray, np.ndarray]]:
  """Per seed that some workdir ran: (env steps, success rate) from its evaluation rows (a resumed run's last row
  wins); a stage found in two workdirs is refused (which one counts would be a guess)."""
  out = []
  for s in seeds:
    found = [(w.workdir, rows) for w in writers if (rows := {
        int(r["eval/env_steps"]): float(r["eval/success_rate"]) for r in w.rows(stage(task, variant, s))
        if "eval/success_rate" in r})]
    if len(found) > 1:
      raise VidrlError(f"{stage(task, variant, s)} was run in both {found[0][0]} and {found[1][0]}; aggregate "
                       f"workdirs that ran different variants or seeds")
    if found:
      rows = found[0][1]
      x = np.asarray(sorted(rows))
      out.append((x, np.asarray([rows[k] for k in x])))
  return out


def _versus(a: list, b: list, reps: int, seed: int) -> dict:
  """A variant against the baseline on the seeds' final and averaged success rates: P(variant > baseline)."""
  fa, fb = np.array([[c[1][-1]] for c in a]), np.array([[c[1][-1]] for c in b])
  ma, mb = np.array([[np.mean(c[1])] for c in a]), np.array([[np.mean(c[1])] for c in b])
  return {"final": stats.probability_of_improvement(fa, fb, reps, seed=seed),
          "average": stats.probability_of_improvement(ma, mb, reps, seed=seed)}


def report(config: ml_collections.ConfigDict, out: str, writers: list[MetricWriter], runs: dict | None = None,
           reps: int = stats.REPS, seed: int = 0, probe: dict | None = None) -> dict:
  """The table of `config.env.tasks` x `config.variants` over `config.seeds` from the writers' rows, into `out`:
  results.json, results.md and curves_<task>.png; `probe` (the Fig. 8 probe's results) goes beside them."""
  iv = lambda s: f"{s['iqm']:.2f} [{s['iqm_ci'][0]:.2f}, {s['iqm_ci'][1]:.2f}]"
  results, lines = {}, [
      "| task | variant | seeds | final success: IQM [95% CI] | mean +- s.e. | success averaged over evaluations: "
      f"IQM [95% CI] | P(> {BASELINE}), final / averaged [95% CI] |", "|---|---|---|---|---|---|---|"]
  for task in config.env.tasks:
    found = {v: cs for v in config.variants if (cs := curves(writers, task, v, config.seeds))}
    series, bands = {}, {}
    for variant, cs in found.items():
      agg = stats.aggregate_curves(cs, reps, seed=seed)
      final = stats.summary([c[1][-1] for c in cs], reps, seed=seed)
      average = stats.summary([np.mean(c[1]) for c in cs], reps, seed=seed)
      versus = (_versus(cs, found[BASELINE], reps, seed)
                if variant != BASELINE and BASELINE in found else None)
      results[f"{task}/{variant}"] = {"curve": agg, "final": final, "average": average, "versus_baseline": versus,
                                      "env_steps": int(agg["x"][-1]) if agg["x"] else 0,
                                      "runs": (runs or {}).get(f"{task}/{variant}", [])}
      series[variant] = (agg["x"], agg["iqm"])
      bands[variant] = (agg["iqm_ci_low"], agg["iqm_ci_high"])
      p = "" if versus is None else " / ".join(
          f"{versus[k]['p']:.2f} [{versus[k]['ci'][0]:.2f}, {versus[k]['ci'][1]:.2f}]" for k in ("final", "average"))
      lines.append(f"| {task} | {variant} | {len(cs)} | {iv(final)} | {final['mean']:.2f} +- {final['se']:.2f} | "
                   f"{iv(average)} | {p} |")
    if series:
      plots.curves(io.join(out, f"curves_{task}.png"), series, "env steps", "success rate (IQM)",
                   f"APV vs DreamerV2: {task}", spread=bands)
  if probe:
    lines += ["", f"Fig. 8 probe on {probe['task']}: held-out MSE / variance after training the regression head",
              "", "| features | " + " | ".join(next(iter(probe["models"].values()))) + " |", "|---|---|---|"]
    lines += [f"| {m} | " + " | ".join(f"{r['final']:.3f}" for r in d.values()) + " |"
              for m, d in probe["models"].items()]
  write_results(out, {"config": config.to_dict(), "results": results, "probe": probe}, "\n".join(lines))
  return results


def _read_config(workdir: str) -> dict:
  path = io.join(workdir, "config.json")
  if not io.exists(path):
    raise VidrlError(f"{path} does not exist; aggregate workdirs that experiments/apv.py wrote (it writes "
                     f"config.json at launch)")
  try:
    cfg = io.read_json(path)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise VidrlError(f"{path} is not valid JSON ({e}); rerun that workdir's experiment to rewrite it") from None
  if cfg.get("method") != "apv":
    raise VidrlError(f"{path} is the config of method {cfg.get('method')!r}, not an APV run")
  return cfg


def aggregate_workdirs(workdirs: list[str], out: str, reps: int = stats.REPS, seed: int = 0) -> dict:
  """One table over several APV workdirs of one config (they may differ in `PER_WORKDIR` only), written to `out`
  (a directory the project claims; never one it did not write). Returns results.json's content."""
  if not workdirs:
    raise VidrlError("no workdirs to aggregate; pass the APV workdirs whose variants or seeds make the table")
  cfgs = [_read_config(w) for w in workdirs]
  for w, cfg in zip(workdirs[1:], cfgs[1:]):
    diff = config_lib.differing_keys(cfgs[0], cfg, ignore=PER_WORKDIR)
    if diff:
      raise VidrlError(f"{w} ran another config than {workdirs[0]} (keys {diff[:5]} differ, not only "
                       f"{', '.join(PER_WORKDIR)}); aggregate only workdirs of one config")
  merged = ml_collections.ConfigDict(cfgs[0])
  merged.variants = tuple(dict.fromkeys(v for cfg in cfgs for v in cfg["variants"]))
  merged.seeds = tuple(sorted({int(s) for cfg in cfgs for s in cfg["seeds"]}))
  ownership.claim_output(out, AGGREGATE_FORMAT, {"workdirs": list(workdirs)})
  results = report(merged, out, [MetricWriter(w) for w in workdirs], reps=reps, seed=seed)
  if not results:
    raise VidrlError(f"none of {workdirs} holds an evaluation of the fine-tuning stages yet; aggregate them once "
                     f"their runs have evaluated")
  return {"method": "apv", "workdirs": list(workdirs), "results": results,
          "plots": {f"curves_{t}": io.join(out, f"curves_{t}.png") for t in merged.env.tasks
                    if any(k.startswith(f"{t}/") for k in results)}}
