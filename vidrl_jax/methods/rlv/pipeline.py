"""RLV on Acrobot (paper §4.1 Fig. 3, §4.3, Fig. 8): observation data of three qualities, then SAC on interaction
alone, RLV per quality, the ablations of Fig. 8, BCO(0), and the state-based domain shift (paper §3.1) with and
without the adversarial term -> greedy return against environment steps per run, aggregated over seeds,
`results.json`, `results.md` and PNG curves.

Every stage is a stage of the one loop (`vidrl_jax.train.run`) in `workdir`, so a rerun resumes: the expert and
the pools (`data.make_pools`), then one fused stage per program (`vidrl_jax.rl.fused`: every seed, and every
pool a program can share, trained side by side in one jitted, vmapped program):

- `sac`: SAC on interaction alone, one run per seed (the baseline: it sees no pool, so the qualities share it);
- `rlv`: RLV (Algorithm 1) with each quality's pool, a run per (quality, seed);
- `ablation/<name>` (`config.ablations`, Fig. 8): RLV with other observation actions / rewards on
  `config.ablation_quality`'s pool, a run per seed;
- `bco/<quality>/seed<s>`: BCO(0) (`methods.rlv.baselines`), when `config.groups` holds "bco";
- `manipulation` (`config.manipulation`): Meta-World, `methods.rlv.manipulation` (results in
  `workdir/manipulation/`);
- `shift/<variant>` (`config.shift`): the `shift.quality` pool seen through the fixed invertible state map of
  `methods.rlv.domain` at each strength, a run per (strength, seed); every variant has SAC's vector encoder
  (`shift.state_encoder_hidden`) so the adversarial term has features to align; a variant's `kind` is "rlv" (RLV
  with the variant's `rlv_config` overrides), "sac" (SAC with that encoder and no pool: the baseline) or "rnd"
  (that SAC with RND's exploration bonus, `rl.rnd`, the paper's task-agnostic baseline of §4.3).

Curves are each run's `eval/return/<label>` rows (one greedy episode per evaluation env copy, every
`sac.eval_every_episodes` episodes).
"""

from __future__ import annotations

import time
from typing import Any

import ml_collections
import numpy as np

from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.rlv import data as rlv_data
from vidrl_jax.methods.rlv import baselines, domain, manipulation, model, report
from vidrl_jax.rl import fused, rnd
from vidrl_jax.train import MetricWriter, run, write_results

GROUPS = ("main", "ablations", "bco", "shift", "manipulation")
POOL_KEYS = ("obs", "next_obs", "discount", "is_last")
SHIFT_KINDS = ("sac", "rnd", "rlv")   # a shift variant: SAC, SAC with RND's bonus, RLV (with its overrides)


def _sac_config(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.sac.to_dict())
  c.update(overrides)
  return c


def _pool_arrays(pools: dict, qualities: list[str], labelled: bool) -> dict:
  keys = POOL_KEYS + (("action", "reward") if labelled else ())
  return fused.stack_pools([rlv_data.load_pool(pools[q]["dir"], labelled) for q in qualities], keys)


def _shifted(stacked: dict, strengths: list[str], seed: int) -> dict:
  """One pool seen through the state map at each strength: (1, N, ...) -> (len(strengths), N, ...)."""
  out = {k: np.repeat(v, len(strengths), axis=0) for k, v in stacked.items()}
  for i, s in enumerate(strengths):
    shift = domain.make_shift(out["obs"].shape[-1], seed, domain.STRENGTHS[s])
    out["obs"][i], out["next_obs"][i] = domain.apply(shift, out["obs"][i]), domain.apply(shift, out["next_obs"][i])
  return out


def _rlv_stage(config, name, env, eval_env, runs, pools, rlv_overrides, sac_overrides=None):
  rlv = model.rlv_config(**{**config.rlv.to_dict(), **rlv_overrides})
  aux = model.make_aux(rlv, env.action_shape[0])
  return fused.fused_sac_task(name, env, _sac_config(config, **(sac_overrides or {})), runs, aux=aux,
                              extra_pools={rlv.source: pools}, pool_batch=int(config.obs_batch), eval_env=eval_env)


