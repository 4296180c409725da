"""Beyond the paper (LAOM): stage 1 with a few action labels (end to end with distractors: tests/test_lapo.py)."""

import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax.training.train_state import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))

import lapo as lapo_config  # noqa: E402  configs/lapo.py

from vidrl_jax.data import formats  # noqa: E402
from vidrl_jax.errors import VidrlError  # noqa: E402
from vidrl_jax.losses import weighted_sum  # noqa: E402
from vidrl_jax.methods.lapo import models, stages  # noqa: E402
from vidrl_jax.nets import vq as vq_lib  # noqa: E402
from vidrl_jax.nets.pixels import image_to_float  # noqa: E402
from vidrl_jax.train.optim import make_optimizer  # noqa: E402

NUM_ACTIONS = 3


def _windows(num_episodes=6, length=20, seed=0):
  """Windows of 3 frames (k=1) of tiny 10x10x2 episodes; pixel (0, 0, 0) holds the episode, (0, 1, 0) the step,
  so every window tells where it came from."""
  rng = np.random.default_rng(seed)
  episodes = []
  for e in range(num_episodes):
    image = (rng.random((length, 10, 10, 2)) < 0.2).astype(np.uint8) * 255
    image[:, 0, 0, 0], image[:, 0, 1, 0] = e, np.arange(length)
    episodes.append({"image": image, "action": rng.integers(0, NUM_ACTIONS, length).astype(np.int32)})
  return formats.from_episodes(episodes, obs_keys=("image",)).windows(3)


def _config(fraction=0.0, **weights):
  c = lapo_config.get_config("smoke")
  c.unlock()
  c.stage1.labels.fraction = fraction
  c.stage1.labels.batch_size = 4
  c.stage1.batch_size = 4
  c.stage1.optim.warmup_steps = 0          # lr > 0 from the first step
  c.stage1.loss_weights.update(weights)
  c.model.impala_channels, c.model.fc, c.model.fdm_base_channels = (4,), 16, 4    # quick to compile
  c.model.fdm_levels = 1
  return c


def _origin(frames):
  """(episode, step) of each window's first frame."""
  return set(zip(frames[:, 0, 0, 0, 0].tolist(), frames[:, 0, 0, 1, 0].tolist()))


def test_labelled_subset_is_the_fraction_fixed_by_the_seed_and_inside_the_train_split():
  train, val = _windows().split(1 / 3, seed=0)
  ids = stages.labelled_windows(train, 0.1, seed=3)
  assert len(ids) == round(0.1 * train.num_windows) and len(np.unique(ids)) == len(ids)
  np.testing.assert_array_equal(ids, stages.labelled_windows(train, 0.1, seed=3))
  assert not np.array_equal(ids, stages.labelled_windows(train, 0.1, seed=4))
  assert ids.min() >= 0 and ids.max() < train.num_windows
  subset = _origin(train.obs(ids, "image"))
  val_windows = _origin(val.obs(np.arange(val.num_windows), "image"))
  assert not subset & val_windows                             # no labelled window of the held-out part
  assert len(stages.labelled_windows(train, 1e-6, seed=0)) == 1   # at least one
  with pytest.raises(VidrlError, match="fraction must lie in"):
    stages.labelled_windows(train, 1.5, seed=0)
  # each step's labelled batch comes from the subset only, is a pure function of the step, leaves the main batch
  with_labels = stages._batch_fn(train, 5, 4, labelled=(ids, 6, 1))
  plain = stages._batch_fn(train, 5, 4)
  seen = set()
  for step in range(30):
    b = with_labels(step)
    seen |= _origin(b["labelled_frames"])
    np.testing.assert_array_equal(b["frames"], plain(step)["frames"])
    np.testing.assert_array_equal(b["labelled_frames"], with_labels(step)["labelled_frames"])
    lb = train.gather(ids, keys=(), labels=("action",))
    assert b["labelled_actions"].shape == (6,) and set(b["labelled_actions"]) <= set(lb["action"][:, 2])
  assert seen <= subset and len(seen) > 1


