"""RLV's Acrobot and its observation data of three qualities (paper §4.1, Fig. 3): observation-only episodes of an
SAC expert taken at different points of its training.

The official pools are SAC replay pools from three points of training (about -99, -79 and -63 per 100-step
episode); actions and rewards are discarded. Here one SAC stage (`rl.fused`, name "expert") is trained, and at each
quality's snapshot the policy (stochastic, as a replay pool holds; or greedy) is rolled out for `episodes` episodes
on as many env copies, one episode each. `data.snapshot_by` says when a snapshot is taken:
- "return": at the first evaluation (every `expert.eval_every_episodes` episodes: the greedy return, averaged over
  the `env.eval_envs` episodes) that reaches the quality's `targets` return (`snapshot_decisions`); a target not
  reached by `max_expert_episodes` is snapshotted there with `target_reached` False. Every evaluation is recorded
  in <workdir>/expert/snapshots.json, so a rerun makes the same pools. The targets are greedy returns; the pool's
  own `mean_return` (its actions stochastic unless `greedy`) is recorded beside them and may be lower;
- "episodes": after the fixed episode counts `snapshots`, one per quality (each rerun of the stage resumes from its
  last checkpoint).
A pool is a directory the project owns (`data.ownership`) of episode files (`data.formats.episodes`): key `state`
(T+1, 6) float32, `is_first`, `is_last` (the trajectory's last row), `is_terminal` (the goal was reached there), and
the expert's `action` and `reward` (DreamerV2's layout: row t holds what led to observation t), read only by the
true-label ablations; its `_COMPLETE.json` records the mean return and the snapshot (expert episodes, the expert's
greedy evaluation return; with "return" also the target and whether it was reached). `load_pool` reads it as
transitions (obs, next_obs, is_last, discount) for the `Sampler`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from vidrl_jax import io
from vidrl_jax.data import formats, ownership
from vidrl_jax.envs import env_config, make_env
from vidrl_jax.envs.base import VecEnv
from vidrl_jax.envs.discretise import thresholded
from vidrl_jax.errors import VidrlError
from vidrl_jax.rl import fused, sac
from vidrl_jax.train import MetricWriter, run
from vidrl_jax.train.loop import stage_rng, stage_step

QUALITIES = ("low", "medium", "high")
FORMAT = "rlv_observations"
SNAPSHOT_BY = ("return", "episodes")   # data.snapshot_by: at target evaluation returns, or after fixed episodes


def acrobot(num_envs: int, episode_steps: int = 100) -> VecEnv:
  """The official `AcrobotContinuous`: gymnax Acrobot-v1, a 1-D action in [-1, 1] thresholded at +-0.5 into the
  torques -1 / 0 / +1, episodes of `episode_steps` steps."""
  return thresholded(make_env(env_config("gymnax", "Acrobot-v1", num_envs,
                                         params=dict(max_steps_in_episode=int(episode_steps)))), (-0.5, 0.5))


def rollout_episodes(env: VecEnv, act: Any, params: Any, rng: jax.Array,
                     actions: bool = False) -> list[dict[str, np.ndarray]]:
  """One episode per env copy of `act(params, obs, rng) -> action`: `state` rows are the reset observation and
  every observation reached (the one before an auto-reset at the end), with `is_first`, `is_last`, `is_terminal`
  and the episode's return under `log_return` (not an observation: `formats.episodes` skips `log_` keys).
  `actions=True` also keeps `action` and `reward` (row t: what led to row t, zeros on row 0): BCO's interaction
  data, and the pools' true labels for the ablations."""
  if not env.max_episode_steps:
    raise VidrlError(f"{env.name} has no episode length; give it max_steps_in_episode so episodes end")

  @jax.jit
  def scan(params, rng):
    k_reset, k_steps = jax.random.split(rng)
    state, obs = env.reset(k_reset)

    def body(carry, key):
      state, obs = carry
      k_act, k_env = jax.random.split(key)
      action = act(params, obs, k_act)
      state, next_obs, reward, done, info = env.step(state, action, k_env)
      out = dict(obs=obs, final_obs=info["final_obs"], done=done, terminated=info["terminated"],
                 ret=info["episode_return"], action=action, reward=reward)
      return (state, next_obs), out

    _, traj = jax.lax.scan(body, (state, obs), jax.random.split(k_steps, env.max_episode_steps))
    return traj

  traj = jax.tree.map(np.asarray, scan(params, rng))
  episodes = []
  for i in range(env.num_envs):
    end = int(np.argmax(traj["done"][:, i]))   # every copy's first episode ends within max_episode_steps
    if not traj["done"][end, i]:
      raise VidrlError(f"episode {i} of {env.name} did not end in {env.max_episode_steps} steps; check the env")
    state = np.concatenate([traj["obs"][:end + 1, i], traj["final_obs"][end:end + 1, i]]).astype(np.float32)
    flags = np.zeros(end + 2, bool)
    first, last, terminal = flags.copy(), flags.copy(), flags.copy()
    first[0], last[-1], terminal[-1] = True, True, bool(traj["terminated"][end, i])
    episodes.append(dict(state=state, is_first=first, is_last=last, is_terminal=terminal,
                         log_return=np.float32(traj["ret"][end, i])))
    if actions:
      taken = np.asarray(traj["action"][:end + 1, i], np.float32).reshape(end + 1, -1)
      episodes[-1]["action"] = np.concatenate([np.zeros_like(taken[:1]), taken])
      episodes[-1]["reward"] = np.concatenate([[0.0], traj["reward"][:end + 1, i]]).astype(np.float32)
  return episodes


