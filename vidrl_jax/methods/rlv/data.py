"""RLV's Acrobot and its observation data of three qualities (paper §4.1, Fig. 3): observation-only episodes of an
SAC expert taken at different points of its training.

The official pools are SAC replay pools from three points of training (about -99, -79 and -63 per 100-step
episode); actions and rewards are discarded. Here one SAC stage (`rl.fused`, name "expert") is trained
to increasing episode counts (`snapshots`, one per quality: each rerun of the stage resumes from its last
checkpoint), and after each the policy (stochastic, as a replay pool holds; or greedy) is rolled out for
`episodes` episodes on as many env copies, one episode each. A pool is a directory the project owns
(`data.ownership`) of episode files (`data.formats.episodes`): key `state` (T+1, 6) float32, `is_first`,
`is_last` (the trajectory's last row), `is_terminal` (the goal was reached there), and the expert's `action` and
`reward` (DreamerV2's layout: row t holds what led to observation t), read only by the true-label ablations;
its `_COMPLETE.json` records the mean return. `load_pool` reads it as transitions (obs, next_obs, is_last,
discount) for the `Sampler`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

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
from vidrl_jax.train.loop import stage_rng

QUALITIES = ("low", "medium", "high")
FORMAT = "rlv_observations"


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


def make_pools(config: ml_collections.ConfigDict, workdir: str, writer: MetricWriter) -> dict[str, dict]:
  """The three observation pools of `config.data` (`dir`, `snapshots` {quality: expert episodes}, `episodes`,
  `greedy`; the expert `config.expert`, seed `config.seed`): {quality: completion summary + `dir`}. Finished
  pools are read back, not redone; a directory the project did not write is used as it is."""
  d = config.data
  root = d.dir or os.path.join(workdir, "data")
  unknown = sorted(set(d.snapshots) - set(QUALITIES))
  if unknown or not d.snapshots:
    raise VidrlError(f"data.snapshots names {unknown or 'no qualities'}; give expert episodes for some of "
                     f"{QUALITIES}")
  order = sorted(d.snapshots.items(), key=lambda kv: kv[1])
  if [q for q, _ in order] != [q for q in QUALITIES if q in d.snapshots]:
    raise VidrlError(f"data.snapshots {dict(d.snapshots)} must give increasing expert episodes for "
                     f"low < medium < high; reorder them")
  env = acrobot(config.env.num_envs, config.env.episode_steps)
  roll_env = acrobot(d.episodes, config.env.episode_steps)
  eval_env = acrobot(config.env.eval_envs, config.env.episode_steps)
  # One replay size for every snapshot, so each rerun of the stage restores the same state shapes.
  capacity = min(int(config.expert.replay_capacity), max(d.snapshots.values()) * env.max_episode_steps * env.num_envs)
  learner = sac.learner_config(config.expert)
  act = lambda params, obs, rng: sac.act(params, obs, rng, bool(d.greedy), learner, 1)
  pools = {}
  for quality, episodes in order:
    directory = os.path.join(root, quality)
    state = ownership.state(directory)
    if state in ("complete", "foreign"):
      pools[quality] = dict(ownership.read_complete(directory) or {}, dir=directory)
      continue
    t0 = time.time()
    task = fused.fused_sac_task("expert", env, _with(config.expert, num_episodes=episodes),
                                [fused.Run(f"seed{config.seed}", config.seed)], eval_env=eval_env,
                                capacity=capacity)
    state, evaluation = run(task, config.loop, workdir, writer, config.seed)
    expert = fused.run_state(state, 0)
    eps = rollout_episodes(roll_env, act, sac.policy_params(expert), stage_rng(config.seed, f"pool/{quality}"),
                           actions=True)
    summary = write_pool(directory, eps, dict(quality=quality, expert_episodes=int(episodes),
                                              greedy=bool(d.greedy), seconds=round(time.time() - t0, 1),
                                              expert_greedy_return=evaluation.get("eval/mean_return")))
    pools[quality] = dict(summary, dir=directory)
  return pools


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
