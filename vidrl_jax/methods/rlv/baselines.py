"""RLV's BCO(0) baseline on Acrobot (paper §4.1, Fig. 3: "BCO [3]"), on the project's one BCO(0)
(`vidrl_jax.rl.bco`, shared with AIME).

BCO(0) (Torabi et al. 2018) per (observation pool, seed):
1. interaction data: `interaction_episodes` episodes of a uniform random policy (a in U[-1, 1], thresholded into
   the three torques as RLV's Acrobot), one per env copy of `data.acrobot`, with their actions. Default 10
   episodes = 1,000 env steps, the uniform random steps SAC and RLV start with: BCO then spends exactly the
   interaction SAC and RLV spend before their first update, so its point on the env-steps axis is theirs at 1k;
   more random data would not show the IDM the swinging states of the pools (a random policy stays near the
   bottom). The stream is `stage_rng(seed, "{name}/interaction")`, so a rerun rebuilds the same data.
2. stage `{name}/idm`: the inverse model p(a_t | s_t, s_{t+1}) (`stack=1`: Acrobot's 6-d state is Markov, so
   Torabi et al.'s single-state form) by NLL on the interaction data, the best-validation params kept;
3. its mode labels every transition of the observation pool (`data.load_pool`: action-free);
4. stage `{name}/bc`: the policy pi(a_t | s_t) cloned on those labels (best validation kept);
5. its greedy tanh(mean) policy is evaluated for one episode per copy of `eval_envs` env copies
   (`evaluate.episode_returns`, `stage_rng(seed, "{name}/eval")`) as the BC stage's final evaluation: logged
   under `{name}/bc` as `eval/mean_return`.
Both stages run in the shared loop (`vidrl_jax.train.run`), so a rerun in the same workdir resumes.

Measured 2026-12-01 (this 2-core CPU, shared): a medium pool made by `data.make_pools` with the `cpu` preset's
expert at 400 episodes (seed 0; 100 stochastic episodes, mean -90.9, 9,153 transitions), then
`bco_baseline("bco/medium/seed0", pool, bco_config(interaction_episodes=n), 0, ...)`: greedy return -100.0 on
all 10 eval episodes for n = 10 (1k random steps; 42 s) and n = 100 (10k; 24 s); IDM validation NLL 0.057 and
-0.081. The IDM labels a held-out random pool's torque bins 98.8% right (tests/test_rlv_baselines.py), but the
pool's states lie far from a random policy's (mean |angular velocity| 1.8 / 2.8 against 0.4 / 0.7), where its
labels spread over the three bins (35 / 28 / 37%), and the clone of a weak, stochastic expert with such labels
never swings up within 100 steps.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import numpy as np

from vidrl_jax.data import formats
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.rlv import data as rlv_data
from vidrl_jax.rl import bco
from vidrl_jax.rl.evaluate import continuous_act, episode_returns
from vidrl_jax.rl.offpolicy import STATE
from vidrl_jax.train import MetricWriter, run
from vidrl_jax.train.loop import stage_rng

KEYS = (STATE,)
ACTION_DIM = 1


def bco_config(**overrides) -> ml_collections.ConfigDict:
  """`rl.bco.bco_config` for Acrobot: `stack=1` (Markov state), 2x128 tanh-Gaussian MLPs, 5,000 IDM and 5,000 BC
  steps of batch 256 (our choice: the data are 1,000 and about 10,000 transitions, so 5,000 steps are over 1,000
  epochs of the IDM's 700 training transitions and 100 of the pool's; validation picks the best), plus
  `interaction_episodes` (random-policy episodes for the IDM, see the module docstring) and `eval_envs`."""
  c = bco.bco_config(stack=1, idm_steps=5000, bc_steps=5000)
  c.interaction_episodes = 10
  c.eval_envs = 10
  c.update(overrides)
  return c


def random_episodes(num_episodes: int, episode_steps: int, rng: jax.Array) -> list[dict[str, np.ndarray]]:
  """`num_episodes` episodes of a uniform random policy on `data.acrobot`, with `action` (episode files)."""
  env = rlv_data.acrobot(int(num_episodes), episode_steps)
  act = lambda params, obs, key: jax.random.uniform(key, (obs.shape[0], ACTION_DIM), minval=-1.0, maxval=1.0)
  return rlv_data.rollout_episodes(env, act, None, rng, actions=True)


def greedy_policy(config: ml_collections.ConfigDict):
  """The BC policy's tanh(mean) as `(params, {"state": (N, 6)}, rng) -> (N, 1)` for `evaluate.continuous_act`."""
  net = bco.StackNet(ACTION_DIM, tuple(config.hidden), False, config.cnn_width, with_next=False, stack=1)
  return lambda params, obs, rng: net.apply({"params": params}, {STATE: obs[STATE][:, None]}).mode()


