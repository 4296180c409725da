"""The host-side off-policy training loop: SAC on an environment that lives on the host (dm_control), stepped
one decision at a time from Python, with bursts of jitted updates.

Every random choice is a pure function of the seed and a counter, so a run resumed from a checkpoint continues
exactly as an uninterrupted one: episode e is reset with `episode_seed(seed, e)`; the uniform actions of the first
`random_steps` env steps come from `np.random.default_rng([seed, 0, env_step])`; later actions are sampled with
`fold_in(act_rng, env_step)`; the burst after n updates draws its (K, B) batches with
`np.random.default_rng([seed, n])` and update n uses `fold_in(update_rng, n)`. The checkpoint holds the agent and
the env-step counter; the replay buffer and the episode returns are saved beside it.

The host environment API (`vidrl_jax.envs.host`): `obs_spec: {key: (shape, dtype)}`, `action_dim`, `max_steps`,
`reset(seed) -> obs`, `step(action (A,) in [-1, 1]) -> (obs, reward, terminal)`.
"""

from __future__ import annotations

import functools
import glob
import math
import os
import re
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from vidrl_jax.data.replay import ReplayBuffer
from vidrl_jax.envs import host
from vidrl_jax.errors import VidrlError
from vidrl_jax.rl import sac
from vidrl_jax.train.checkpoint import Checkpointer
from vidrl_jax.train.logger import MetricWriter, check_finite
from vidrl_jax.train.loop import stage_rng

EVAL_SEED_OFFSET = 1_000_000  # evaluation episode i is reset with episode_seed(seed, EVAL_SEED_OFFSET + i)
_KEEP = 2                     # checkpoints (and replay files) kept


def obs_vector(obs: Mapping[str, Any], keys: Sequence[str]) -> np.ndarray:
  """The SAC observation: the vector keys concatenated on their last axis as float32, (D,) for one observation
  or (N, D) for a batch of them (scalars count as width 1)."""
  missing = [k for k in keys if k not in obs]
  if missing:
    raise VidrlError(f"observation keys {missing} are not in the environment's observation {sorted(obs)}")
  parts = [np.asarray(obs[k], np.float32) for k in keys]
  return np.concatenate([p[None] if p.ndim == 0 else p for p in parts], axis=-1)


def obs_dim(env: Any, keys: Sequence[str]) -> int:
  """Width of `obs_vector` for `env.obs_spec`; every key must be a vector (or scalar)."""
  missing = [k for k in keys if k not in env.obs_spec]
  if missing or not keys:
    raise VidrlError(f"obs_keys {list(keys)} must be a non-empty subset of the environment's observation keys "
                     f"{sorted(env.obs_spec)}")
  shapes = {k: tuple(env.obs_spec[k][0]) for k in keys}
  wide = {k: s for k, s in shapes.items() if len(s) > 1}
  if wide:
    raise VidrlError(f"SAC takes vector observations, but obs_keys {sorted(wide)} have shapes {list(wide.values())}; "
                     f"pick the state keys")
  return sum(math.prod(s) for s in shapes.values())


@functools.partial(jax.jit, static_argnames=("config", "action_dim"))
def _greedy(params: Any, obs: jax.Array, config: ml_collections.FrozenConfigDict, action_dim: int) -> jax.Array:
  return sac.act(params, obs, jax.random.PRNGKey(0), True, config, action_dim)


class GreedyPolicy:
  """A SAC actor as a host policy (`vidrl_jax.envs.host.run_episodes` protocol): tanh(mean) on `obs_keys`.
  `params = sac.policy_params(state)`; `config` the SAC config it was trained with."""

  def __init__(self, params: Any, obs_keys: Sequence[str], config: ml_collections.ConfigDict, action_dim: int):
    self.params, self.keys = params, tuple(obs_keys)
    self.config, self.action_dim = sac.learner_config(config), int(action_dim)

  def init(self, n: int) -> None:
    return None

  def act(self, carry: None, obs: Mapping[str, Any], is_first: np.ndarray) -> tuple[np.ndarray, None]:
    return np.asarray(_greedy(self.params, obs_vector(obs, self.keys), self.config, self.action_dim)), carry


