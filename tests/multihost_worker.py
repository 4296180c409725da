"""One process of the multi-process tests (tests/test_multihost.py): a few steps of LAPO stage 1, AIME phase 1,
APV's pre-training and an online SAC stage through the shared loop, on `--num_processes` processes of `JAX_NUM_CPU_DEVICES` CPU devices
each (1 process: the reference run, no distributed runtime).

  python tests/multihost_worker.py --workdir W --out O [--num_processes N --process_id i --port P]
                                   [--stop_after S] [--die_at S] [--claim_dir D] [--stages lapo_stage1,...]

Writes O (JSON): per stage the final parameters' checksum, the stage's steps and, for the first batch this process
fed the loop, its step and its rows' checksums (each process must see only its own slice of the global batch); `--stop_after` ends every
stage there (an interruption; rerun without it to resume), `--die_at` kills process 1 inside LAPO stage 1's
batch of that step (os._exit: no clean-up, as a crashed host). `--claim_dir` runs only a shared dataset
directory's claim (`_claim`); `--stages` runs only the named stages (default: all four). For LAPO stage 1 the
output also holds the checksums of its parameters and of its VQ codebook alone (`lapo_parts`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "configs"))


def _rows(tree, axis: int) -> list[float]:
  """Per batch row (along `axis`), the sum of every leaf's values of that row: a fingerprint of which rows a
  process fed, comparable across processes."""
  import jax
  leaves = [np.moveaxis(np.asarray(x, np.float64), axis, 0) for x in jax.tree.leaves(tree)]
  return np.sum([x.reshape(x.shape[0], -1).sum(1) for x in leaves], axis=0).tolist()


def _checksum(state) -> float:
  import jax
  from vidrl_jax.train import mesh
  return float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in jax.tree.leaves(mesh.local_copy(state))))


def _spied(task, name: str, seen: dict):
  """`task` whose batch function records, in `seen[name]`, the first step and rows this process fed."""
  import dataclasses
  batch = task.batch

  def spy(step):
    b = batch(step)
    seen.setdefault(name, dict(step=step, rows=_rows(b, 0)))
    return b

  return dataclasses.replace(task, batch=spy)


def _lapo(workdir: str, pid: int, seen: dict, die_at: int | None):
  import lapo
  from vidrl_jax import io
  from vidrl_jax.data import formats
  from vidrl_jax.methods.lapo import stages
  config = lapo.get_config("smoke")
  data_dir = os.path.join(workdir, f"data_process{pid}")   # every host holds its own copy of the dataset
  rng = np.random.default_rng(0)
  io.write_npz(os.path.join(data_dir, "a.npz"), {
      "obs": (rng.random((64, 10, 10, 4)) < 0.1).astype(np.uint8) * 255, "done": np.zeros(64, bool)})
  data = formats.lapo_chunks(data_dir, done="last").windows(3)
  task = stages.stage1_task(config, data, "lapo_stage1", seed=0, use_vq=True)
  batch = task.batch

  def spy(step):
    if die_at is not None and step == die_at and pid == 1:
      os._exit(3)
    b = batch(step)
    seen.setdefault("lapo_stage1", dict(step=step, rows=_rows(b, 0)))
    return b

  import dataclasses
  return dataclasses.replace(task, batch=spy)


def _aime(workdir: str, seen: dict):
  import ml_collections
  from vidrl_jax.data import formats
  from vidrl_jax.envs.host import BatchEnv, random_policy, run_episodes
  from vidrl_jax.methods.aime import model as model_lib, phases
  from vidrl_jax.methods.aime.envs import aime_trajectory, make_env, observation_keys
  from vidrl_jax.train.optim import optim_config
  env = BatchEnv([make_env("pendulum-swingup", max_steps=24) for _ in range(2)])
  trajs = []
  run_episodes(env, random_policy(1, 0), 4, seed=0, on_episode=lambda i, t: trajs.append(aime_trajectory(t)))
  keys = observation_keys("pendulum-swingup", "lpomdp")
  spec = {k: (trajs[0][k].shape[1:], trajs[0][k].dtype) for k in keys}
  wm = model_lib.make_world_model(spec, keys, 1, model_lib.model_config(deter=16, stoch=4, hidden=16))
  data = formats.from_episodes(trajs, keys).windows(8)
  cfg = ml_collections.ConfigDict(dict(steps=6, batch_size=8, window=8, optim=optim_config(lr=1e-3, clip=100.0)))
  task = phases.phase1_task("aime_phase1", wm, data, cfg, seed=0)
  return _spied(task, "aime_phase1", seen)


def _apv(seen: dict):
  """APV's world-model stage: pre-training the action-free video model (smoke shapes) on random 16x16 videos."""
  import apv
  from vidrl_jax.config import apply_overrides
  from vidrl_jax.data import formats
  from vidrl_jax.methods.apv import agent
  config = apply_overrides(apv.get_config("smoke"), {"pretrain.steps": 6, "pretrain.batch_size": 4})
  rng = np.random.default_rng(0)
  videos = [{"image": rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)} for _ in range(3)]
  task = agent.pretrain_task("apv_pretrain", formats.from_episodes(videos, ["image"]).windows(8), config, seed=0)
  return _spied(task, "apv_pretrain", seen)