def stages(config: ml_collections.ConfigDict, pools: dict, env: Any, eval_env: Any) -> list:
  """The fused stages `config.groups` asks for, as (group, Task)."""
  seeds, out = list(config.seeds), []
  qualities = [q for q in rlv_data.QUALITIES if q in pools]
  if "main" in config.groups:
    out.append(("main", fused.fused_sac_task("sac", env, config.sac, [fused.Run(f"seed{s}", s) for s in seeds],
                                             eval_env=eval_env)))
    runs = [fused.Run(f"{q}/seed{s}", s, i) for i, q in enumerate(qualities) for s in seeds]
    out.append(("main", _rlv_stage(config, "rlv", env, eval_env, runs, _pool_arrays(pools, qualities, False), {})))
  if "ablations" in config.groups:
    q = config.ablation_quality
    for name, overrides in config.ablations.items():
      labelled = overrides.get("obs_actions") == "true" or overrides.get("obs_rewards") == "true"
      out.append(("ablations", _rlv_stage(config, f"ablation/{name}", env, eval_env,
                                          [fused.Run(f"{q}/seed{s}", s) for s in seeds],
                                          _pool_arrays(pools, [q], labelled), overrides.to_dict())))
  if "shift" in config.groups:
    sh = config.shift
    encoder = dict(state_encoder_hidden=tuple(sh.state_encoder_hidden))
    strengths = list(sh.strengths)
    shifted = _shifted(_pool_arrays(pools, [sh.quality], False), strengths, int(sh.seed))
    runs = [fused.Run(f"{st}/seed{s}", s, i) for i, st in enumerate(strengths) for s in seeds]
    for variant, settings in sh.variants.items():
      settings = settings.to_dict()
      kind = settings.pop("kind")
      if kind == "rlv":
        out.append(("shift", _rlv_stage(config, f"shift/{variant}", env, eval_env, runs, shifted, settings,
                                        encoder)))
      else:   # SAC with the encoder and no pool, with RND's bonus for kind "rnd" (paper §4.3)
        aux = rnd.make_aux(rnd.rnd_config(**settings)) if kind == "rnd" else None
        out.append(("shift", fused.fused_sac_task(f"shift/{variant}", env, _sac_config(config, **encoder),
                                                  [fused.Run(f"seed{s}", s) for s in seeds], aux=aux,
                                                  eval_env=eval_env)))
  return out


def check_config(config: ml_collections.ConfigDict) -> None:
  unknown = sorted(set(config.groups) - set(GROUPS))
  if not config.seeds:
    raise VidrlError("config.seeds is empty; give at least one seed, e.g. --config.seeds='(0,)'")
  if unknown:
    raise VidrlError(f"config.groups names {unknown}; known groups are {GROUPS}")
  acrobot = set(config.groups) - {"manipulation"}   # the groups that read the pools
  qualities = sorted(q for q, _ in rlv_data.pool_plan(config.data)) if acrobot else []
  if "ablations" in config.groups and config.ablation_quality not in qualities:
    raise VidrlError(f"ablation_quality {config.ablation_quality!r} has no pool; pick one of {qualities}")
  if "shift" in config.groups:
    if config.shift.quality not in qualities:
      raise VidrlError(f"shift.quality {config.shift.quality!r} has no pool; pick one of {qualities}")
    bad = sorted(set(config.shift.strengths) - set(domain.STRENGTHS))
    if bad:
      raise VidrlError(f"shift.strengths {bad} are unknown; pick from {sorted(domain.STRENGTHS)}")
    kinds = {v: dict(o).get("kind") for v, o in config.shift.variants.items()}
    if any(k not in SHIFT_KINDS for k in kinds.values()):
      raise VidrlError(f"shift.variants {kinds} need a kind among {SHIFT_KINDS}; e.g. {{'kind': 'rlv', ...}}")
    if not config.shift.state_encoder_hidden:
      raise VidrlError("shift.state_encoder_hidden is empty, so the adversarial term would have no encoder to "
                       "train; give it widths, e.g. (64,)")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  check_config(config)
  t0 = time.time()
  writer = MetricWriter(workdir)
  acrobot_groups = set(config.groups) - {"manipulation"}
  pools = rlv_data.make_pools(config, workdir, writer) if acrobot_groups else {}
  seconds = {"data": round(time.time() - t0, 1)}
  env = rlv_data.acrobot(config.env.num_envs, config.env.episode_steps)
  eval_env = rlv_data.acrobot(config.env.eval_envs, config.env.episode_steps)
  curves: dict[str, dict] = {}
  for group, task in stages(config, pools, env, eval_env):
    t = time.time()
    run(task, config.loop, workdir, writer, int(config.seed))
    seconds[task.name] = round(time.time() - t, 1)
    curves.update(report.stage_curves(writer, task))
  if "bco" in config.groups:
    t = time.time()
    curves.update(baselines.bco_curves(config, pools, workdir, writer))
    seconds["bco"] = round(time.time() - t, 1)
  mw = None
  if "manipulation" in config.groups:   # Meta-World: its own results in workdir/manipulation/
    t = time.time()
    mw = manipulation.train_and_evaluate_manipulation(config, workdir)
    seconds["manipulation"] = round(time.time() - t, 1)
  seconds["total"] = round(time.time() - t0, 1)
  results = report.summarise(config, pools, curves, seconds)
  if mw is not None:
    results["manipulation"] = {k: mw[k] for k in ("final", "speedup")}
  results["plots"] = report.plots_of(workdir, results, pools)
  write_results(workdir, results, report.markdown(results))
  return results
