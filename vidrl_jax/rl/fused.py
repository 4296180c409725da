"""SAC fused on device: a JAX-native environment, the replay and the updates in ONE jitted program, vmapped over
runs (PureJaxRL's pattern). Many seeds and conditions of small networks then share each matrix multiply instead
of running one after another, each paying the host's per-step overhead.

A run is (label, seed, pool): its SAC state, replay ring, env copies and random streams are its own; `pool`
indexes the stacked observation pools (`extra_pools`, RLV's action-free data, drawn `pool_batch` per update beside
SAC's `batch_size`), so RLV's three data qualities train side by side in one program. The runs of one task share
the program (config, aux, env), so a condition that changes the program (an ablation switch) is its own task.

The schedule is `offpolicy.sac_task`'s on a VecEnv (one loop step = `train_every` vector env steps, then a burst
of `round(train_every * updates_per_step)` updates once `random_steps` transitions are in and the replay holds a
batch); the shared loop (`vidrl_jax.train.run`) sees one task step per evaluation interval (`eval_every_episodes`
episodes' worth of loop steps, scanned on device), and checkpoints, logs, evaluates and resumes as for any stage.
Randomness: run r's keys are `fold_in(stage_rng(seed_r, name), pool_r)` folded with the env step, so a run's
numbers do not depend on which other runs share its program (up to float reassociation across batch sizes;
tests/test_fused.py), and a resumed run continues exactly. Transitions are stored in a device ring
(`data.replay.ring_*`); SAC's draws are uniform over the stored ones.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vidrl_jax.data import replay as replay_lib
from vidrl_jax.envs.base import VecEnv, env_action
from vidrl_jax.errors import VidrlError
from vidrl_jax.rl import sac
from vidrl_jax.rl.evaluate import episode_returns
from vidrl_jax.rl.offpolicy import schedule, vec_greedy
from vidrl_jax.train import mesh as mesh_lib
from vidrl_jax.train.loop import Task, stage_rng

EVAL_FOLD = 1_000_003   # evaluation keys: fold_in(run key, EVAL_FOLD), the same episodes at every evaluation


@dataclasses.dataclass(frozen=True)
class Run:
  label: str      # e.g. "medium/seed0": metrics and curves are keyed by it
  seed: int
  pool: int = 0   # index into the stacked extra pools (ignored without them)


@flax.struct.dataclass
class FusedState:
  """Every run's state stacked on a leading axis R, and the env steps all runs have taken (they step together)."""
  sac: sac.SACState
  replay: dict          # (R, C, ...) transitions: obs, action, reward, next_obs, discount
  env_state: Any        # (R, ...)
  obs: jax.Array        # (R, N, D)
  episodes: jax.Array   # (R,) finished episodes so far
  t: jax.Array          # () vector env steps taken


def stack_pools(pools: Sequence[Any], keys: Sequence[str]) -> dict:
  """Observation pools (objects with `population()`, `gather(ids)` returning obs/next_obs dicts of {"state"} and
  flat fields) -> {field: (P, Nmax, ...)} with obs/next_obs as the "state" vector, zero-padded, plus `size` (P,)."""
  drawn = []
  for p in pools:
    rows = p.gather(np.arange(p.population()))
    rows = {k: (v["state"] if isinstance(v, Mapping) else v) for k, v in rows.items() if k in keys}
    missing = sorted(set(keys) - set(rows))
    if missing:
      raise VidrlError(f"an observation pool lacks {missing}; write the pool with those keys or drop the settings "
                       f"that read them")
    drawn.append(rows)
  n = max(len(d["discount"]) for d in drawn)
  out = {k: np.stack([np.concatenate([d[k], np.zeros((n - len(d[k]), *d[k].shape[1:]), d[k].dtype)])
                      for d in drawn]) for k in keys}
  out["size"] = np.array([len(d["discount"]) for d in drawn], np.int32)
  return out