def bco_baseline(name: str, pool_dir: str, config: ml_collections.ConfigDict, seed: int, workdir: str,
                 writer: MetricWriter, loop: ml_collections.ConfigDict, episode_steps: int = 100) -> dict:
  """BCO(0) on RLV's Acrobot with the observation pool in `pool_dir` (see the module docstring); stages
  `{name}/idm` and `{name}/bc` in `workdir`. Returns {mean_return, std_return, returns (one greedy episode per
  eval env copy), env_steps (the random interaction steps, BCO's only env steps besides evaluation),
  idm_val_nll, bc_val_nll, pool_transitions}."""
  if config.stack != 1:
    raise VidrlError(f"RLV's BCO acts on Acrobot's Markov state with stack=1, got stack {config.stack}; leave "
                     f"the rlv bco config's stack at 1")
  if config.interaction_episodes < 1 or config.eval_envs < 1:
    raise VidrlError(f"interaction_episodes and eval_envs must be >= 1, got {config.interaction_episodes} and "
                     f"{config.eval_envs}; fix the bco config")
  episodes = random_episodes(config.interaction_episodes, episode_steps, stage_rng(seed, f"{name}/interaction"))
  env_steps = int(sum(len(e["state"]) - 1 for e in episodes))
  interaction = bco.stacked_frames(formats.from_episodes(episodes, KEYS, "random interaction"), 1)
  idm, _ = run(bco.make_idm_task(f"{name}/idm", interaction, KEYS, ACTION_DIM, config, seed), loop, workdir,
               writer, seed)

  pool = rlv_data.load_pool(pool_dir).windows   # transitions = windows of 2 rows = frame stacks of 1 + next
  labels = bco.label_demos(idm["best_params"], pool, KEYS, ACTION_DIM, config)
  task = bco.make_bc_task(f"{name}/bc", pool, labels, KEYS, ACTION_DIM, config, seed)
  eval_env = rlv_data.acrobot(int(config.eval_envs), episode_steps)
  eval_returns = episode_returns(eval_env, continuous_act(eval_env, greedy_policy(config)))
  eval_rng = stage_rng(seed, f"{name}/eval")

  def greedy(params) -> np.ndarray:   # one episode per eval env copy, in the order they ended
    returns, count = eval_returns(params, eval_rng)
    return np.asarray(returns, np.float64)[:int(count)]

  def evaluate(state: dict, step: int) -> dict:
    returns = greedy(state["best_params"])
    return {**task.evaluate(state, step), "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns))}

  bc, _ = run(dataclasses.replace(task, evaluate=evaluate), loop, workdir, writer, seed)
  returns = greedy(bc["best_params"])
  return dict(mean_return=float(np.mean(returns)), std_return=float(np.std(returns)), returns=returns.tolist(),
              env_steps=env_steps, idm_val_nll=float(idm["best_val"]), bc_val_nll=float(bc["best_val"]),
              pool_transitions=int(pool.num_windows))


def bco_curves(config: ml_collections.ConfigDict, pools: dict, workdir: str, writer: MetricWriter
               ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
  """BCO(0) per (quality, seed) of the pipeline's config (`config.bco`: overrides of `bco_config`) as curves of
  one point: {"bco/<quality>": [(env steps of random interaction, greedy return) per seed]}."""
  cfg = bco_config(**config.bco.to_dict())
  out: dict[str, list] = {}
  for quality, pool in pools.items():
    for seed in config.seeds:
      r = bco_baseline(f"bco/{quality}/seed{seed}", pool["dir"], cfg, int(seed), workdir, writer, config.loop,
                       episode_steps=int(config.env.episode_steps))
      out.setdefault(f"bco/{quality}", []).append((np.array([r["env_steps"]]), np.array([r["mean_return"]])))
  return out
