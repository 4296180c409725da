"""LAPO's stage-3 pieces against hand-computed values and the launcher's one-sentence errors. The smoke run of every
stage and its resume: tests/test_notebooks.py (notebooks/lapo.ipynb on the same config)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))

import lapo as lapo_config  # noqa: E402  configs/lapo.py

from vidrl_jax.methods.lapo import decode, models  # noqa: E402
from vidrl_jax.train.optim import Start  # noqa: E402


def _launch(*args, timeout=900):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "lapo.py"), *args],
                        capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def test_policy_fit_measures_against_hand_computed_values():
  z = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 3.0], [6.0, 3.0]])
  # SST = (9 + 1 + 1 + 9) + (1 + 1 + 1 + 1) = 24; labels (0, 0, 1, 1) predict (1, 1) and (5, 3): SSE = 4.
  assert decode.label_share(z, np.array([0, 0, 1, 1])) == pytest.approx(1 - 4 / 24)
  assert decode.label_share(z, np.array([0, 1, 2, 3])) == 1.0
  assert decode.r_squared(z, z + np.array([1.0, 0.0])) == pytest.approx(1 - 4 / 24)
  assert decode.r_squared(z, np.broadcast_to(z.mean(0), z.shape)) == 0.0


def test_online_aux_loss_only_labels_in_episode_windows():
  """The supervised decoder head's loss ignores windows that straddle an episode end."""
  config = lapo_config.get_config("smoke")
  obs = np.zeros((1, 10, 10, 6), np.uint8)
  idm = models.idm(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 10, 10, 6), jnp.uint8))
  policy = models.policy(config).init(jax.random.PRNGKey(1), obs)
  _, params, trainable, aux = decode.online_policy(config, 6, obs, policy, idm, jax.random.PRNGKey(2))
  t, n = 5, 2
  traj = {"obs": jnp.zeros((t, n, 10, 10, 6), jnp.uint8), "next_obs": jnp.zeros((n, 10, 10, 6), jnp.uint8),
          "action": jnp.zeros((t, n), jnp.int32), "done": jnp.ones((t, n), bool)}
  assert float(aux(params, traj, jax.random.PRNGKey(3))["sl_decoder"]) == 0.0     # every window crosses
  traj["done"] = jnp.zeros((t, n), bool)
  assert float(aux(params, traj, jax.random.PRNGKey(3))["sl_decoder"]) > 0.0
  assert not any(jax.tree.leaves(trainable["idm"])) and not any(jax.tree.leaves(trainable["net"]["torso"]))
  assert not any(jax.tree.leaves(trainable["net"]["latent_head"]))        # the supervised path stays stage 2's


def test_online_heads_learn_as_the_official_stage_3():
  """The decoder learns only from the supervised loss, the RL and value heads only by PPO, from their starts."""
  config = lapo_config.get_config("smoke")
  config.unlock()
  config.online_starts.value_head, config.online_starts.rl_head = 256, 384    # env steps; 8 x 16 per rollout
  config.online_starts.heads_lr_scale = 0.25
  obs = np.random.default_rng(0).integers(0, 2, (4, 10, 10, 6)).astype(np.uint8) * 255
  idm = models.idm(config).init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 10, 10, 6), jnp.uint8))
  policy = models.policy(config).init(jax.random.PRNGKey(1), obs[:1])
  apply_fn, params, trainable, aux = decode.online_policy(config, 6, obs[:1], policy, idm, jax.random.PRNGKey(2))
  updates_per_rollout = config.online.update_epochs * config.online.num_minibatches     # 1 x 2
  assert set(jax.tree.leaves(trainable["net"]["decoder"])) == {Start(0)}
  assert set(jax.tree.leaves(trainable["net"]["value_head"])) == {Start(2 * updates_per_rollout, 0.25)}
  assert set(jax.tree.leaves(trainable["net"]["rl_head"])) == {Start(3 * updates_per_rollout, 0.25)}
  assert not any(jax.tree.leaves(trainable["net"]["fc_sl"]))
  np.testing.assert_array_equal(params["net"]["fc_rl"]["kernel"], policy["params"]["torso"]["fc"]["kernel"])
  rl_grads = jax.grad(lambda p: jnp.sum(apply_fn(p, jnp.asarray(obs))[0] ** 2))(params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(rl_grads["net"]["decoder"]))
  assert float(jnp.abs(rl_grads["net"]["rl_head"]["kernel"]).max()) > 0.0
  traj = {"obs": jnp.asarray(np.stack([obs] * 3, 1)), "next_obs": jnp.asarray(obs[:3]),
          "action": jnp.ones((4, 3), jnp.int32), "done": jnp.zeros((4, 3), bool)}
  sl_grads = jax.grad(lambda p: aux(p, traj, jax.random.PRNGKey(3))["sl_decoder"])(params)
  assert float(jnp.abs(sl_grads["net"]["decoder"]["mlp"]["out"]["kernel"]).max()) > 0.0
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(sl_grads["net"]["rl_head"]))
  # "RL, no-SL": the decoder is zero and frozen, so the policy is the RL path alone.
  apply_rl, params_rl, trainable_rl, _ = decode.online_policy(config, 6, obs[:1], policy, idm, jax.random.PRNGKey(2),
                                                              supervised=False)
  assert not any(jax.tree.leaves(trainable_rl["net"]["decoder"]))
  np.testing.assert_array_equal(apply_rl(params_rl, jnp.asarray(obs))[0], 0.0)    # zero RL head, zero decoder


def test_launcher_rejects_unknown_key_and_missing_data(tmp_path):
  out = _launch("--config", "configs/lapo.py:smoke", "--config.stage1.stepz=3", f"--workdir={tmp_path}/a")
  assert out.returncode == 1 and out.stderr.strip() == (
      "error: the config has no key 'stage1.stepz' (did you mean 'steps'?); fix the override --config.stage1.stepz")
  out = _launch("--config", "configs/lapo.py:cpuu", f"--workdir={tmp_path}/a")
  assert out.returncode == 1 and "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0
  assert "unknown config preset 'cpuu'" in out.stderr and "configs/lapo.py:cpu" in out.stderr
  # A dataset marked complete whose shard is corrupt: one sentence on stderr, exit status 1, no traceback.
  data = tmp_path / "data"
  for split in ("train", "labelled"):
    (data / split).mkdir(parents=True)
    (data / split / "_COMPLETE.json").write_text("{}")
    (data / split / "shard_0000_0000.npz").write_bytes(b"PK\x03\x04 not really a zip")
  out = _launch("--config", "configs/lapo.py:smoke", "--config.data.policy=random", "--config.until=probe",
                f"--config.data.dir={data}", f"--workdir={tmp_path}/b")
  assert out.returncode == 1
  assert "truncated or corrupt" in out.stderr and "Traceback" not in out.stderr
