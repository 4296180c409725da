"""LAPO end to end on the smoke preset (every stage), its resume, and the launcher's one-sentence errors."""

import json
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

from vidrl_jax.methods.lapo import decode, models, train_and_evaluate  # noqa: E402
from vidrl_jax.train.optim import Start  # noqa: E402


def _launch(*args, timeout=900):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "lapo.py"), *args],
                        capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def _smoke_config():
  """The smoke preset on a distractor Breakout (two channels of random-walking dots), so that one run covers every
  stage, every ablation (the LAOM labels one included) and the distractor wrapper."""
  config = lapo_config.get_config("smoke")
  config.env.distractors.kind, config.env.distractors.channels = "dots", 2
  return config


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("lapo"))
  results = train_and_evaluate(_smoke_config(), workdir)
  return workdir, results


def test_every_stage_writes_its_outputs(smoke_run):
  workdir, results = smoke_run
  on_disk = json.load(open(os.path.join(workdir, "results.json")))
  assert on_disk["probe_accuracy"] == results["probe_accuracy"]
  for key in ("probe_accuracy", "oracle_accuracy", "random_idm_accuracy", "online_normalised",
              "scratch_normalised", "online_rl_no_sl_normalised", "online_rl_no_sl_no_vq_normalised",
              "probe_accuracy_novq", "probe_over_oracle", "probe_over_random_idm", "probe_accuracy_labels",
              "online_labels_normalised", "latent_policy_r2", "latent_action_share", "decoded_policy_agreement",
              "latent_action_share_labels"):
    assert np.isfinite(results[key]["mean"]), key
  assert set(results["offline_sweep_normalised"]) == set(results["offline_sweep_normalised_labels"]) == {"16", "64"}
  for name in ("latent_tsne.png", "latent_tsne_novq.png", "latent_tsne_labels.png", "fdm_predictions.png", "online_decoding.png",
               "offline_decoding.png", "losses.png", "metrics.jsonl", "references.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  stages = {json.loads(line)["stage"] for line in open(os.path.join(workdir, "metrics.jsonl"))}
  assert {"expert", "seed0/stage1", "seed0/stage2", "seed0/oracle", "seed0/online", "seed0/scratch",
          "seed0/online_rl_no_sl", "seed0/stage1_novq", "seed0/online_rl_no_sl_no_vq", "seed0/stage1_labels",
          "seed0/online_labels"} <= stages
  labelled_stage1 = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))
                     if '"seed0/stage1_labels"' in line]
  assert labelled_stage1 and all("loss/action_ce" in row and "labelled_accuracy" in row
                                 for row in labelled_stage1 if "loss/recon" in row)
  shard = next(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(workdir, "data", "train")) for f in fs
               if f.endswith(".npz"))
  frames = np.load(shard)["obs"]
  assert frames.shape[1:] == (10, 10, 4 + 2)                   # Breakout's 4 channels + 2 distractor channels
  assert frames[..., 4:].any(axis=(1, 2)).all()                # every frame shows its distractors
  # True actions are in the data for evaluation, and the observation-only stages never needed them:
  assert os.path.exists(os.path.join(workdir, "data", "train", "_COMPLETE.json"))


def test_rerun_resumes_without_retraining(smoke_run):
  workdir, results = smoke_run
  lines = open(os.path.join(workdir, "metrics.jsonl")).read()
  again = train_and_evaluate(_smoke_config(), workdir)
  assert again["probe_accuracy"] == results["probe_accuracy"]
  assert open(os.path.join(workdir, "metrics.jsonl")).read() == lines     # nothing was trained again


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
