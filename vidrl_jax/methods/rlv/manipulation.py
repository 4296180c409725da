"""RLV on Meta-World manipulation (paper §4.2-4.3, Figs. 5-8, Tables 1-5): Meta-World push, door-open and
drawer-open (the closest relatives of the paper's pusher, door and drawer tasks) with sparse success rewards, in a
state version and a pixels-only image version, with observation data from Meta-World's scripted experts, rendered
for the image version in the interaction domain ('none', paper §4.2, Fig. 5) or a visibly shifted one ('weak',
'strong': recoloured robot and objects, other table, lighting and camera; standing in for the human videos of
§4.3, Figs. 6-7).

  results = train_and_evaluate_manipulation(config, workdir)   # config.manipulation = manipulation_config(preset)

For each task and view (`image_sizes`: 0 = the 39-d state, S = S x S pixels only) and each observation domain, an
observation pool (`metaworld_data.write_expert_pool`, reused when finished) under `<data_dir or
workdir/manipulation/data>`; then per condition and seed one stage of the shared loop (`offpolicy.sac_task`),
named `mw/<condition>/seed<s>`, run in `workdir` (every stage resumes). Conditions (`methods`):

- `<task>/<view>/sac`: SAC on interaction alone (no pool, so one condition per task and view);
- `<task>/<view>/rnd`: SAC with the RND exploration bonus (`vidrl_jax.rl.rnd`, paper §4.3), no pool;
- `<task>/<view>/<domain>/rlv`: RLV with the domain's pool; its domain-adversarial term (Eq. 3, c3) is on for a
  shifted domain and off for 'none', as the paper sets c3 = 0 without domain shift (§4.1-4.2);
- `<task>/<view>/<domain>/rlv_no_adversarial`: RLV without the adversarial term, shifted domains only (for
  'none' it is `rlv`);
- `<task>/<view>/<domain>/ablation_<name>` (paper Fig. 8, on the pools `ablation_conditions` names): RLV with
  other observation actions / rewards (`ablations`: `model.rlv_config` overrides, e.g. obs_actions="true" reads
  the expert's actions, which every pool's files keep and `data.load_pool` hides from the other conditions).

The shift changes pixels only (`MetaWorldEnv`'s domains recolour and relight the scene), so the state view sees
domain 'none' only: `domains` applies to image views. Interaction and evaluation are always in domain 'none'.

Evaluation: every `eval_every_episodes` episodes' worth of steps, `eval_episodes` greedy (tanh(mean)) episodes on
fixed reset seeds; an episode counts as a success when the task is solved at any of its `max_steps` steps (the
evaluation env ends it there, `SuccessOnce`), so `eval/mean_return` is the success rate. Curves (success rate
against env steps) per condition over seeds -> `report.aggregate` (mean, s.e., IQM with 95% stratified-bootstrap
CIs, rliable; plotted as IQM curves with their bands), final success (`stats.summary`), and the env steps each
condition takes to reach its baseline's (`<task>/<view>/sac`) final mean success (at least `min_threshold`) with
the ratio's bootstrap interval (`stats.steps_ratio`) -> `workdir/manipulation/{results.json, results.md,
<task>_<view>_<domain>.png}`.
"""

from __future__ import annotations

import os
import time

import ml_collections
import numpy as np

from vidrl_jax import io, plots, stats
from vidrl_jax.envs.metaworld import MetaWorldEnv
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.rlv import data as rlv_data
from vidrl_jax.methods.rlv import metaworld_data, model, report
from vidrl_jax.rl import offpolicy, rnd
from vidrl_jax.rl.sac import sac_config
from vidrl_jax.train import MetricWriter, loop_config, run, stage_finished, write_results
from vidrl_jax.train.loop import Task, drop_collector_files

METHODS = ("sac", "rlv", "rlv_no_adversarial", "rnd")
POOL_METHODS = ("rlv", "rlv_no_adversarial")
DOMAINS = ("none", "weak", "strong")
SUBDIR = "manipulation"


