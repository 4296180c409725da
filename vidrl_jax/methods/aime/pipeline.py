"""AIME end to end (paper Sec. 4): experts and datasets, then the Fig. 2 table of AIME beside BCO(0).

`train_and_evaluate(config, workdir)` runs every stage in order; each stage resumes from its checkpoints or
reuses its cached result file, so rerunning with the same workdir continues an interrupted run.

Layout of the workdir:
  data/<task>/embodiment/   the SAC expert's replay buffer, one .npz per episode (official AIME keys)
  data/<task>/demos/        observation-only demonstrations of the expert (true actions kept for metrics only)
  data/random/              uniform-random trajectories;  `mix` = the union of `config.mix`
`config.data.embodiment`/`demos`/`random` may name other directories (a `{task}` in the path is replaced), e.g.
the official AIME datasets. A dataset directory the project did not create (no owner marker, see
`data/ownership.py`) is read as it is and never written; its stage (recording the expert's episodes, the demos, the
random data) is skipped.
  expert/<task>/            SAC checkpoints
  <setting>/<row>/phase1    the world model on embodiment dataset <row>
  <setting>/<row>/aime_<col>, bco_idm_<row>, bco_<row>_<col>, bc_<col>   phase 2 and the baselines
"""

from __future__ import annotations

import os
import time

import ml_collections
import numpy as np

from vidrl_jax import io
from vidrl_jax.data import formats, ownership
from vidrl_jax.data import trajectories as traj_lib
from vidrl_jax.data.sequence import SequenceDataset
from vidrl_jax.envs.host import BatchEnv, random_policy, run_episodes
from vidrl_jax.errors import VidrlError
from vidrl_jax.rl import bco as bco_lib
from vidrl_jax.methods.aime import envs as envs_lib
from vidrl_jax.methods.aime import model as model_lib
from vidrl_jax.methods.aime import phases, report
from vidrl_jax.rl import offpolicy, sac
from vidrl_jax.train import MetricWriter, run, stage_rng, write_results

EVAL_SEED = 10_000     # evaluation episodes use the same seeds for every method and cell