def write_pool(directory: str, episodes: list[dict[str, np.ndarray]], meta: dict) -> dict:
  """Writes `episodes` (observations; true labels only where the rollout kept them) into a directory the project
  claims; returns the completion summary (with `success_rate`, the mean of `log_success`, where every episode has
  that key)."""
  ownership.claim(directory, {"format": FORMAT, **meta})
  for i, e in enumerate(episodes):
    io.write_npz(os.path.join(directory, f"{i:06d}.npz"), e, compress=False)
  returns = [float(e["log_return"]) for e in episodes]
  summary = dict(meta, episodes=len(episodes), mean_return=float(np.mean(returns)),
                 std_return=float(np.std(returns)), steps=int(sum(len(e["state"]) - 1 for e in episodes)))
  if episodes and all("log_success" in e for e in episodes):
    summary["success_rate"] = float(np.mean([float(e["log_success"]) for e in episodes]))
  ownership.mark_complete(directory, summary)
  return summary


def pool_plan(d: ml_collections.ConfigDict) -> list[tuple[str, float]]:
  """`config.data`'s pools as [(quality, `targets` value for snapshot_by "return", `snapshots` value for
  "episodes")] in quality order; one-sentence errors for another mode, unknown qualities or values that do not
  increase."""
  if d.snapshot_by not in SNAPSHOT_BY:
    raise VidrlError(f"data.snapshot_by is {d.snapshot_by!r}; set it to one of {SNAPSHOT_BY}")
  if d.snapshot_by == "return":
    return _ordered(d.targets, "data.targets", "greedy evaluation returns")
  return _ordered(d.snapshots, "data.snapshots", "expert episodes")


def _ordered(values: Mapping[str, float], name: str, unit: str) -> list[tuple[str, float]]:
  unknown = sorted(set(values) - set(QUALITIES))
  if unknown or not values:
    raise VidrlError(f"{name} names {unknown or 'no qualities'}; give {unit} for some of {QUALITIES}")
  out = [(q, values[q]) for q in QUALITIES if q in values]
  if any(a >= b for (_, a), (_, b) in zip(out, out[1:])):
    raise VidrlError(f"{name} {dict(values)} must give increasing {unit} for low < medium < high; reorder them")
  return out