def test_action_head_loss_is_the_cross_entropy_of_its_logits_and_reaches_the_idm():
  data = _windows()
  config = _config(fraction=1.0, recon=0.0, vq_commit=0.0, action_ce=1.0)
  task = stages.stage1_task(config, data, "s1", seed=0, use_vq=True, num_actions=NUM_ACTIONS)
  state = jax.jit(task.init)(jax.random.key(0))
  assert set(state.train.params) == {"idm", "fdm", "action_head"}
  batch = task.batch(0)
  new, metrics = jax.jit(task.step)(state, batch, jax.random.key(1))
  # by hand: a linear head, logits = z W + b, cross-entropy = logsumexp(logits) - logit of the true action
  p = state.train.params
  z = np.asarray(models.idm(config).apply(p["idm"], batch["labelled_frames"]), np.float64)
  head = p["action_head"]["params"]["mlp"]
  (layer,) = head.values()
  logits = z @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
  y = batch["labelled_actions"]
  ce = np.log(np.exp(logits).sum(-1)) - logits[np.arange(len(y)), y]
  np.testing.assert_allclose(float(metrics["loss/action_ce"]), ce.mean(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["loss/total"]), ce.mean(), rtol=1e-5)
  assert float(metrics["labelled_accuracy"]) == pytest.approx(np.mean(logits.argmax(-1) == y), abs=1e-6)  # float32
  # the only weighted term is the labels', yet the IDM moves: its gradient reaches the IDM
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), p["idm"], new.train.params["idm"])
  assert all(jax.tree.leaves(moved))


def _todays_step(config, data, use_vq=True):
  """Stage 1 as it was before labels (the paper's LAPO), written out as the reference for the off switch."""
  c, v = config.stage1, config.vq
  idm, fdm = models.idm(config), models.fdm(config, data.data.spec("image")[0][-1])
  weights = {"recon": c.loss_weights.recon, "vq_commit": c.loss_weights.vq_commit}
  sample = jnp.asarray(data.obs(np.arange(1), "image"))

  def init(rng):
    r_idm, r_fdm, r_vq = jax.random.split(rng, 3)
    params = {"idm": idm.init(r_idm, sample),
              "fdm": fdm.init(r_fdm, sample[:, :-1], jnp.zeros((1, config.model.latent_dim)))}
    return (TrainState.create(apply_fn=None, params=params, tx=make_optimizer(c.optim, c.steps)),
            vq_lib.vq_init(r_vq, v.num_codebooks, v.num_embeddings, v.dim))

  def step(train, vq_state, frames):
    target = image_to_float(frames[:, -1]) - 0.5

    def loss_fn(params):
      z = idm.apply(params["idm"], frames)
      z_q, info = vq_lib.vq_quantize(vq_state, z, v.num_codebooks, v.codes_per_codebook)
      pred = fdm.apply(params["fdm"], frames[:, :-1], z_q)
      total, metrics = weighted_sum({"recon": jnp.mean((pred - target) ** 2), "vq_commit": info["commitment"]},
                                    weights)
      return total, (metrics, z, info)

    (_, (metrics, z, info)), grads = jax.value_and_grad(loss_fn, has_aux=True)(train.params)
    vq_state = vq_lib.vq_ema_update(vq_state, jax.lax.stop_gradient(z), info["indices"], v.decay)
    return train.apply_gradients(grads=grads), vq_state, metrics

  return init, step


def test_fraction_zero_is_todays_stage1_bit_for_bit():
  data = _windows()
  config = _config(fraction=0.0)
  task = stages.stage1_task(config, data, "s1", seed=0, use_vq=True)
  init, step = _todays_step(config, data)
  state = jax.jit(task.init)(jax.random.key(0))
  train, vq_state = init(jax.random.key(0))
  assert set(state.train.params) == {"idm", "fdm"} and set(task.batch(0)) == {"frames"}
  task_step, ref_step = jax.jit(task.step), jax.jit(step)
  for i in range(2):
    batch = task.batch(i)
    state, metrics = task_step(state, batch, jax.random.key(i))
    train, vq_state, ref = ref_step(train, vq_state, batch["frames"])
    assert all(float(metrics[k]) == float(ref[k]) for k in ref) and "loss/action_ce" not in metrics
  jax.tree.map(np.testing.assert_array_equal, state.train.params, train.params)
  jax.tree.map(np.testing.assert_array_equal, state.vq, vq_state)


def test_labels_without_a_weight_or_with_a_bad_fraction_stop_with_one_sentence():
  data = _windows()
  config = _config(fraction=0.05)
  config.stage1.loss_weights = ml_collections.ConfigDict(dict(recon=1.0, vq_commit=0.05))
  task = stages.stage1_task(config, data, "s1", seed=0, use_vq=True)
  with pytest.raises(VidrlError, match="loss weights"):
    jax.eval_shape(task.step, task.init(jax.random.key(0)), task.batch(0), jax.random.key(0))
  with pytest.raises(VidrlError, match="fraction must lie in"):
    stages.stage1_task(_config(fraction=-0.1), data, "s1", seed=0, use_vq=True)