def view_name(image_size: int) -> str:
  return f"img{image_size}" if image_size else "state"


def obs_keys(image_size: int) -> tuple[str, ...]:
  """What the agent sees: the 39-d state, or the image alone (the paper's image tasks are pixels only)."""
  return ("image",) if image_size else ("state",)


class SuccessOnce:
  """A sparse-reward `MetaWorldEnv` for evaluation: reward 1.0 and the episode's end at its first success, so an
  episode's return is 1.0 when the task was solved at any step and 0.0 otherwise (a greedy episode's success)."""

  def __init__(self, env: MetaWorldEnv):
    self.env, self.name, self.obs_spec = env, env.name, env.obs_spec
    self.action_dim, self.max_steps = env.action_dim, env.max_steps

  def reset(self, seed: int) -> dict[str, np.ndarray]:
    return self.env.reset(seed)

  def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool]:
    obs, reward, _ = self.env.step(action)
    return obs, float(reward > 0), bool(reward > 0)


def manipulation_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  """`config.manipulation` for a preset:
  - "smoke": seconds; drawer-open, state, 2 seeds, 3 episodes of 20 steps, tiny nets, SAC, RLV and one ablation;
  - "smoke_image": the same at 16x16 pixels with a 'strong' pool, one seed, no ablation;
  - "cpu": drawer-open, state, 3 seeds, SAC vs RLV, 80 episodes of 150 steps (12k env steps): measured 8.6 min
    on this 2-core CPU, success 0.00 for both on every seed (too few steps to show anything);
  - "paper": the three tasks, state and 48x48 pixels, domains none / weak / strong for the pixels, 5 seeds, every
    method and Fig. 8's ablations on the Visual Pusher's pool, 500 episodes of 200 steps (Tables 1-5).

  Fields: `tasks` (Meta-World v3 names); `image_sizes` (0: the state view; S: S x S pixels only); `domains` (of
  the image views' observation data; the state view uses 'none'); `episodes`, `noise`, `data_seed` and
  `end_on_success` of each expert pool (`metaworld_data.write_expert_pool`); `data_dir` ('' =
  workdir/manipulation/data); `max_steps` per episode (interaction, evaluation and pools; the official
  Meta-World drawer's 200); `layout_seed` (-1: positions drawn at every reset; n >= 0: every env and pool
  episode in the one layout of reset seed n, an easier task); `seeds`; `methods` (of `METHODS`); `sac_state` /
  `sac_image` (`sac_config`: Table 1 for both, Table 3's 2x256 MLPs for states, Table 4's conv encoder 16/16/32
  5x5 with 2x2 max-pools and 512-256-256 MLPs with pad-4 crops for pixels; one update per env step, run as
  bursts of `train_every`; evaluation every `eval_every_episodes` on `eval_episodes` greedy episodes); `rlv`
  (overrides of `model.rlv_config`: Table 2's MuJoCo c_large 10 / c_small 0, Table 5's c1 1, c3 1e-3,
  discriminator lr 3e-8, [64]*3 MLPs); `rnd` (overrides of `rnd.rnd_config`); `ablations` ({name:
  `model.rlv_config` overrides}, Fig. 8), run on each pool of `ablation_conditions` ("<task>/<view>/<domain>",
  e.g. "push-v3/img48/none": the Visual Pusher); `obs_batch` (observation transitions per update beside SAC's
  batch: 256); `min_threshold` (the least success the steps-to-threshold ratio asks for); `loop`
  (`loop_config`)."""
  m = ml_collections.ConfigDict()
  m.tasks = ("push-v3", "door-open-v3", "drawer-open-v3")
  m.image_sizes = (0, 48)
  m.domains = ("none", "weak", "strong")
  m.episodes, m.noise, m.data_seed, m.end_on_success, m.data_dir = 100, 0.1, 0, True, ""
  m.max_steps = 200
  m.layout_seed = -1   # -1: object and goal positions drawn at every reset (the paper's); n >= 0: one fixed layout
  m.seeds = (0, 1, 2, 3, 4)
  m.methods = METHODS
  run_ = dict(num_episodes=500, train_every=50, updates_per_step=1.0, checkpoint_every_episodes=50,
              eval_every_episodes=25, eval_episodes=10)
  m.sac_state = sac_config(**run_)
  m.sac_image = sac_config(actor_hidden=(512, 256, 256), critic_hidden=(512, 256, 256), encoder_filters=(16, 16, 32),
                           encoder_kernel=5, augment_pad=4, **run_)
  m.rlv = ml_collections.ConfigDict(dict(c_large=10.0, c_small=0.0, c1=1.0, c3=1e-3, discriminator_lr=3e-8))
  m.rnd = ml_collections.ConfigDict()
  # Paper Fig. 8 (Visual Pusher): RLV with true / zero observation actions or rewards, on these pools.
  m.ablations = ml_collections.ConfigDict({
      "actions_true": dict(obs_actions="true"), "actions_zeros": dict(obs_actions="zeros"),
      "rewards_true": dict(obs_rewards="true"), "rewards_zeros": dict(obs_rewards="zeros")})
  m.ablation_conditions = ("push-v3/img48/none",)
  m.obs_batch = 256
  m.min_threshold = 0.1
  m.loop = loop_config(log_every=100, checkpoint_every=1000, progress=False)
  tiny = dict(actor_hidden=(16, 16), critic_hidden=(16, 16), batch_size=8, random_steps=20, train_every=10,
              num_episodes=3, checkpoint_every_episodes=1, eval_every_episodes=1, eval_episodes=2)
  smoke = dict(tasks=("drawer-open-v3",), image_sizes=(0,), domains=("none",), episodes=3, max_steps=20,
               seeds=(0, 1), methods=("sac", "rlv"), obs_batch=8, ablation_conditions=(),
               rlv=dict(m.rlv.to_dict(), inverse_hidden=(8,), discriminator_hidden=(8,)))
  presets = {
      "smoke": dict(smoke, sac_state=sac_config(**tiny), ablation_conditions=("drawer-open-v3/state/none",),
                    ablations=dict(actions_true=dict(obs_actions="true"))),
      "smoke_image": dict(smoke, image_sizes=(16,), domains=("strong",), methods=("sac", "rlv"), seeds=(0,),
                          sac_image=sac_config(**tiny, encoder_filters=(4,), encoder_kernel=3, augment_pad=2)),
      "cpu": dict(tasks=("drawer-open-v3",), image_sizes=(0,), domains=("none",), seeds=(0, 1, 2),
                  methods=("sac", "rlv"), episodes=50, max_steps=150, ablation_conditions=(),
                  sac_state=sac_config(**dict(run_, num_episodes=80, eval_every_episodes=5))),
      "paper": {},
  }
  if preset not in presets:
    raise VidrlError(f"unknown manipulation preset {preset!r}; choose one of {', '.join(presets)}")
  for key, value in presets[preset].items():
    m[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
  return m


def check_config(m: ml_collections.ConfigDict) -> None:
  targets = {f"{t}/{view_name(s)}/{d}" for t in m.tasks for s in m.image_sizes if s >= 0
             for d in (m.domains if s else ("none",))}
  problems = [
      (not m.tasks, "manipulation.tasks is empty; name Meta-World v3 tasks, e.g. ('drawer-open-v3',)"),
      (not m.seeds, "manipulation.seeds is empty; give at least one seed, e.g. (0,)"),
      (not m.image_sizes or min(m.image_sizes) < 0,
       f"manipulation.image_sizes {tuple(m.image_sizes)} must be non-empty sizes >= 0 (0: the state view)"),
      (bool(set(m.methods) - set(METHODS)) or not m.methods,
       f"manipulation.methods {tuple(m.methods)} must be a non-empty subset of {METHODS}"),
      (bool(set(m.domains) - set(DOMAINS)) or not m.domains,
       f"manipulation.domains {tuple(m.domains)} must be a non-empty subset of {DOMAINS}"),
      (m.episodes < 1 or m.max_steps < 1 or m.obs_batch < 1,
       f"manipulation.episodes, max_steps and obs_batch must be >= 1, got {m.episodes}, {m.max_steps} and "
       f"{m.obs_batch}"),
      ("sac" not in m.methods, "manipulation.methods lacks 'sac', the baseline every ratio needs; add it"),
      (bool(set(m.ablation_conditions) - targets),
       f"manipulation.ablation_conditions {tuple(m.ablation_conditions)} must name pools of this config, "
       f"<task>/<view>/<domain>, from {sorted(targets)}"),
  ]
  for bad, sentence in problems:
    if bad:
      raise VidrlError(sentence)


def conditions(m: ml_collections.ConfigDict) -> list[dict]:
  """Every (condition, task, image_size, domain or None, method) the config asks for (module docstring)."""
  out = []
  for task in m.tasks:
    for size in m.image_sizes:
      view = view_name(size)
      for method in m.methods:
        if method not in POOL_METHODS:
          out.append(dict(name=f"{task}/{view}/{method}", task=task, image_size=size, domain=None, method=method))
          continue
        for d in (m.domains if size else ("none",)):
          if not (method == "rlv_no_adversarial" and d == "none"):
            out.append(dict(name=f"{task}/{view}/{d}/{method}", task=task, image_size=size, domain=d, method=method))
  for target in m.ablation_conditions:
    task, view, d = target.split("/")
    size = 0 if view == "state" else int(view[3:])
    out += [dict(name=f"{target}/ablation_{a}", task=task, image_size=size, domain=d, method="rlv",
                 overrides=overrides.to_dict()) for a, overrides in m.ablations.items()]
  return out


def _layout(m: ml_collections.ConfigDict) -> int | None:
  return None if m.layout_seed < 0 else int(m.layout_seed)


def _sac(m: ml_collections.ConfigDict, image_size: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict((m.sac_image if image_size else m.sac_state).to_dict())
  c.replay_capacity = min(int(c.replay_capacity), int(c.num_episodes) * int(m.max_steps) + 1)
  return c


def make_pools(m: ml_collections.ConfigDict, root: str) -> dict[tuple, dict]:
  """{(task, image_size, domain): completion summary + `dir`} for every pool a condition needs (reused when
  finished). The files keep the expert's actions and sparse rewards (`labelled`); `data.load_pool` drops them
  unless an ablation with true labels asks for them."""
  pools = {}
  for c in conditions(m):
    key = (c["task"], c["image_size"], c["domain"])
    if c["domain"] is None or key in pools:
      continue
    directory = metaworld_data.pool_dir(m.data_dir or os.path.join(root, "data"), c["task"], c["domain"],
                                        c["image_size"])
    directory += f"_layout{m.layout_seed}" if m.layout_seed >= 0 else ""
    summary = metaworld_data.write_expert_pool(
        directory, c["task"], int(m.episodes), int(m.data_seed), image_size=int(c["image_size"]),
        domain=c["domain"], noise=float(m.noise), max_steps=int(m.max_steps), end_on_success=bool(m.end_on_success),
        labelled=True, layout_seed=_layout(m))
    pools[key] = dict(summary, dir=directory)
  return pools


def stage_name(cond: dict, seed: int) -> str:
  return f"mw/{cond['name']}/seed{seed}"


def make_task(m: ml_collections.ConfigDict, cond: dict, seed: int, pools: dict, envs: dict) -> Task:
  """One condition's stage for one seed: `offpolicy.sac_task` on the interaction env (domain 'none'), evaluated on
  `SuccessOnce`, with RLV's aux and the pool or RND's aux."""
  task, size, method = cond["task"], int(cond["image_size"]), cond["method"]
  if (task, size) not in envs:
    envs[(task, size)] = tuple(MetaWorldEnv(task, image_size=size, max_steps=int(m.max_steps),
                                            layout_seed=_layout(m)) for _ in range(2))
  env, eval_env = envs[(task, size)]
  aux, extra = None, None
  if method in POOL_METHODS:
    overrides = dict(m.rlv.to_dict(), adversarial=method == "rlv" and cond["domain"] != "none",
                     **cond.get("overrides", {}))
    rlv = model.rlv_config(**overrides)
    aux = model.make_aux(rlv, env.action_dim)
    labelled = "true" in (rlv.obs_actions, rlv.obs_rewards)
    pool = rlv_data.load_pool(pools[(task, size, cond["domain"])]["dir"], labelled, obs_keys=obs_keys(size))
    extra = {rlv.source: (pool, int(m.obs_batch))}
  elif method == "rnd":
    aux = rnd.make_aux(rnd.rnd_config(**m.rnd.to_dict()))
  return offpolicy.sac_task(stage_name(cond, seed), env, obs_keys(size), _sac(m, size), seed,
                            eval_env=SuccessOnce(eval_env), aux=aux, extra_sources=extra)


def stage_curve(writer: MetricWriter, name: str, train_every: int) -> tuple[np.ndarray, np.ndarray]:
  """(env steps, greedy success rate) of one stage from its `eval/mean_return` rows (a resumed run rewrites its
  rows: the last of a step wins). A stage's loop step t ends at env step t * train_every (one host env)."""
  curve = {int(r["step"]) * int(train_every): float(r["eval/mean_return"])
           for r in writer.rows(name) if "eval/mean_return" in r}
  x = np.array(sorted(curve), np.int64)
  return x, np.array([curve[s] for s in x], np.float64)


def baseline_of(condition: str) -> str:
  """`<task>/<view>/sac` for every condition of that task and view."""
  return "/".join(condition.split("/")[:2] + ["sac"])


def summarise(m: ml_collections.ConfigDict, pools: dict, curves: dict, seconds: dict) -> dict:
  """results.json's content: pools, per-condition aggregates, final success statistics, steps-to-baseline ratios."""
  agg = {k: report.aggregate(v) for k, v in sorted(curves.items()) if v}
  finals = {k: stats.summary(np.asarray(a["final"]), seed=report.CI_SEED) for k, a in agg.items() if a["final"]}
  speed = {}
  for name in agg:
    base = baseline_of(name)
    if name != base and agg.get(base, {}).get("final"):
      threshold = max(float(np.mean(agg[base]["final"])), float(m.min_threshold))
      speed[name] = dict(baseline=base, **stats.steps_ratio(curves[name], curves[base], threshold,
                                                            seed=report.CI_SEED))
  pool_info = {"/".join([t, view_name(s), d]): {k: p[k] for k in ("episodes", "steps", "success_rate", "mean_return",
                                                                   "seconds") if k in p}
               for (t, s, d), p in pools.items()}
  return dict(pools=pool_info, curves=agg, final=finals, speedup=speed, seeds=list(m.seeds), seconds=seconds,
              metric="greedy success rate (an episode succeeds when the task is solved at any step)")


def plot(root: str, results: dict) -> list[str]:
  """One PNG per task, view and domain: the baselines of the view and the conditions of that domain."""
  agg, paths = results["curves"], []
  groups: dict[str, list[str]] = {}
  for name in agg:
    parts = name.split("/")
    if len(parts) == 4:   # task/view/domain/method
      groups.setdefault("_".join(parts[:3]), [f"{parts[0]}/{parts[1]}/{b}" for b in ("sac", "rnd")]).append(name)
  for file, names in sorted(groups.items()):
    shown = {k: agg[k] for k in names if k in agg}
    series, spread, what = report.iqm_bands(shown)
    paths.append(plots.curves(os.path.join(root, f"{file}.png"), series, "environment steps",
                              "greedy success rate, IQM over seeds", f"RLV, Meta-World: {file}\n{what}",
                              spread=spread))
  return paths


def condition_table(results: dict, metric: str, digits: int) -> list[str]:
  """Markdown rows, one per condition of `results` (`summarise`'s layout, which `report.summarise` shares): seeds,
  last env step, final `metric` as mean +- s.e. and IQM [95% CI], and the env steps to the baseline's final (or the
  threshold) against the baseline's, with the ratio and its interval. Written for any such results, so
  `report.markdown` could use it too."""
  num = lambda x: f"{x:.{digits}f}"
  steps = lambda s: "never" if s is None else str(int(s))
  out = [f"| condition | seeds | env steps | final {metric}, mean +- s.e. | IQM [95% CI] | env steps to the "
         "baseline's final: condition vs baseline at the threshold (ratio [95% CI]) |", "|---|---|---|---|---|---|"]
  for name, curve in results["curves"].items():
    final, sp = results["final"].get(name), results["speedup"].get(name)
    if final is None:
      continue
    ratio = "baseline"
    if sp is not None:
      interval = "" if not sp["ratio_ci"] else " [{:.2f}, {:.2f}]".format(*sp["ratio_ci"])
      ratio = (f"{steps(sp['steps_a'])} vs {steps(sp['steps_b'])} at {sp['threshold']:.{digits}f} ("
               f"{'n/a' if sp['ratio'] is None else format(sp['ratio'], '.2f')}{interval})")
    out.append(f"| {name} | {curve['n']} | {curve['env_steps'][-1]} | {num(final['mean'])} +- {num(final['se'])} | "
               f"{num(final['iqm'])} [{num(final['iqm_ci'][0])}, {num(final['iqm_ci'][1])}] | {ratio} |")
  return out


def markdown(results: dict) -> str:
  """results.md: the pools (episodes, steps, the expert's success rate, seconds), then `condition_table`."""
  pools = [f"| {k} | {p.get('episodes')} | {p.get('steps')} | {p.get('success_rate', float('nan')):.2f} | "
           f"{p.get('seconds')} |" for k, p in results["pools"].items()]
  seconds = ", ".join(f"{k} {v}" for k, v in results["seconds"].items())
  return "\n".join(["# RLV on Meta-World", "", f"Metric: {results['metric']}.", "",
                    "| observation pool | episodes | steps | expert success | seconds |", "|---|---|---|---|---|",
                    *pools, "", *condition_table(results, "success", 2), "", report.INTERVAL_NOTE, "",
                    f"Seconds (this invocation): {seconds}", ""])


def train_and_evaluate_manipulation(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """RLV's Meta-World experiments of `config.manipulation` (`manipulation_config`) in `workdir` (module
  docstring); returns results.json's content. A rerun resumes every unfinished stage and skips finished pools and
  stages (`train.stage_finished`)."""
  m = config.manipulation
  check_config(m)
  t0, root = time.time(), os.path.join(workdir, SUBDIR)
  io.makedirs(root)
  pools = make_pools(m, root)
  seconds = {"data": round(time.time() - t0, 1)}
  writer, envs, curves = MetricWriter(workdir), {}, {}
  for cond in conditions(m):
    t = time.time()
    sac = _sac(m, cond["image_size"])
    for seed in m.seeds:
      name = stage_name(cond, int(seed))
      if not stage_finished(workdir, name, offpolicy.schedule(sac, int(m.max_steps))["num_steps"]):
        run(make_task(m, cond, int(seed), pools, envs), m.loop, workdir, writer, int(seed))
        drop_collector_files(workdir, name)   # its replay (up to 2 x 0.7 GB of 48x48 frames) is never read again
      curves.setdefault(cond["name"], []).append(stage_curve(writer, name, sac.train_every))
    seconds[cond["name"]] = round(time.time() - t, 1)
  for pair in envs.values():
    for env in pair:
      env.close()
  seconds["total"] = round(time.time() - t0, 1)
  results = summarise(m, pools, curves, seconds)
  results["plots"] = plot(root, results)
  write_results(root, results, markdown(results))
  return results
