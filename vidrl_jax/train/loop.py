"""The one training loop every method uses, for offline stages and for online stages that collect as they train.

A method describes a stage as a `Task`: a pure `init(rng) -> state`, a pure `step(state, batch, rng) ->
(state, metrics)`, and where the data comes from:
- offline: a `batch(step)` function that is deterministic in the step number (or none, e.g. PPO, whose step
  collects inside `jit`);
- online: a `collector` (`vidrl_jax.train.online.Collector`) that acts in an environment with the current state
  before each step, fills its replay buffer and gives the step's batch (a burst of updates), or None when no update
  is due.
The loop jits the step once over the device mesh (an offline batch split on `data` along its leading axis, an
online burst (K, B, ...) along B, state replicated unless the task says otherwise), logs the metrics averaged over each logging interval (one NaN
check, one progress bar showing the task's `show` metrics), evaluates, checkpoints, and resumes.

Several processes (`vidrl_jax.launch.init_distributed`; the mesh spans all their devices): every process runs the
same loop; `batch(step)` and a collector's `batch(step)` give only this process's rows of the step's global batch
(`data.mix.draw`); an online collector acts on every process alike (the same environment streams, each holding the
whole replay) with a process-local copy of the replicated state (`mesh.local_copy`), as evaluations do; process 0
alone writes metrics, results and the collector files, and orbax writes each checkpoint once.

Exact resumption: the step's rng is `fold_in(stage_rng, step)` and the batch is `batch(step)`; a collector's state
(replay buffer, counters, the running episode) is saved as one atomic file beside each orbax checkpoint of the
same step, written before it, so a run interrupted anywhere and rerun with the same workdir continues exactly as an
uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import os
import re
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from vidrl_jax import io
from vidrl_jax.errors import VidrlError
from vidrl_jax.train import mesh as mesh_lib
from vidrl_jax.train.checkpoint import Checkpointer
from vidrl_jax.train.logger import MetricWriter, check_finite

State = Any


@dataclasses.dataclass(frozen=True)
class Task:
  """One trainable stage (see module docstring)."""
  name: str
  init: Callable[[jax.Array], State]
  step: Callable[[State, Any, jax.Array], tuple[State, dict]]
  num_steps: int
  batch: Callable[[int], Any] | None = None          # step -> process-local numpy batch; None: no data
  evaluate: Callable[[State, int], dict] | None = None  # (state, step) -> metrics, may run on the host
  state_sharding: Callable[[Any, State], Any] | None = None  # (mesh, abstract state) -> shardings
  log_every: int | None = None                        # overrides the loop config (e.g. 1 for RL updates)
  checkpoint_every: int | None = None                 # overrides the loop config
  eval_every: int | None = None                       # overrides the loop config
  show: tuple[str, ...] = ("loss/total",)             # metrics the progress bar shows (else the first two)
  collector: Any = None                               # online stages: a `train.online.Collector` (then no batch)
  warm_start: Callable[[State], State] | None = None  # applied once to the fresh state, on the host (e.g. loading
                                                      # pre-trained weights); a resumed run restores its checkpoint


def loop_config(**overrides) -> ml_collections.ConfigDict:
  """Loop settings every method config carries as `config.loop` (overrides per preset)."""
  c = ml_collections.ConfigDict(dict(log_every=50, eval_every=0, checkpoint_every=500, keep_checkpoints=2,
                                     progress=True))
  c.update(overrides)
  return c


def stage_rng(seed: int, name: str) -> jax.Array:
  """Independent, reproducible rng per (seed, stage name)."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)