def _sac(seen: dict):
  from vidrl_jax.envs.gymnax_host import GymnaxHostEnv
  from vidrl_jax.rl import offpolicy, sac
  env = GymnaxHostEnv("Pendulum-v1", max_steps=10, obs_keys={"position": (0, 2), "velocity": (2, 3)})
  config = sac.sac_config(actor_hidden=(8, 8), critic_hidden=(8, 8), batch_size=8, random_steps=12, train_every=4,
                          updates_per_step=0.5, num_episodes=3, checkpoint_every_episodes=1, replay_capacity=30)
  task = offpolicy.sac_task("sac", env, ("position", "velocity"), config, seed=4)
  collector = task.collector
  batch = collector.batch

  def spy(step):
    b = batch(step)
    if b is not None:
      seen.setdefault("sac", dict(step=step, rows=_rows(b, 1)))
    return b

  collector.batch = spy
  return task


def _claim(directory: str, out: str) -> None:
  """Both processes claim one dataset directory and write into it, as a collection in a shared workdir does: the
  claim's stale-file removal must not delete what another process already wrote, and a directory the project may
  not write must stop every process with the same sentence (no process left waiting)."""
  import jax
  from jax.experimental import multihost_utils
  from vidrl_jax import io
  from vidrl_jax.data import ownership
  from vidrl_jax.errors import VidrlError
  pid = jax.process_index()
  try:
    ownership.claim(directory, {"format": "test"})
  except VidrlError as e:
    with open(out, "w") as f:
      json.dump({"error": str(e)}, f)
    return
  io.write_npz(io.join(directory, f"from_process{pid}.npz"), {"x": np.full(3, pid)})
  multihost_utils.sync_global_devices("written")
  with open(out, "w") as f:
    json.dump({"files": io.listdir(directory)}, f)


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--num_processes", type=int, default=1)
  p.add_argument("--process_id", type=int, default=0)
  p.add_argument("--port", type=int, default=0)
  p.add_argument("--stop_after", type=int, default=None)
  p.add_argument("--die_at", type=int, default=None)
  p.add_argument("--heartbeat_timeout_s", type=int, default=10)
  p.add_argument("--claim_dir", default=None)
  p.add_argument("--stages", default="lapo_stage1,aime_phase1,apv_pretrain,sac")
  args = p.parse_args()

  import jax
  from vidrl_jax import launch
  from vidrl_jax.train import MetricWriter, loop_config, run
  launch.enable_compilation_cache()   # the rerun (and the next test session) loads the compiled steps
  if args.num_processes > 1:
    launch.init_distributed(coordinator_address=f"127.0.0.1:{args.port}", num_processes=args.num_processes,
                            process_id=args.process_id, heartbeat_timeout_s=args.heartbeat_timeout_s,
                            init_timeout_s=60)
  pid = jax.process_index()
  if args.claim_dir:
    return _claim(args.claim_dir, args.out)
  seen: dict = {}
  writer = MetricWriter(args.workdir)
  loop = loop_config(log_every=1, checkpoint_every=2, progress=False)
  out = dict(process=pid, processes=jax.process_count(), devices=jax.device_count(),
             local_devices=jax.local_device_count(), params={}, steps={})
  make = {"lapo_stage1": lambda: _lapo(args.workdir, pid, seen, args.die_at), "aime_phase1": lambda: _aime(
      args.workdir, seen), "apv_pretrain": lambda: _apv(seen), "sac": lambda: _sac(seen)}
  for name in args.stages.split(","):
    task = make[name]()
    state, _ = run(task, loop, args.workdir, writer, seed=0, stop_after=args.stop_after)
    out["params"][task.name] = _checksum(state)
    out["steps"][task.name] = task.num_steps
    if name == "lapo_stage1":
      out["lapo_parts"] = dict(params=_checksum(state.train.params), codebook=_checksum(state.vq.embeddings))
  out["rows"] = seen
  with open(args.out, "w") as f:
    json.dump(out, f)


if __name__ == "__main__":
  main()