def fused_sac_task(name: str, env: VecEnv, config: ml_collections.ConfigDict, runs: Sequence[Run], *,
                   aux: sac.Aux | None = None, extra_pools: Mapping[str, Any] | None = None,
                   pool_batch: int = 0, eval_env: VecEnv | None = None, capacity: int | None = None) -> Task:
  """The runs as one stage of the shared loop (see module docstring). `extra_pools` {source name: stacked pools
  (`stack_pools`)}: each update's batch carries `pool_batch` draws of run r's pool under that name (for
  `aux.relabel`). The replay holds `capacity` transitions per run (default: `config.replay_capacity` or the whole
  run, whichever is less; give it to keep one state shape when a stage is resumed with more episodes). `run`
  returns the `FusedState`; `run_state(state, r)` is run r's SACState. Evaluation (with
  `eval_env`): one greedy episode per eval env copy per run, metrics `return/<label>` and `mean_return`."""
  if not runs or len({r.label for r in runs}) != len(runs):
    raise VidrlError(f"a fused task needs runs with distinct labels, got {[r.label for r in runs]}")
  if len(env.obs_shape) != 1 or env.num_actions is not None:
    raise VidrlError(f"the fused SAC takes a VecEnv with vector observations and continuous actions; {env.name} "
                     f"has observations {env.obs_shape} and {env.num_actions} discrete actions")
  extra_pools = dict(extra_pools or {})
  if extra_pools and pool_batch < 1:
    raise VidrlError("extra pools need pool_batch >= 1 draws per update; set it (RLV: obs_batch)")
  for src, p in extra_pools.items():
    if max(r.pool for r in runs) >= len(p["size"]) or min(r.pool for r in runs) < 0:
      raise VidrlError(f"run pools {[r.pool for r in runs]} index past the {len(p['size'])} pools of {src!r}")
  R, N, D, A = len(runs), env.num_envs, env.obs_shape[0], env.action_shape[0]
  length = env.max_episode_steps
  T, K, B = int(config.train_every), round(config.train_every * config.updates_per_step), int(config.batch_size)
  if not length or T < 1 or K < 1 or B < 1 or config.num_episodes < 1:
    raise VidrlError(f"the episode length, train_every, the updates per burst, batch_size and num_episodes must be "
                     f">= 1; got {length}, {T}, {K}, {B} and {config.num_episodes}")
  plan = schedule(config, length)
  chunk = plan["eval_every"] or plan["log_every"]            # loop steps per task step
  num_task_steps = math.ceil(plan["num_steps"] / chunk)
  capacity = capacity or min(int(config.replay_capacity), num_task_steps * chunk * T * N)
  capacity = capacity // (T * N) * (T * N)
  if capacity < 1:
    raise VidrlError(f"replay_capacity {config.replay_capacity} holds less than one loop step's {T * N} "
                     f"transitions; raise it")
  learner = sac.learner_config(config)
  run_keys = jnp.stack([jax.random.fold_in(stage_rng(r.seed, name), r.pool) for r in runs])
  pool_ids = jnp.asarray([r.pool for r in runs], jnp.int32)
  pools = {k: jax.tree.map(jnp.asarray, v) for k, v in extra_pools.items()}
  spec = {"obs": ((D,), np.float32), "action": ((A,), np.float32), "reward": ((), np.float32),
          "next_obs": ((D,), np.float32), "discount": ((), np.float32)}

  def policy(s, obs, rng):
    return sac.act(sac.policy_params(s), obs, rng, False, learner, A)

  def init_one(key):
    k_sac, k_env = jax.random.split(jax.random.fold_in(key, 0))
    env_state, obs = env.reset(k_env)
    return (sac.init(k_sac, D, A, config, aux), replay_lib.ring_init(spec, capacity), env_state, obs)

  def init(rng):   # the loop's rng is unused: each run's keys are its own
    # lax.map, not vmap: the same values (bit for bit), a quarter less XLA compile time
    s, ring, env_state, obs = jax.lax.map(init_one, run_keys)
    return FusedState(sac=s, replay=ring, env_state=env_state, obs=obs, episodes=jnp.zeros((R,), jnp.int32),
                      t=jnp.zeros((), jnp.int32))

  def collect(s, env_state, obs, key, t0):   # one run, T vector steps from env step t0
    def body(carry, t):
      env_state, obs = carry
      k_rand, k_act, k_env = jax.random.split(jax.random.fold_in(key, t), 3)
      uniform = jax.random.uniform(k_rand, (N, A), jnp.float32, -1.0, 1.0)
      action = jnp.where(t * N < config.random_steps, uniform, policy(s, obs, k_act))
      env_state, next_obs, reward, done, info = env.step(env_state, env_action(env, action), k_env)
      row = dict(obs=obs, action=action, reward=reward.astype(jnp.float32), next_obs=info["final_obs"],
                 discount=1.0 - info["terminated"].astype(jnp.float32))
      return (env_state, next_obs), (row, done, info["episode_return"])
    (env_state, obs), (rows, done, ret) = jax.lax.scan(body, (env_state, obs), t0 + jnp.arange(T))
    rows = jax.tree.map(lambda x: x.reshape(T * N, *x.shape[2:]), rows)
    return env_state, obs, rows, jnp.sum(done), jnp.sum(jnp.where(done, ret, 0.0))

  def draw(ring, key, size, pool_id):   # one run's K batches
    k_rep, k_pool = jax.random.split(key)
    batch = replay_lib.ring_sample(ring, k_rep, size, (K, B))
    for i, (src, p) in enumerate(pools.items()):
      ids = jax.random.randint(jax.random.fold_in(k_pool, i), (K, pool_batch), 0, p["size"][pool_id])
      batch[src] = {k: v[pool_id, ids] for k, v in p.items() if k != "size"}   # one gather, not a pool copy
    return batch

  def update_one(s, ring, key, size, pool_id):
    # `key` is the loop step's; `collect` folded env steps t0.. into it, these fold 1 and 2: the streams meet
    # only at env steps 1 and 2, inside the uniform-action phase whenever random_steps > 2 (no update is due).
    batches = draw(ring, jax.random.fold_in(key, 1), size, pool_id)
    s, metrics = sac.update_burst(s, batches, jax.random.fold_in(key, 2), learner, aux)
    return s, jax.tree.map(jnp.mean, metrics)

  abstract = jax.eval_shape(lambda: init(None))
  metric_shapes = jax.eval_shape(lambda st: jax.vmap(update_one, in_axes=(0, 0, 0, None, 0))(
      st.sac, st.replay, run_keys, jnp.int32(B), pool_ids)[1], abstract)

  def loop_step(state: FusedState, _):
    t0 = state.t
    keys = jax.vmap(lambda k: jax.random.fold_in(k, t0))(run_keys)
    env_state, obs, rows, n_done, ret_sum = jax.vmap(collect, in_axes=(0, 0, 0, 0, None))(
        state.sac, state.env_state, state.obs, keys, t0)
    ring = jax.vmap(replay_lib.ring_add, in_axes=(0, 0, None))(state.replay, rows, (t0 * N) % capacity)
    t1 = t0 + T
    size = jnp.minimum(t1 * N, capacity)
    due = (t1 * N >= config.random_steps) & (size >= B)

    def do(s):
      return jax.vmap(update_one, in_axes=(0, 0, 0, None, 0))(s, ring, keys, size, pool_ids)

    def skip(s):
      return s, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metric_shapes)

    s, metrics = jax.lax.cond(due, do, skip, state.sac)
    state = state.replace(sac=s, replay=ring, env_state=env_state, obs=obs, episodes=state.episodes + n_done, t=t1)
    return state, (metrics, due, n_done, ret_sum)

  def step(state: FusedState, batch: Any, rng: jax.Array) -> tuple[FusedState, dict]:
    state, (metrics, due, n_done, ret_sum) = jax.lax.scan(loop_step, state, None, length=chunk)
    updated = jnp.maximum(jnp.sum(due), 1)
    out = {k: jnp.sum(jnp.mean(v, axis=1) * due) / updated for k, v in metrics.items()}
    finished = jnp.sum(n_done, axis=0)   # (R,)
    out.update(episode_return=jnp.sum(ret_sum) / jnp.maximum(jnp.sum(finished), 1),
               env_steps=(state.t * N).astype(jnp.float32), updates=state.sac.step[0].astype(jnp.float32))
    return state, out

  evaluate = None
  if eval_env is not None:
    greedy = episode_returns(eval_env, vec_greedy(eval_env, learner, A))   # one episode per eval env copy
    eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, EVAL_FOLD))(run_keys)
    all_returns = jax.jit(jax.vmap(lambda s, k: greedy(s, k)[0]))

    def evaluate(state: FusedState, step: int) -> dict:
      returns = np.asarray(all_returns(state.sac, eval_keys), np.float64).mean(axis=1)
      return {"mean_return": float(returns.mean()), **{f"return/{r.label}": float(v) for r, v in zip(runs, returns)}}

  per_chunk_episodes = chunk * T / length
  ckpt = max(1, round(config.checkpoint_every_episodes / per_chunk_episodes)) if config.checkpoint_every_episodes else 0
  return Task(name=name, init=init, step=step, num_steps=num_task_steps, evaluate=evaluate, log_every=1,
              checkpoint_every=ckpt, eval_every=1, show=("episode_return", "critic_loss"),
              state_sharding=_run_sharding(R))


def _run_sharding(num_runs: int):
  """Runs split over the mesh's data axis when they divide evenly, else replicated; the env step count replicated."""
  def shardings(mesh, abstract: FusedState):
    repl = mesh_lib.replicated(mesh)
    per_run = mesh_lib.data_sharded(mesh) if num_runs % mesh.devices.size == 0 else repl
    return jax.tree.map(lambda _: per_run, abstract).replace(t=repl)
  return shardings


def run_state(state: FusedState, r: int) -> sac.SACState:
  """Run r's SAC state."""
  return jax.tree.map(lambda x: x[r], state.sac)
