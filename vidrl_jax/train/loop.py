"""The one training loop every method uses.

A method describes a stage as a `Task`: a pure `init(rng) -> state`, a pure `step(state, batch, rng) ->
(state, metrics)`, and a `batch(step)` function that is deterministic in the step number. The loop jits the step
once over the device mesh (batch split on `data`, state replicated unless the task says otherwise), logs the
metrics averaged over each logging interval, evaluates, checkpoints, and resumes.

Exact resumption: the step's rng is `fold_in(stage_rng, step)` and the batch is `batch(step)`, so a run
interrupted at any checkpoint and rerun with the same workdir continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

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
  """Trains `task` to `task.num_steps` (or resumes it there); returns the final state and last eval metrics.

  `stop_after` ends the run early at that step (after checkpointing); tests use it to simulate an interruption.
  """
  mesh = mesh_lib.make_mesh()
  rng_init, rng_steps = jax.random.split(stage_rng(seed, task.name))
  abstract = jax.eval_shape(task.init, rng_init)
  repl = mesh_lib.replicated(mesh)
  shardings = (task.state_sharding(mesh, abstract) if task.state_sharding
               else jax.tree.map(lambda _: repl, abstract))

  ckpt = Checkpointer(os.path.join(workdir, task.name, "checkpoints"), keep=loop.keep_checkpoints)
  start = ckpt.latest_step()
  if start is None:
    state = jax.jit(task.init, out_shardings=shardings)(rng_init)
    start = 0
  else:
    try:
      state = ckpt.restore(start, abstract, shardings)
    except Exception:
      ckpt.close()
      raise
    writer.truncate(task.name, start)

  def step_fn(state, batch, step, rng):   # the rng is an argument, not a constant: stages of equal shapes
    return task.step(state, batch, jax.random.fold_in(rng, step))   # then compile to the same program

  batch_sharding = mesh_lib.data_sharded(mesh)
  jstep = jax.jit(step_fn, in_shardings=(shardings, batch_sharding, repl, repl),
                  out_shardings=(shardings, repl), donate_argnums=0)

  end = task.num_steps if stop_after is None else min(stop_after, task.num_steps)
  last_ckpt = start if start > 0 else None
  pending: list[dict] = []
  eval_metrics: dict = {}
  bar = tqdm(total=task.num_steps, initial=start, desc=task.name, unit="step", dynamic_ncols=True,
             mininterval=2.0, disable=not loop.progress or jax.process_index() != 0)
  try:
    for step in range(start, end):
      batch = mesh_lib.put_batch(task.batch(step), mesh) if task.batch else None
      state, metrics = jstep(state, batch, jnp.asarray(step, jnp.int32), rng_steps)
      pending.append(metrics)
      done = step + 1
      bar.update(1)
      is_last = done == end
      save = is_last or (loop.checkpoint_every and done % loop.checkpoint_every == 0)
      if is_last or save or done % (task.log_every or loop.log_every) == 0:
        logged = _mean(pending)
        pending = []
        check_finite(logged, task.name, done, last_ckpt)
        writer.write(task.name, done, logged)
        shown = [k for k in ("loss/total", "episode_return", "accuracy") if k in logged] or list(logged)[:2]
        bar.set_postfix({k.split("/")[-1]: f"{logged[k]:.4g}" for k in shown}, refresh=False)
      if task.evaluate and ((loop.eval_every and done % loop.eval_every == 0) or done == task.num_steps):
        eval_metrics = {f"eval/{k}": v for k, v in task.evaluate(state, done).items()}
        check_finite(eval_metrics, task.name, done, last_ckpt)
        writer.write(task.name, done, eval_metrics)
      if save:
        ckpt.save(done, state)
        last_ckpt = done
    if start >= end and task.evaluate:  # already finished: report the final evaluation again
      eval_metrics = {f"eval/{k}": v for k, v in task.evaluate(state, start).items()}
  finally:
    bar.close()
    writer.flush()
    ckpt.close()
  return state, eval_metrics


def _mean(rows: list[dict]) -> dict[str, float]:
  if not rows:
    return {}
  stacked = jax.device_get(rows)
  return {k: float(np.mean([r[k] for r in stacked])) for k in stacked[0]}