class Aime:
  """What every stage shares: config, workdir, writer, environments and datasets."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.writer = MetricWriter(workdir)
    self.data_dir = config.data.dir or os.path.join(workdir, "data")
    self.record_images = "visual" in config.settings
    probe = self.host_env(config.env.tasks[0], image=False)
    self.action_dim = probe.action_dim
    self.mdp_keys = envs_lib.observation_keys(self.env_name(config.env.tasks[0]), "mdp")
    for name in tuple(config.datasets) + tuple(config.demos) + tuple(config.mix):
      if name not in tuple(config.env.tasks) + ("random", "mix"):
        raise VidrlError(f"dataset or demo task {name!r} is not one of env.tasks {tuple(config.env.tasks)} "
                         f"nor 'random'/'mix'; add it to --config.env.tasks")

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  def env_name(self, task: str) -> str:
    return f"{self.config.env.embodiment}-{task}"

  def host_env(self, task: str, image: bool):
    e = self.config.env
    return envs_lib.make_env(self.env_name(task), action_repeat=e.action_repeat, max_steps=e.max_steps or None,
                             image_size=e.image_size if image else 0, render=e.render)

  def env(self, task: str, n: int, image: bool) -> BatchEnv:
    return BatchEnv([self.host_env(task, image) for _ in range(n)])

  # ---- stage 0: experts and datasets ----------------------------------------------------------------
  def dataset_dir(self, kind: str, task: str = "") -> str:
    """Where dataset `kind` ('embodiment', 'demos', 'random') of `task` lives."""
    template = self.config.data[kind]
    if template:
      return template.replace("{task}", task)
    return os.path.join(self.data_dir, "random") if kind == "random" else os.path.join(self.data_dir, task, kind)

  def writable(self, out: str) -> bool:
    """Claims `out` for collection; False when it holds a finished dataset or one the project did not write
    (read as it is)."""
    if ownership.state(out) in ("complete", "foreign"):
      return False
    ownership.claim(out, {"format": "aime_episodes"}, restart=False)
    return True

  def summary(self, out: str) -> dict:
    """The completion summary of a dataset, or for one the project did not write its episodes' returns."""
    done = ownership.read_complete(out)
    if done is not None:
      return done
    data = self.load([out], [])
    if data.reward is None:
      raise VidrlError(f"the dataset {out} has no rewards, so its expert return (the normaliser) is unknown; "
                       f"use demonstrations with a 'reward' key")
    returns = [float(np.sum(data.array(i, "reward"), dtype=np.float64)) for i in range(len(data.sources))]
    return {"episodes": len(returns), "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns))}

  @staticmethod
  def writer_of(out: str):
    """`on_episode(i, episode)` that writes recorded episode i into `out` as an AIME trajectory."""
    return lambda i, episode: traj_lib.write_trajectory(out, i, envs_lib.aime_trajectory(episode))

  def expert(self, task: str):
    """SAC on the full state; every training episode is written to the task's embodiment dataset."""
    out = self.dataset_dir("embodiment", task)
    env = self.host_env(task, image=self.record_images)
    record = self.writable(out)
    expert = self.config.expert
    stage = offpolicy.sac_task(f"expert/{task}", env, self.mdp_keys, expert, self.config.seed,
                               on_episode=self.writer_of(out) if record else None,
                               eval_env=self.host_env(task, image=False) if expert.eval_every_episodes else None)
    state, summary = run(stage, self.config.loop, self.workdir, self.writer, self.config.seed)
    if record:
      ownership.mark_complete(out, {k: summary[k] for k in ("episodes", "mean_return", "last10_return")})
    return sac.policy_params(state)

  def demos(self, task: str, actor_params) -> dict:
    out = self.dataset_dir("demos", task)
    if not self.writable(out):
      return self.summary(out)
    c = self.config
    env = self.env(task, c.env.eval_envs, self.record_images)
    returns = run_episodes(env, offpolicy.greedy_policy(actor_params, self.mdp_keys, c.expert, env.action_dim),
                           c.data.demo_episodes, seed=c.seed + 1, on_episode=self.writer_of(out))
    summary = {"episodes": len(returns), "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns))}
    ownership.mark_complete(out, summary)
    return summary

  def random_data(self) -> dict:
    out = self.dataset_dir("random")
    if not self.writable(out):
      return self.summary(out)
    c = self.config
    task = c.env.tasks[0]
    returns = run_episodes(self.env(task, c.env.eval_envs, self.record_images), random_policy(self.action_dim, c.seed),
                           c.data.random_episodes, seed=c.seed + 2, on_episode=self.writer_of(out))
    summary = {"episodes": len(returns), "mean_return": float(np.mean(returns)), "task": task}
    ownership.mark_complete(out, summary)
    return summary

  def dataset_dirs(self, row: str) -> list[str]:
    if row == "mix":
      return [d for r in self.config.mix for d in self.dataset_dirs(r)]
    if row == "random":
      return [self.dataset_dir("random")]
    return [self.dataset_dir("embodiment", row)]

  def load(self, dirs: list[str], keys, limit: int = 0) -> SequenceDataset:
    return formats.episodes(dirs, keys, limit=limit or None, cache_dir=self.config.data.cache_dir or None)

  # ---- AIME ------------------------------------------------------------------------------------------
  def keys(self, setting: str) -> list[str]:
    return envs_lib.observation_keys(self.env_name(self.config.env.tasks[0]), setting)

  def world_model(self, setting: str, row: str):
    c = self.config
    keys = self.keys(setting)
    dataset = self.load(self.dataset_dirs(row), keys, c.data.embodiment_limit)
    spec = {k: dataset.spec(k) for k in keys}
    wm = model_lib.make_world_model(spec, keys, self.action_dim, c.model)
    task = phases.phase1_task(f"{setting}/{row}/phase1", wm, dataset.windows(c.phase1.window), c.phase1, c.seed)
    state, _ = run(task, c.loop, self.workdir, self.writer, c.seed)
    return wm, state.params

  def evaluate(self, policy, setting: str, task: str, episodes: int, expert_return: float) -> dict:
    c = self.config
    returns = run_episodes(self.env(task, c.env.eval_envs, image=setting == "visual"), policy, episodes,
                           seed=EVAL_SEED + c.seed)
    return {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
            "normalised": float(np.mean(returns) / expert_return), "episodes": int(episodes)}

  def demo_data(self, setting: str, task: str) -> SequenceDataset:
    return self.load([self.dataset_dir("demos", task)], self.keys(setting), self.config.data.num_demos)

  def aime_cell(self, setting: str, row: str, col: str, wm, wm_params, expert_return: float,
                variant: str = "") -> dict:
    """Phase 2 on the demos of `col` through the frozen model of `row`; a variant of paper Fig. 5."""
    name = f"{setting}/{row}/aime_{col}" + (f"_{variant}" if variant else "")
    return io.cached_json(self.path(name, "result.json"), lambda: self._aime_cell(
        name, setting, col, wm, wm_params, expert_return, variant))

  def _aime_cell(self, name: str, setting: str, col: str, wm, wm_params, expert_return: float,
                 variant: str) -> dict:
    c = self.config
    p2 = ml_collections.ConfigDict(c.phase2.to_dict())
    if variant == "kl_only":
      p2.loss_weights.rec = 0.0
    elif variant == "rec_only":
      p2.loss_weights.kl = 0.0
    elif variant == "idm":
      p2.use_idm = True
    elif variant:
      raise VidrlError(f"unknown AIME variant {variant!r}; use kl_only, rec_only or idm")
    data = self.demo_data(setting, col).windows(p2.window)
    policy = model_lib.policy_module(self.action_dim, p2)

    def evaluate(state, step):
      episodes = p2.final_episodes if step == p2.steps else p2.eval_episodes
      pol = phases.model_policy(wm, state.world_model, policy, state.policy.params, seed=c.seed)
      return self.evaluate(pol, setting, col, episodes, expert_return)

    task = phases.phase2_task(name, wm, wm_params, data, p2, c.seed, evaluate=evaluate)
    loop = ml_collections.ConfigDict(c.loop.to_dict())
    loop.eval_every = p2.eval_every
    _, metrics = run(task, loop, self.workdir, self.writer, c.seed)
    result = {k.removeprefix("eval/"): v for k, v in metrics.items()}
    whole = data.sample(c.seed, 0, min(p2.batch_size, 16))   # the whole batch on every process (a diagnostic)
    batch = {"obs": whole["obs"], "action": whole["action"]}
    result["elbo_true_actions"] = phases.true_action_elbo(wm, wm_params, batch, stage_rng(c.seed, name))
    return result

  # ---- baselines -------------------------------------------------------------------------------------
  def bco_idm(self, setting: str, row: str):
    c = self.config
    keys = self.keys(setting)
    frames = bco_lib.stacked_frames(self.load(self.dataset_dirs(row), keys, c.data.embodiment_limit), c.bco.stack)
    task = bco_lib.make_idm_task(f"{setting}/bco_idm_{row}", frames, keys, self.action_dim, c.bco, c.seed)
    state, _ = run(task, c.loop, self.workdir, self.writer, c.seed)
    return state["best_params"]

  def bc_cell(self, setting: str, name: str, col: str, expert_return: float, idm_params=None) -> dict:
    """BC on the demos of `col`: labelled by the IDM (BCO(0)) or with the true actions (`idm_params=None`)."""
    return io.cached_json(self.path(name, "result.json"), lambda: self._bc_cell(
        setting, name, col, expert_return, idm_params))

  def _bc_cell(self, setting: str, name: str, col: str, expert_return: float, idm_params) -> dict:
    c = self.config
    keys = self.keys(setting)
    frames = bco_lib.stacked_frames(self.demo_data(setting, col), c.bco.stack)
    labels = None
    if idm_params is not None:
      labels = bco_lib.label_demos(idm_params, frames, keys, self.action_dim, c.bco)
    task = bco_lib.make_bc_task(name, frames, labels, keys, self.action_dim, c.bco, c.seed)
    state, _ = run(task, c.loop, self.workdir, self.writer, c.seed)
    policy = bco_lib.stack_policy(state["best_params"], keys, self.action_dim, c.bco)
    result = self.evaluate(policy, setting, col, c.phase2.final_episodes, expert_return)
    if labels is not None:
      result["label_mse"] = float(np.mean(np.square(labels - bco_lib.true_actions(frames))))
    return result


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  c = config
  t0 = time.time()
  a = Aime(c, workdir)
  timings = {}

  experts, demo_returns = {}, {}
  needed = set(c.demos) | {r for r in c.datasets if r not in ("random", "mix")} | {
      r for r in (c.mix if "mix" in c.datasets else ()) if r != "random"}
  for task in c.env.tasks:
    if task in needed:
      experts[task] = a.expert(task)
  for task in c.demos:
    demo_returns[task] = a.demos(task, experts[task])
  random_summary = None
  if "random" in c.datasets or ("mix" in c.datasets and "random" in c.mix):
    random_summary = a.random_data()
  timings["data_min"] = (time.time() - t0) / 60

  expert_return = {t: demo_returns[t]["mean_return"] for t in c.demos}
  table: dict = {}
  for setting in c.settings:
    t1 = time.time()
    cells = table[setting] = {"aime": {}, "bco": {}, "bc": {}, "ablations": {}}
    for row in c.datasets:
      wm, wm_params = a.world_model(setting, row)
      cells["aime"][row] = {col: a.aime_cell(setting, row, col, wm, wm_params, expert_return[col])
                            for col in c.demos}
      if row == c.ablations.dataset and c.ablations.demo in c.demos:
        for variant in c.ablations.variants:
          cells["ablations"][variant] = a.aime_cell(setting, row, c.ablations.demo, wm, wm_params,
                                                    expert_return[c.ablations.demo], variant=variant)
      idm = a.bco_idm(setting, row)
      cells["bco"][row] = {col: a.bc_cell(setting, f"{setting}/bco_{row}_{col}", col, expert_return[col], idm)
                           for col in c.demos}
    if c.bc_oracle:
      cells["bc"] = {col: a.bc_cell(setting, f"{setting}/bc_{col}", col, expert_return[col]) for col in c.demos}
    timings[f"{setting}_min"] = (time.time() - t1) / 60

  results = report.summarise(c, table, demo_returns, random_summary)
  results["time_min"] = {k: round(v, 2) for k, v in timings.items()}
  results["time_min"]["total"] = round((time.time() - t0) / 60, 2)
  results["plots"] = report.plots_for(c, workdir, a.writer, table)
  write_results(workdir, results, report.markdown(results))
  return results