def evaluate(env: Any, obs_keys: Sequence[str], params: Any, seeds: Sequence[int],
             config: ml_collections.ConfigDict) -> dict[str, float]:
  """Mean and std return of one deterministic (tanh(mean)) episode per reset seed (`params` as `GreedyPolicy`'s)."""
  policy, returns = GreedyPolicy(params, obs_keys, config, env.action_dim), []
  for s in seeds:
    obs, total = env.reset(int(s)), 0.0
    for _ in range(env.max_steps):
      obs, reward, terminal = env.step(policy.act(None, obs, None)[0])
      total += float(reward)
      if terminal:
        break
    returns.append(total)
  return dict(mean_return=float(np.mean(returns)), std_return=float(np.std(returns)), num_episodes=len(returns))


def train_sac(env: Any, obs_keys: Sequence[str], config: ml_collections.ConfigDict, stage_dir: str,
              writer: MetricWriter, seed: int, stage: str = "sac",
              on_episode: Callable[[int, dict], None] | None = None,
              stop_after_episodes: int | None = None) -> tuple[sac.SACState, list[float]]:
  """Trains SAC on `env` for `config.num_episodes` episodes (or resumes there); returns the final agent state and
  the return of every training episode.

  Each episode writes one row at step = env steps so far: `episode` (its index e), `episode_return`,
  `episode_length`, `steps_per_s` and the mean of the episode's update metrics (`sac.SAC_METRICS`, absent before
  the first update). `on_episode(e, trajectory)` then gets the `EpisodeRecorder` trajectory (every key the env
  returned); after a resumption it is called again for the episodes after the checkpoint, with the same
  trajectories, so it should write by episode index. `stop_after_episodes` ends early (after checkpointing), to
  simulate an interruption.
  """
  obs_keys = tuple(obs_keys)
  D, A = obs_dim(env, obs_keys), int(env.action_dim)
  K, B = round(config.train_every * config.updates_per_step), int(config.batch_size)
  if config.num_episodes < 1 or config.train_every < 1 or K < 1 or B < 1 or env.max_steps < 1:
    raise VidrlError(f"num_episodes, train_every, batch_size, round(train_every * updates_per_step) and the env's "
                     f"max_steps must be >= 1; got {config.num_episodes}, {config.train_every}, {B}, {K} and "
                     f"{env.max_steps}")
  learner = sac.learner_config(config)  # hashable: the jitted functions compile once per learner config
  rng_init, rng_act, rng_update = jax.random.split(stage_rng(seed, stage), 3)
  state = sac.init(rng_init, D, A, config)
  buffer = ReplayBuffer(config.replay_capacity, D, A)
  returns: list[float] = []
  env_steps = 0

  ckpt = Checkpointer(os.path.join(stage_dir, "checkpoints"), keep=_KEEP)
  start = ckpt.latest_step() or 0
  if start:
    try:
      like = dict(agent=state, env_steps=jnp.zeros((), jnp.int32))
      restored = ckpt.restore(start, like, jax.tree.map(lambda x: x.sharding, like))
      path = _replay_path(stage_dir, start)
      if not os.path.exists(path):
        raise VidrlError(f"the checkpoint of episode {start} in {stage_dir} has no replay file {path}; delete "
                         f"{stage_dir} to start this stage again")
      extra = buffer.load(path)
    except Exception:
      ckpt.close()
      raise
    state, env_steps = restored["agent"], int(restored["env_steps"])
    returns = [float(r) for r in extra["episode_returns"]]
    writer.truncate(stage, env_steps)
  updates = int(state.step)

  burst = sac.make_update_burst(config)
  end = config.num_episodes if stop_after_episodes is None else min(stop_after_episodes, config.num_episodes)
  last_ckpt = start or None
  bar = tqdm(total=config.num_episodes, initial=start, desc=stage, unit="ep", dynamic_ncols=True, mininterval=2.0,
             disable=jax.process_index() != 0)
  try:
    for e in range(start, end):
      t0 = time.time()
      obs = env.reset(host.episode_seed(seed, e))
      recorder = host.EpisodeRecorder(1, A)
      recorder.reset(_batched(obs))
      vec, total, burst_metrics = obs_vector(obs, obs_keys), 0.0, []
      for t in range(env.max_steps):
        if env_steps < config.random_steps:
          action = np.random.default_rng([seed, 0, env_steps]).uniform(-1.0, 1.0, A).astype(np.float32)
        else:
          action = np.asarray(_policy(sac.policy_params(state), vec, rng_act, env_steps, learner, A))
        obs, reward, terminal = env.step(action)
        next_vec = obs_vector(obs, obs_keys)
        buffer.add(vec, action, reward, next_vec, bool(terminal))
        recorder.step(action[None], _batched(obs), np.asarray([reward], np.float32), np.asarray([bool(terminal)]))
        vec, total, env_steps = next_vec, total + float(reward), env_steps + 1
        if env_steps % config.train_every == 0 and env_steps >= config.random_steps and len(buffer) >= B:
          batches = buffer.sample_stacked(np.random.default_rng([seed, updates]), (K, B))
          state, metrics = burst(state, batches, rng_update)
          burst_metrics.append(metrics)
          updates += K
        if terminal:
          break
      trajectory = recorder.finish()[0]
      done = e + 1
      returns.append(total)
      row = dict(episode=e, episode_return=total, episode_length=t + 1)
      if burst_metrics:
        stacked = jax.device_get(burst_metrics)
        row.update({k: float(np.mean([m[k] for m in stacked])) for k in sac.SAC_METRICS})
      row["steps_per_s"] = (t + 1) / max(time.time() - t0, 1e-9)
      check_finite(row, stage, env_steps, last_ckpt)
      writer.write(stage, env_steps, row)
      bar.update(1)
      bar.set_postfix(ret=f"{total:.4g}", refresh=False)
      if on_episode is not None:
        on_episode(e, trajectory)
      if config.eval_every_episodes and (done % config.eval_every_episodes == 0 or done == config.num_episodes):
        seeds = [host.episode_seed(seed, EVAL_SEED_OFFSET + i) for i in range(config.eval_episodes)]
        metrics = evaluate(env, obs_keys, sac.policy_params(state), seeds, config)
        writer.write(stage, env_steps, {f"eval/{k}": v for k, v in metrics.items()})
      if done == end or (config.checkpoint_every_episodes and done % config.checkpoint_every_episodes == 0):
        buffer.save(_replay_path(stage_dir, done), episode_returns=np.asarray(returns, np.float64))
        ckpt.save(done, dict(agent=state, env_steps=jnp.asarray(env_steps, jnp.int32)))
        last_ckpt = done
        _drop_old_replays(stage_dir, keep=_KEEP)
  finally:
    bar.close()
    writer.flush()
    ckpt.close()
  return state, returns


def _batched(obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
  return {k: np.asarray(v)[None] for k, v in obs.items()}


@functools.partial(jax.jit, static_argnames=("config", "action_dim"))
def _policy(params: Any, obs: jax.Array, rng: jax.Array, env_step: jax.Array,
            config: ml_collections.FrozenConfigDict, action_dim: int) -> jax.Array:
  """An action (A,) for obs (D,) sampled with `fold_in(rng, env_step)`."""
  return sac.act(params, obs, jax.random.fold_in(rng, env_step), False, config, action_dim)


def _replay_path(stage_dir: str, episodes: int) -> str:
  return os.path.join(stage_dir, "replay", f"replay_{episodes}.npz")


def _drop_old_replays(stage_dir: str, keep: int) -> None:
  """Keeps the replay files of the last `keep` checkpoints (the ones the Checkpointer keeps)."""
  found = []
  for path in glob.glob(os.path.join(stage_dir, "replay", "replay_*.npz")):
    m = re.fullmatch(r"replay_(\d+)\.npz", os.path.basename(path))
    if m:
      found.append((int(m.group(1)), path))
  for _, path in sorted(found)[:-keep]:
    os.remove(path)