def snapshot_decisions(evaluations: Sequence[tuple[int, float]], targets: Mapping[str, float],
                       max_episodes: int) -> dict[str, dict]:
  """Where each quality's pool is snapshotted, from the expert's evaluations [(expert episodes, greedy evaluation
  return)] in training order and `targets` {quality: target return} (increasing by quality): at the first
  evaluation whose return reaches (>=) the target; once the evaluations reach `max_episodes`, a target none reached
  is snapshotted at the last one with `target_reached` False. {quality: dict(target, expert_episodes,
  expert_greedy_return, target_reached)}; qualities not decided yet are absent."""
  out = {}
  for quality, target in _ordered(targets, "data.targets", "greedy evaluation returns"):
    hit = next(((e, r) for e, r in evaluations if r >= target), None)
    if hit is None and evaluations and evaluations[-1][0] >= max_episodes:
      hit = evaluations[-1]
    if hit is not None:
      out[quality] = dict(target=float(target), expert_episodes=int(hit[0]), expert_greedy_return=float(hit[1]),
                          target_reached=bool(hit[1] >= target))
  return out


def make_pools(config: ml_collections.ConfigDict, workdir: str, writer: MetricWriter) -> dict[str, dict]:
  """The observation pools of `config.data` (`dir`, `snapshot_by`, `targets` or `snapshots`, `max_expert_episodes`,
  `episodes`, `greedy`; the expert `config.expert`, seed `config.seed`): {quality: completion summary + `dir`}.
  Finished pools are read back, not redone; a directory the project did not write is used as it is."""
  d = config.data
  plan = pool_plan(d)
  root = d.dir or os.path.join(workdir, "data")
  pools = {}
  for quality, _ in plan:
    directory = os.path.join(root, quality)
    if ownership.state(directory) in ("complete", "foreign"):
      pools[quality] = dict(ownership.read_complete(directory) or {}, dir=directory)
  todo = {q: v for q, v in plan if q not in pools}
  if todo:
    expert = _Expert(config, workdir, writer, root)
    made = expert.by_return(todo) if d.snapshot_by == "return" else expert.by_episodes(todo)
    pools.update(made)
  return {q: pools[q] for q, _ in plan}