def run(task: Task, loop: ml_collections.ConfigDict, workdir: str, writer: MetricWriter, seed: int,
        stop_after: int | None = None) -> tuple[State, dict]:
  """Trains `task` to `task.num_steps` (or resumes it there); returns the final state and the last eval metrics
  ("eval/<name>"), joined for an online stage by its collector's `summary()` (e.g. episodes, mean_return).

  `stop_after` ends the run early at that step (after checkpointing); tests use it to simulate an interruption.
  """
  if task.collector is not None and task.batch is not None:
    raise VidrlError(f"stage {task.name} has both a batch function and a collector; an online stage's collector "
                     f"gives its batches, so drop the batch function")
  mesh = mesh_lib.make_mesh()
  primary = jax.process_index() == 0   # writes the collector files; every process reads them on resumption
  rng_init, rng_steps = jax.random.split(stage_rng(seed, task.name))
  abstract = jax.eval_shape(task.init, rng_init)
  repl = mesh_lib.replicated(mesh)
  shardings = (task.state_sharding(mesh, abstract) if task.state_sharding
               else jax.tree.map(lambda _: repl, abstract))

  ckpt = Checkpointer(_checkpoint_dir(workdir, task.name), keep=loop.keep_checkpoints)
  collector = task.collector
  start = ckpt.latest_step()
  if start is None:
    state = jax.jit(task.init, out_shardings=shardings)(rng_init)
    if task.warm_start is not None:
      state = jax.device_put(task.warm_start(mesh_lib.local_copy(state)), shardings)
    start = 0
  else:
    try:
      state = ckpt.restore(start, abstract, shardings)
      if collector is not None:
        collector.load_state_dict(_read_host(workdir, task.name, start))
    except Exception:
      ckpt.close()
      raise
    writer.truncate(task.name, start)

  def step_fn(state, batch, step, rng):   # the rng is an argument, not a constant: stages of equal shapes
    return task.step(state, batch, jax.random.fold_in(rng, step))   # then compile to the same program

  batch_axis = 1 if collector is not None else 0   # an online burst is (K updates, B, ...)
  batch_sharding = mesh_lib.data_sharded(mesh, batch_axis)
  jstep = jax.jit(step_fn, in_shardings=(shardings, batch_sharding, repl, repl),
                  out_shardings=(shardings, repl), donate_argnums=0)
  every = dict(log=task.log_every or loop.log_every,
               checkpoint=loop.checkpoint_every if task.checkpoint_every is None else task.checkpoint_every,
               eval=loop.eval_every if task.eval_every is None else task.eval_every)

  end = task.num_steps if stop_after is None else min(stop_after, task.num_steps)
  last_ckpt = start if start > 0 else None
  pending: list[dict] = []
  eval_metrics: dict = {}
  bar = tqdm(total=task.num_steps, initial=start, desc=task.name, unit="step", dynamic_ncols=True,
             mininterval=2.0, disable=not loop.progress or jax.process_index() != 0)
  try:
    for step in range(start, end):
      metrics = {}
      if collector is not None:
        metrics = collector.collect(mesh_lib.local_copy(state), step)
        batch = collector.batch(step)
        if batch is not None:
          state, burst = jstep(state, mesh_lib.put_batch(batch, mesh, batch_axis), jnp.asarray(step, jnp.int32),
                               rng_steps)
          metrics = {**metrics, **burst}
      else:
        batch = mesh_lib.put_batch(task.batch(step), mesh) if task.batch else None
        state, metrics = jstep(state, batch, jnp.asarray(step, jnp.int32), rng_steps)
      pending.append(metrics)
      done = step + 1
      bar.update(1)
      is_last = done == end
      save = is_last or (every["checkpoint"] and done % every["checkpoint"] == 0)
      if is_last or save or done % every["log"] == 0:
        logged = _mean(pending)
        pending = []
        check_finite(logged, task.name, done, last_ckpt)
        if collector is not None:
          logged.update(collector.counters())
        writer.write(task.name, done, logged)
        shown = [k for k in task.show if k in logged] or list(logged)[:2]
        bar.set_postfix({k.split("/")[-1]: f"{logged[k]:.4g}" for k in shown}, refresh=False)
      if task.evaluate and ((every["eval"] and done % every["eval"] == 0) or done == task.num_steps):
        eval_metrics = {f"eval/{k}": v for k, v in task.evaluate(mesh_lib.local_copy(state), done).items()}
        check_finite(eval_metrics, task.name, done, last_ckpt)
        writer.write(task.name, done, eval_metrics)
      if save:
        if collector is not None and primary:   # written first: an orbax step never lacks its collector file
          io.write_npz(_host_path(workdir, task.name, done), collector.state_dict(), compress=False)
        ckpt.save(done, state)   # every process calls it; orbax writes replicated arrays once
        last_ckpt = done
        if collector is not None and primary:
          _drop_host_files(workdir, task.name, keep=ckpt.all_steps())
    if start >= end and task.evaluate:  # already finished: report the final evaluation again
      eval_metrics = {f"eval/{k}": v for k, v in task.evaluate(mesh_lib.local_copy(state), start).items()}
  finally:
    bar.close()
    writer.flush()
    ckpt.close()
  if collector is not None:
    eval_metrics = {**collector.summary(), **eval_metrics}
  return state, eval_metrics


