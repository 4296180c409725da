"""The shared loop: resume equals an uninterrupted run, non-finite losses stop it, named losses are checked."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax.training.train_state import TrainState

from vidrl_jax import config as config_lib
from vidrl_jax.errors import VidrlError
from vidrl_jax.losses import weighted_sum
from vidrl_jax.train import MetricWriter, Task, loop_config, run, stage_finished


def _regression_task(num_steps=12, lr=0.1, poison_step=None):
  """Noisy linear regression whose batches and step rngs both matter, so any resume slip changes the result."""
  w_true = np.arange(4, dtype=np.float32)

  def batch(step):
    rng = np.random.default_rng([0, step])
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = x @ w_true
    if poison_step is not None and step == poison_step:
      y = y * np.nan
    return {"x": x, "y": y}

  def init(rng):
    return TrainState.create(apply_fn=None, params={"w": jax.random.normal(rng, (4,))}, tx=optax.adam(lr))

  def step(state, b, rng):
    noise = 0.01 * jax.random.normal(rng, (4,))

    def loss_fn(p):
      pred = b["x"] @ (p["w"] + noise)
      return weighted_sum({"mse": (pred - b["y"]) ** 2}, {"mse": 1.0})

    (_, metrics), g = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=g), metrics

  return Task(name="toy", init=init, step=step, num_steps=num_steps, batch=batch)


def _loop():
  return loop_config(log_every=2, checkpoint_every=4, progress=False)


def test_resume_equals_uninterrupted(tmp_path):
  full, _ = run(_regression_task(), _loop(), str(tmp_path / "a"), MetricWriter(str(tmp_path / "a")), seed=0)
  writer = MetricWriter(str(tmp_path / "b"))
  run(_regression_task(), _loop(), str(tmp_path / "b"), writer, seed=0, stop_after=6)   # "interrupted"
  assert not stage_finished(str(tmp_path / "b"), "toy", 12)          # checkpoint 6 of 12
  resumed, _ = run(_regression_task(), _loop(), str(tmp_path / "b"), writer, seed=0)
  assert stage_finished(str(tmp_path / "b"), "toy", 12)
  assert not stage_finished(str(tmp_path / "c"), "toy", 12) and not os.path.exists(tmp_path / "c")   # nothing made
  np.testing.assert_array_equal(np.asarray(full.params["w"]), np.asarray(resumed.params["w"]))
  # metrics.jsonl has each logging step once, as the uninterrupted run does.
  steps = [r["step"] for r in writer.rows("toy")]
  assert steps == sorted(set(steps)) == [2, 4, 6, 8, 10, 12]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
  workdir = str(tmp_path)
  with pytest.raises(VidrlError, match=r"non-finite loss/mse, loss/total by step 6; the last good checkpoint \(step 4\)"):
    run(_regression_task(poison_step=5), _loop(), workdir, MetricWriter(workdir), seed=0)
  assert sorted(os.listdir(os.path.join(workdir, "toy", "checkpoints"))) == ["4"]


def test_weighted_sum_checks_names_and_weights():
  total, metrics = weighted_sum({"a": jnp.array([1.0, 3.0]), "b": jnp.array(4.0)}, {"a": 0.5, "b": 2.0})
  assert float(total) == pytest.approx(0.5 * 2.0 + 2.0 * 4.0)
  assert float(metrics["loss/a"]) == 2.0 and float(metrics["loss/total"]) == pytest.approx(9.0)
  with pytest.raises(VidrlError, match="differ"):
    weighted_sum({"a": jnp.array(1.0)}, {"a": 1.0, "typo": 1.0})


def test_config_rejects_unknown_keys_and_presets():
  def base():
    return ml_collections.ConfigDict({"lr": 1.0, "net": {"width": 4}})

  presets = {"smoke": {"net.width": 2}, "cpu": {}, "paper": {}}
  cfg = config_lib.build(base, presets, "smoke")
  assert cfg.net.width == 2 and cfg.preset == "smoke"
  with pytest.raises(AttributeError):
    cfg.lrr = 3.0                      # locked: a typo cannot add a key
  with pytest.raises(VidrlError, match="unknown config preset 'fast'"):
    config_lib.build(base, presets, "fast")
  with pytest.raises(VidrlError, match="no key 'net.depth'"):
    config_lib.build(base, {**presets, "cpu": {"net.depth": 2}}, "cpu")


def test_metrics_files(tmp_path):
  writer = MetricWriter(str(tmp_path))
  run(_regression_task(num_steps=4), _loop(), str(tmp_path), writer, seed=0)
  writer.close()
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert {"stage", "step", "loss/mse", "loss/total"} <= set(rows[0])
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb"))


def test_checkpoint_from_another_model_is_a_clear_error(tmp_path):
  run(_regression_task(num_steps=4), _loop(), str(tmp_path), MetricWriter(str(tmp_path)), seed=0)
  task = _regression_task(num_steps=8)
  wider = dataclasses.replace(task, init=lambda rng: TrainState.create(
      apply_fn=None, params={"w": jax.random.normal(rng, (5,))}, tx=optax.adam(0.1)))
  with pytest.raises(VidrlError, match="does not fit this config's model"):
    run(wider, _loop(), str(tmp_path), MetricWriter(str(tmp_path)), seed=0)