class _Expert:
  """The expert stage of `make_pools`: trained to a number of episodes (each rerun of the stage resumes from its
  last checkpoint) and rolled out into pools."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, writer: MetricWriter, root: str):
    self.config, self.workdir, self.writer, self.root = config, workdir, writer, root
    d = config.data
    self.env = acrobot(config.env.num_envs, config.env.episode_steps)
    self.roll_env = acrobot(d.episodes, config.env.episode_steps)
    self.eval_env = acrobot(config.env.eval_envs, config.env.episode_steps)
    most = max(d.snapshots.values()) if d.snapshot_by == "episodes" else int(d.max_expert_episodes)
    # One replay size for every snapshot, so each rerun of the stage restores the same state shapes.
    self.capacity = min(int(config.expert.replay_capacity), most * self.env.max_episode_steps * self.env.num_envs)
    learner = sac.learner_config(config.expert)
    self.act = lambda params, obs, rng: sac.act(params, obs, rng, bool(d.greedy), learner, 1)
    self.t0 = time.time()

  def train(self, episodes: int) -> tuple[sac.SACState, float | None]:
    """The expert after `episodes` episodes and its greedy evaluation return."""
    c = self.config
    task = fused.fused_sac_task("expert", self.env, _with(c.expert, num_episodes=int(episodes)),
                                [fused.Run(f"seed{c.seed}", c.seed)], eval_env=self.eval_env, capacity=self.capacity)
    at = stage_step(self.workdir, task.name)
    if at is not None and at > task.num_steps:   # `run` would restore that later expert as this one
      raise VidrlError(f"stage {task.name} in {self.workdir} has trained past {episodes} episodes (checkpoint step "
                       f"{at} of {task.num_steps}), so the pool snapshotted there cannot be made; delete "
                       f"{os.path.join(self.workdir, task.name)} to train the expert again")
    state, evaluation = run(task, c.loop, self.workdir, self.writer, c.seed)
    return fused.run_state(state, 0), evaluation.get("eval/mean_return")

  def write(self, quality: str, expert: sac.SACState, meta: dict) -> dict:
    directory = os.path.join(self.root, quality)
    eps = rollout_episodes(self.roll_env, self.act, sac.policy_params(expert),
                           stage_rng(self.config.seed, f"pool/{quality}"), actions=True)
    summary = write_pool(directory, eps, dict(quality=quality, greedy=bool(self.config.data.greedy),
                                              seconds=round(time.time() - self.t0, 1), **meta))
    self.t0 = time.time()
    return dict(summary, dir=directory)

  def by_episodes(self, todo: dict[str, int]) -> dict[str, dict]:
    """Each quality's pool from the expert after its `snapshots` episodes."""
    pools = {}
    for quality, episodes in todo.items():
      expert, ret = self.train(episodes)
      pools[quality] = self.write(quality, expert, dict(snapshot_by="episodes", expert_episodes=int(episodes),
                                                        expert_greedy_return=ret))
    return pools

  def by_return(self, todo: dict[str, float]) -> dict[str, dict]:
    """Each quality's pool from the expert at the evaluation `snapshot_decisions` picks: the expert is trained
    `expert.eval_every_episodes` episodes at a time up to `data.max_expert_episodes`, and every evaluation is
    recorded in <workdir>/expert/snapshots.json, so a rerun decides as the interrupted run did."""
    every, most = int(self.config.expert.eval_every_episodes), int(self.config.data.max_expert_episodes)
    if every < 1 or most < every or most % every:
      raise VidrlError(f"data.max_expert_episodes {most} must be a positive multiple of expert.eval_every_episodes "
                       f"{every} (the expert is evaluated between them); change one of them")
    record = os.path.join(self.workdir, "expert", "snapshots.json")
    evaluations = [(int(e), float(r)) for e, r in io.read_json(record)["evaluations"]] if io.exists(record) else []
    pools, expert = {}, None
    while True:
      decided = {q: v for q, v in snapshot_decisions(evaluations, self.config.data.targets, most).items()
                 if q in todo and q not in pools}
      for quality, decision in decided.items():
        if decision["expert_episodes"] != evaluations[-1][0]:
          raise VidrlError(f"pool {quality} is snapshotted at expert episode {decision['expert_episodes']} but the "
                           f"expert has trained on to {evaluations[-1][0]}; delete {os.path.dirname(record)} to "
                           f"train the expert again")
        if expert is None:   # a rerun: the expert of that evaluation, restored from its checkpoint
          expert = self.train(evaluations[-1][0])[0]
        pools[quality] = self.write(quality, expert, dict(snapshot_by="return", **decision))
      if len(pools) == len(todo):
        return pools
      episodes = (evaluations[-1][0] if evaluations else 0) + every
      expert, ret = self.train(episodes)
      evaluations.append((episodes, float(ret)))
      io.write_json(record, dict(targets=dict(self.config.data.targets), max_expert_episodes=most,
                                 evaluations=evaluations))


def _with(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.to_dict())
  c.update(overrides)
  return c


class Unlabelled:
  """A transition pool with its `action` and `reward` fields dropped: what RLV sees of observation data."""

  def __init__(self, pool: Any):
    self.pool = pool

  def population(self) -> int:
    return self.pool.population()

  def gather(self, ids: np.ndarray) -> dict[str, Any]:
    return {k: v for k, v in self.pool.gather(ids).items() if k not in ("action", "reward")}

  @property
  def windows(self) -> Any:
    """The 2-row windows the transitions come from (BCO(0) clones its own labels: `bco.gather_stacks` reads no
    action from windows it is given labels for)."""
    return self.pool.windows


def load_pool(directory: str, labelled: bool = False, obs_keys: Sequence[str] | None = None) -> Any:
  """An observation pool as transitions (`obs`/`next_obs` {"state"[, "image"]}, `is_last`, `discount`) for the
  `Sampler`; `obs_keys` picks observation keys (None: all, e.g. ("image",) for a pixels-only learner). The
  project's pools may keep the expert's actions and rewards in their files (paper Fig. 8's ablations with true
  labels read them, `labelled=True`); without `labelled` they are dropped, so RLV never sees them."""
  data = formats.episodes(directory, obs_keys=obs_keys)
  if labelled and (not data.has_actions or data.reward is None):
    raise VidrlError(f"{directory} holds no actions or rewards, so the ablations with true labels cannot use it; "
                     f"let the project write its pools, or run obs_actions='inverse' and obs_rewards='eq2'")
  return data.transitions() if labelled else Unlabelled(data.transitions())
