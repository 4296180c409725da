"""LAPO's trainable stages as `Task`s for the shared loop.

- stage 1 (paper §4.1): latent IDM + FDM trained jointly on next-frame prediction, with an EMA vector-quantised
  latent action as the information bottleneck (VQ settings: paper Table A.4);
- stage 2 (paper §4.2): latent behaviour cloning of the IDM's latents (the policy regresses the IDM's
  pre-quantisation latent by MSE, as in the official code);
- the supervised IDM, the probe's upper bound: same IDM trained with cross-entropy on every true action.

Beyond the paper, stage 1 optionally takes a little action supervision as LAOM does (Nikulin et al. 2025,
dunnolab/laom `train_laom_labels.py`): a fixed fraction of the observation-only training windows (LAOM: 2.5%)
keep their true action, every step draws an extra batch from them only, and a head on the IDM's latent is trained
with cross-entropy (LAOM: MSE, its actions are continuous), the gradient reaching the IDM. The head reads the
pre-quantisation latent z, as LAOM's `true_actions_head` reads its (unquantised) latent action: z is what stage 2
regresses and what the probe and the decoders read, and it takes the gradient without a straight-through estimator.
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

from vidrl_jax.data import mix
from vidrl_jax.data.sequence import Windows
from vidrl_jax.errors import VidrlError
from vidrl_jax.losses import weighted_sum
from vidrl_jax.methods.lapo import models
from vidrl_jax.nets import vq as vq_lib
from vidrl_jax.nets.pixels import image_to_float
from vidrl_jax.train import Task
from vidrl_jax.train.optim import make_optimizer


@struct.dataclass
class Stage1State:
  train: TrainState           # params {'idm': ..., 'fdm': ...} (and 'action_head' with labels)
  vq: vq_lib.VQState          # EMA codebooks, updated outside the gradient


@struct.dataclass
class FrozenTeacherState:
  train: TrainState           # the network being trained
  teacher: Any                # frozen parameters it learns from (the IDM, for stage 2)


def true_actions(batch: dict, offset: int) -> np.ndarray:
  """The true action a_t taken in frame `offset` of each window (evaluation and the supervised baseline only):
  the dataset's action of row offset + 1, the action that led to the next frame."""
  return batch["action"][:, offset + 1]


def labelled_windows(data: Windows, fraction: float, seed: int) -> np.ndarray:
  """The action-labelled part of the training windows (stage 1 with labels): round(fraction * n) of the n window
  ids of `data` (at least one), drawn without replacement by `default_rng([seed, 11])` and sorted, so a seed
  always labels the same windows and only windows of `data`."""
  if not 0.0 < fraction <= 1.0:
    raise VidrlError(f"stage1.labels.fraction must lie in (0, 1] to label some training windows (0 turns labels "
                     f"off), got {fraction}")
  n = data.num_windows
  return np.sort(np.random.default_rng([seed, 11]).choice(n, max(1, int(round(fraction * n))), replace=False))


def _batch_fn(data: Windows, seed: int, batch_size: int, with_actions_at: int | None = None,
              labelled: tuple[np.ndarray, int, int] | None = None):
  """Deterministic batch for step `step` (exact resumption); true actions only for supervised baselines, and,
  with `labelled` = (window ids, batch size, k), `labelled_frames` and their `labelled_actions` drawn from those
  windows only (stream 1 of the step's draw, so the main batch is the same with or without them)."""
  proc, count = jax.process_index(), jax.process_count()

  def batch(step: int) -> dict:
    b = data.gather(data.draw(seed, step, batch_size, proc, count), keys=("image",),
                    labels=("action",) if with_actions_at is not None else False)
    out = {"frames": b["obs"]["image"]}
    if with_actions_at is not None:
      out["actions"] = true_actions(b, with_actions_at)
    if labelled is not None:
      ids, size, k = labelled
      lb = data.gather(ids[mix.draw(len(ids), seed, step, size, proc, count, stream=1)], keys=("image",),
                       labels=("action",))
      out["labelled_frames"], out["labelled_actions"] = lb["obs"]["image"], true_actions(lb, k)
    return out

  return batch


def stage1_task(config: ml_collections.ConfigDict, data: Windows, name: str, seed: int,
                use_vq: bool, num_actions: int | None = None) -> Task:
  """Latent IDM + FDM + VQ on windows of k+2 frames; the loss is next-frame MSE plus VQ commitment, plus the
  labelled windows' action cross-entropy when `stage1.labels.fraction` > 0 (module docstring). The action head
  has `num_actions` outputs (the pipeline passes the env's; default: one more than the largest stored action)."""
  c, v = config.stage1, config.vq
  channels = data.data.spec("image")[0][-1]
  idm, fdm = models.idm(config), models.fdm(config, channels)
  tx = make_optimizer(c.optim, c.steps)
  sample = jnp.asarray(data.obs(np.arange(1), "image"))
  weights = dict(c.loss_weights)
  fraction = float(c.labels.fraction) if "labels" in c else 0.0
  labelled = None
  if fraction:
    k = config.model.context
    ids = labelled_windows(data, fraction, seed)
    labelled = (ids, int(c.labels.batch_size), k)
    if num_actions is None:   # the action space the stored actions show (its size, not any window's label)
      num_actions = int(data.gather(np.arange(data.num_windows), keys=(), labels=("action",))["action"].max()) + 1
    head = models.action_head(config, num_actions)
  else:
    weights.pop("action_ce", None)      # the term exists only with labels

  def init(rng):
    r_idm, r_fdm, r_vq = jax.random.split(rng, 3)
    p_idm = idm.init(r_idm, sample)
    p_fdm = fdm.init(r_fdm, sample[:, :-1], jnp.zeros((1, config.model.latent_dim)))
    params = {"idm": p_idm, "fdm": p_fdm}
    if labelled is not None:
      params["action_head"] = head.init(jax.random.fold_in(rng, 3), jnp.zeros((1, config.model.latent_dim)))
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
      extra = {}
      if labelled is not None:     # LAOM: cross-entropy of the head on the labelled windows' latents
        logits = head.apply(params["action_head"], idm.apply(params["idm"], batch["labelled_frames"]))
        y = batch["labelled_actions"]
        losses["action_ce"] = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        extra["labelled_accuracy"] = jnp.mean(jnp.argmax(logits, -1) == y)
      total, metrics = weighted_sum(losses, weights)
      return total, ({**metrics, **extra}, z, info)

    (_, (metrics, z, info)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.train.params)
    train = state.train.apply_gradients(grads=grads)
    vq_state = state.vq
    if use_vq:
      vq_state = vq_lib.vq_ema_update(state.vq, jax.lax.stop_gradient(z), info["indices"], v.decay)
      metrics["vq/perplexity"] = info["perplexity"]
    metrics["grad_norm"] = optax.global_norm(grads)
    return Stage1State(train, vq_state), metrics

  return Task(name=name, init=init, step=step, num_steps=c.steps,
              batch=_batch_fn(data, seed, c.batch_size, labelled=labelled))


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
