"""RLV's BCO(0) baseline on Acrobot (methods/rlv/baselines.py, on the shared rl/bco.py): the random interaction
data's actions line up with their transitions, the IDM labels an unseen random pool's torques, and the baseline
runs end to end on a pool written as the pipeline writes them, resuming to the same result."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.data import formats
from vidrl_jax.envs.discretise import discrete_action
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.rlv import baselines
from vidrl_jax.methods.rlv import data as rlv_data
from vidrl_jax.rl import bco
from vidrl_jax.train import MetricWriter, loop_config, run

KEYS = ("state",)


def _loop():
  return loop_config(log_every=2, checkpoint_every=0, progress=False)


def test_rollout_actions_line_up_with_transitions():
  """action[t + 1] is the action taken in state[t] (a policy of the state makes that checkable)."""
  policy = lambda params, obs, rng: jnp.where(obs[:, 4:5] > 0, 0.9, -0.9) * params
  eps = rlv_data.rollout_episodes(rlv_data.acrobot(3, 20), policy, 1.0, jax.random.PRNGKey(0), actions=True)
  for e in eps:
    assert e["action"].shape == (len(e["state"]), 1) and np.all(e["action"][0] == 0)
    expected = np.where(e["state"][:-1, 4] > 0, 0.9, -0.9).astype(np.float32)
    np.testing.assert_array_equal(e["action"][1:, 0], expected)
  assert "action" not in rlv_data.rollout_episodes(rlv_data.acrobot(1, 5), policy, 1.0, jax.random.PRNGKey(0))[0]
  frames = bco.stacked_frames(formats.from_episodes(eps, KEYS), 1)
  np.testing.assert_array_equal(bco.true_actions(frames)[:, 0], np.concatenate([e["action"][1:, 0] for e in eps]))


def test_idm_labels_the_torques_of_unseen_transitions(tmp_path):
  """The IDM trained on random interaction recovers the torque bin of a held-out random pool's transitions."""
  config = baselines.bco_config(batch_size=128, idm_steps=400, val_every=100, val_size=256)
  train = bco.stacked_frames(formats.from_episodes(baselines.random_episodes(20, 100, jax.random.PRNGKey(0)), KEYS), 1)
  idm, _ = run(bco.make_idm_task("idm", train, KEYS, 1, config, 0), _loop(), str(tmp_path),
               MetricWriter(str(tmp_path)), 0)
  held_out = baselines.random_episodes(5, 100, jax.random.PRNGKey(1))
  pool = bco.stacked_frames(formats.from_episodes([{k: e[k] for k in ("state", "is_first", "is_last")}
                                                   for e in held_out], KEYS), 1, actions=False)
  labels = bco.label_demos(idm["best_params"], pool, KEYS, 1, config)
  truth = np.concatenate([e["action"][1:] for e in held_out])
  agree = np.mean(discrete_action(labels, (-0.5, 0.5)) == discrete_action(truth, (-0.5, 0.5)))
  assert agree > 0.9, agree     # chance: about 1/3; measured 0.988


def test_bco_baseline_end_to_end_and_resume(tmp_path):
  zero = lambda params, obs, rng: jnp.zeros((obs.shape[0], 1))
  pool_dir = str(tmp_path / "pool")
  rlv_data.write_pool(pool_dir, rlv_data.rollout_episodes(rlv_data.acrobot(3, 10), zero, None, jax.random.PRNGKey(0)),
                      dict(quality="low"))
  config = baselines.bco_config(hidden=(16,), idm_steps=4, bc_steps=4, batch_size=8, val_every=2, val_size=16,
                                val_fraction=0.5, interaction_episodes=4, eval_envs=2)
  work = str(tmp_path / "work")
  writer = MetricWriter(work)
  out = baselines.bco_baseline("bco/low/seed0", pool_dir, config, 0, work, writer, _loop(), episode_steps=10)
  assert out["env_steps"] == 40 and out["pool_transitions"] == 30 and len(out["returns"]) == 2
  assert -10 <= out["mean_return"] <= 0 and np.isfinite(out["idm_val_nll"]) and np.isfinite(out["bc_val_nll"])
  rows = [r for r in writer.rows("bco/low/seed0/bc") if "eval/mean_return" in r]
  assert rows[-1]["eval/mean_return"] == out["mean_return"] and rows[-1]["step"] == 4
  again = baselines.bco_baseline("bco/low/seed0", pool_dir, config, 0, work, MetricWriter(work), _loop(),
                                 episode_steps=10)
  assert again == out
  with pytest.raises(VidrlError, match="stack=1"):
    baselines.bco_baseline("x", pool_dir, baselines.bco_config(stack=2), 0, work, writer, _loop(), 10)
