"""RLV's Acrobot and its observation data of three qualities (paper §4.1, Fig. 3): observation-only episodes of an
SAC expert taken at different points of its training.

The official pools are SAC replay pools from three points of training (about -99, -79 and -63 per 100-step
episode); actions and rewards are discarded. Here one SAC stage (`offpolicy.sac_task`, name "expert") is trained
to increasing episode counts (`snapshots`, one per quality: each rerun of the stage resumes from its last
checkpoint), and after each the policy (stochastic, as a replay pool holds; or greedy) is rolled out for
`episodes` episodes on as many env copies, one episode each. A pool is a directory the project owns
(`data.ownership`) of episode files (`data.formats.episodes`): key `state` (T+1, 6) float32, `is_first`,
`is_last` (the trajectory's last row), `is_terminal` (the goal was reached there), and no action or reward key;
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
from vidrl_jax.rl import offpolicy, sac
from vidrl_jax.train import MetricWriter, run
from vidrl_jax.train.loop import stage_rng

QUALITIES = ("low", "medium", "high")
FORMAT = "rlv_observations"


def acrobot(num_envs: int, episode_steps: int = 100) -> VecEnv:
  """The official `AcrobotContinuous`: gymnax Acrobot-v1, a 1-D action in [-1, 1] thresholded at +-0.5 into the
  torques -1 / 0 / +1, episodes of `episode_steps` steps."""
  return thresholded(make_env(env_config("gymnax", "Acrobot-v1", num_envs,
                                         params=dict(max_steps_in_episode=int(episode_steps)))), (-0.5, 0.5))


def rollout_episodes(env: VecEnv, act: Any, params: Any, rng: jax.Array) -> list[dict[str, np.ndarray]]:
  """One episode per env copy of `act(params, obs, rng) -> action`: `state` rows are the reset observation and
  every observation reached (the one before an auto-reset at the end), with `is_first`, `is_last`, `is_terminal`
  and the episode's return under `log_return` (not an observation: `formats.episodes` skips `log_` keys)."""
  if not env.max_episode_steps:
    raise VidrlError(f"{env.name} has no episode length; give it max_steps_in_episode so episodes end")

  @jax.jit
  def scan(params, rng):
    k_reset, k_steps = jax.random.split(rng)
    state, obs = env.reset(k_reset)

    def body(carry, key):
      state, obs = carry
      k_act, k_env = jax.random.split(key)
      state, next_obs, _, done, info = env.step(state, act(params, obs, k_act), k_env)
      out = dict(obs=obs, final_obs=info["final_obs"], done=done, terminated=info["terminated"],
                 ret=info["episode_return"])
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
  return episodes


def write_pool(directory: str, episodes: list[dict[str, np.ndarray]], meta: dict) -> dict:
  """Writes observation-only `episodes` into a directory the project claims; returns the completion summary (with
  `success_rate`, the mean of `log_success`, where every episode has that key)."""
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
    task = offpolicy.sac_task("expert", env, None, _with_episodes(config.expert, episodes), config.seed)
    expert, _ = run(task, config.loop, workdir, writer, config.seed)
    eps = rollout_episodes(roll_env, act, sac.policy_params(expert), stage_rng(config.seed, f"pool/{quality}"))
    summary = write_pool(directory, eps, dict(quality=quality, expert_episodes=int(episodes),
                                              greedy=bool(d.greedy), seconds=round(time.time() - t0, 1)))
    pools[quality] = dict(summary, dir=directory)
  return pools


def _with_episodes(config: ml_collections.ConfigDict, episodes: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(config.to_dict())
  c.num_episodes = int(episodes)
  return c


def load_pool(directory: str, labelled: bool = False, obs_keys: Sequence[str] | None = None) -> Any:
  """An observation pool as transitions (`obs`/`next_obs` {"state"[, "image"]}, `is_last`, `discount`) for the
  `Sampler`; `obs_keys` picks observation keys (None: all, e.g. ("image",) for a pixels-only learner).
  `labelled=True` reads a pool written with the true `action` and `reward` (for the ablations with ground-truth
  observation actions or rewards, e.g. `metaworld_data.write_expert_pool(labelled=True)`) and gives them as the
  transitions' `action` and `reward`."""
  data = formats.episodes(directory, obs_keys=obs_keys)
  if labelled and not (data.has_actions and data.reward is not None):
    raise VidrlError(f"{directory} holds no actions and rewards but labelled=True needs both; point the config at "
                     f"a labelled pool or load it with labelled=False")
  if not labelled and (data.has_actions or data.reward is not None):
    raise VidrlError(f"{directory} holds actions or rewards but an RLV observation pool must not; point the "
                     f"config at observation-only data (or load a labelled pool with labelled=True)")
  return data.transitions()