def stage_finished(workdir: str, name: str, num_steps: int) -> bool:
  """Whether stage `name` of `workdir` has its checkpoint of step `num_steps`, i.e. `run` would only restore and
  evaluate it again; asks without opening a stage that has no checkpoint directory (nothing is created)."""
  return stage_step(workdir, name) == num_steps


def stage_step(workdir: str, name: str) -> int | None:
  """The step of stage `name`'s latest checkpoint in `workdir` (None: none), where a rerun of `run` resumes; asks
  without opening a stage that has no checkpoint directory (nothing is created)."""
  directory = _checkpoint_dir(workdir, name)
  if not io.isdir(directory):
    return None
  ckpt = Checkpointer(directory)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def restore_finished(task: Task, workdir: str, seed: int) -> State:
  """The final state of `task` as another run left it in `workdir` (e.g. a pre-training a fine-tuning run points
  at), on this process's devices; reads only. One-sentence errors when the stage is missing, unfinished, or was
  trained with other shapes."""
  directory = _checkpoint_dir(workdir, task.name)
  if not io.isdir(directory):
    raise VidrlError(f"{workdir} has no checkpoints of stage {task.name}; point the config at the workdir of a run "
                     f"that finished it")
  ckpt = Checkpointer(directory)
  try:
    step = ckpt.latest_step()
    if step != task.num_steps:
      raise VidrlError(f"stage {task.name} in {workdir} is at step {step} of {task.num_steps}; finish it (rerun its "
                       f"command) or use its step count in the config")
    abstract = jax.eval_shape(task.init, jax.random.split(stage_rng(seed, task.name))[0])
    repl = mesh_lib.replicated(mesh_lib.make_mesh())
    return ckpt.restore(step, abstract, jax.tree.map(lambda _: repl, abstract))
  finally:
    ckpt.close()


def _checkpoint_dir(workdir: str, name: str) -> str:
  return os.path.join(workdir, name, "checkpoints")


def _mean(rows: list[dict]) -> dict[str, float]:
  """Each metric's mean over the rows that have it (an online step logs episode returns only when one ended)."""
  stacked = jax.device_get(rows)
  keys = dict.fromkeys(k for r in stacked for k in r)
  return {k: float(np.mean([np.mean(r[k]) for r in stacked if k in r])) for k in keys}


def _host_path(workdir: str, name: str, step: int) -> str:
  return os.path.join(workdir, name, "collector", f"collector_{step}.npz")


def _read_host(workdir: str, name: str, step: int) -> dict[str, np.ndarray]:
  path = _host_path(workdir, name, step)
  if not io.exists(path):
    raise VidrlError(f"the checkpoint of step {step} of {name} has no collector file {path}; delete "
                     f"{os.path.join(workdir, name)} to start this stage again")
  return io.load_npz(path)


def drop_collector_files(workdir: str, name: str) -> None:
  """Removes every collector file (replay, counters) the loop wrote for stage `name`, nothing else: for a finished
  stage whose replay nothing reads again (resuming it past its end then needs a fresh stage). The collector
  directory goes too when that leaves it empty."""
  _drop_host_files(workdir, name, keep=[])
  directory = os.path.dirname(_host_path(workdir, name, 0))
  if io.isdir(directory) and not io.listdir(directory):
    io.rmtree(directory)


def _drop_host_files(workdir: str, name: str, keep: list[int]) -> None:
  """Removes the collector files of checkpoints the Checkpointer no longer keeps."""
  for path in io.glob(io.join(workdir, name, "collector", "collector_*.npz")):
    m = re.fullmatch(r"collector_(\d+)\.npz", os.path.basename(path))
    if m and int(m.group(1)) not in keep:
      io.remove(path)
