"""LAPO's trainable stages as `Task`s for the shared loop.

- stage 1 (paper §4.1): latent IDM + FDM trained jointly on next-frame prediction, with an EMA vector-quantised
  latent action as the information bottleneck (VQ settings: paper Table A.4);
- stage 2 (paper §4.2): latent behaviour cloning of the IDM's latents (the policy regresses the IDM's
  pre-quantisation latent by MSE, as in the official code);
- the supervised IDM, the probe's upper bound: same IDM trained with cross-entropy on every true action.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from vidrl_jax.data.sequence import Windows
from vidrl_jax.losses import weighted_sum
from vidrl_jax.methods.lapo import models
from vidrl_jax.nets import vq as vq_lib
from vidrl_jax.nets.pixels import image_to_float
from vidrl_jax.train import Task
from vidrl_jax.train.optim import make_optimizer


@struct.dataclass
class Stage1State:
  train: TrainState           # params {'idm': ..., 'fdm': ...}
  vq: vq_lib.VQState          # EMA codebooks, updated outside the gradient


@struct.dataclass
class FrozenTeacherState:
  train: TrainState           # the network being trained
  teacher: Any                # frozen parameters it learns from (the IDM, for stage 2)


def true_actions(batch: dict, offset: int) -> np.ndarray:
  """The true action a_t taken in frame `offset` of each window (evaluation and the supervised baseline only):
  the dataset's action of row offset + 1, the action that led to the next frame."""
  return batch["action"][:, offset + 1]


def _batch_fn(data: Windows, seed: int, batch_size: int, with_actions_at: int | None = None):
  """Deterministic batch for step `step` (exact resumption); true actions only for supervised baselines."""
  proc, count = jax.process_index(), jax.process_count()

  def batch(step: int) -> dict:
    b = data.gather(data.draw(seed, step, batch_size, proc, count), keys=("image",),
                    labels=("action",) if with_actions_at is not None else False)
    out = {"frames": b["obs"]["image"]}
    if with_actions_at is not None:
      out["actions"] = true_actions(b, with_actions_at)
    return out

  return batch


def stage1_task(config: ml_collections.ConfigDict, data: Windows, name: str, seed: int,
                use_vq: bool) -> Task:
  """Latent IDM + FDM + VQ on windows of k+2 frames; the loss is next-frame MSE plus VQ commitment."""
  c, v = config.stage1, config.vq
  channels = data.data.spec("image")[0][-1]
  idm, fdm = models.idm(config), models.fdm(config, channels)
  tx = make_optimizer(c.optim, c.steps)
  sample = jnp.asarray(data.obs(np.arange(1), "image"))
  weights = dict(c.loss_weights)

  def init(rng):
    r_idm, r_fdm, r_vq = jax.random.split(rng, 3)
    p_idm = idm.init(r_idm, sample)
    p_fdm = fdm.init(r_fdm, sample[:, :-1], jnp.zeros((1, config.model.latent_dim)))
    params = {"idm": p_idm, "fdm": p_fdm}
    return Stage1State(TrainState.create(apply_fn=None, params=params, tx=tx),
                       vq_lib.vq_init(r_vq, v.num_codebooks, v.num_embeddings, v.dim))

  def quantize(vq_state, z):
    if not use_vq:
      return z, {"commitment": jnp.zeros(()), "perplexity": jnp.zeros(()), "indices": None}
    return vq_lib.vq_quantize(vq_state, z, v.num_codebooks, v.codes_per_codebook)

  def step(state: Stage1State, batch, rng):
    del rng  # deterministic model; the batch carries the randomness
    frames = batch["frames"]
    target = image_to_float(frames[:, -1]) - 0.5   # FDM predicts o_{t+1} in [-0.5, 0.5]

    def loss_fn(params):
      z = idm.apply(params["idm"], frames)
      z_q, info = quantize(state.vq, z)
      pred = fdm.apply(params["fdm"], frames[:, :-1], z_q)
      losses = {"recon": jnp.mean((pred - target) ** 2), "vq_commit": info["commitment"]}
      total, metrics = weighted_sum(losses, weights)
      return total, (metrics, z, info)

    (_, (metrics, z, info)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.train.params)
    train = state.train.apply_gradients(grads=grads)
    vq_state = state.vq
    if use_vq:
      vq_state = vq_lib.vq_ema_update(state.vq, jax.lax.stop_gradient(z), info["indices"], v.decay)
      metrics["vq/perplexity"] = info["perplexity"]
    metrics["grad_norm"] = optax.global_norm(grads)
    return Stage1State(train, vq_state), metrics

  return Task(name=name, init=init, step=step, num_steps=c.steps,
              batch=_batch_fn(data, seed, c.batch_size))


def stage2_task(config: ml_collections.ConfigDict, data: Windows, idm_params, name: str,
                seed: int) -> Task:
  """Latent BC: pi(o_t) regresses the frozen IDM's pre-quantisation latent z_t (MSE)."""
  c = config.stage2
  k = config.model.context
  idm, pol = models.idm(config), models.policy(config)
  tx = make_optimizer(c.optim, c.steps)
  sample = jnp.asarray(data.obs(np.arange(1), "image"))[:, k]
  weights = dict(c.loss_weights)

  def init(rng):
    params = pol.init(rng, sample)
    return FrozenTeacherState(TrainState.create(apply_fn=None, params=params, tx=tx), idm_params)

  def step(state: FrozenTeacherState, batch, rng):
    del rng
    frames = batch["frames"]
    z = jax.lax.stop_gradient(idm.apply(state.teacher, frames))

    def loss_fn(params):
      pred = pol.apply(params, frames[:, k])
      return weighted_sum({"latent_mse": jnp.mean((pred - z) ** 2)}, weights)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.train.params)
    return FrozenTeacherState(state.train.apply_gradients(grads=grads), state.teacher), metrics

  return Task(name=name, init=init, step=step, num_steps=c.steps, batch=_batch_fn(data, seed, c.batch_size))


def supervised_idm_task(config: ml_collections.ConfigDict, data: Windows, num_actions: int, name: str,
                        seed: int) -> Task:
  """The upper bound: the IDM architecture trained with cross-entropy on every true action a_t."""
  c = config.oracle
  k = config.model.context
  net = models.idm(config, out=num_actions)
  tx = make_optimizer(c.optim, c.steps)
  sample = jnp.asarray(data.obs(np.arange(1), "image"))

  def init(rng):
    return TrainState.create(apply_fn=None, params=net.init(rng, sample), tx=tx)

  def step(state: TrainState, batch, rng):
    del rng

    def loss_fn(params):
      logits = net.apply(params, batch["frames"])
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["actions"])
      total, metrics = weighted_sum({"action_ce": ce}, {"action_ce": 1.0})
      metrics["accuracy"] = jnp.mean(jnp.argmax(logits, -1) == batch["actions"])
      return total, metrics

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), metrics

  return Task(name=name, init=init, step=step, num_steps=c.steps,
              batch=_batch_fn(data, seed, c.batch_size, with_actions_at=k), show=("loss/total", "accuracy"))
