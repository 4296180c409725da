"""AIME: phase 2 trains only the policy, resumption, and the end-to-end smoke run on walker Visual (the pendulum
MDP/LPOMDP smoke run and its resume through the launcher: tests/test_notebooks.py, notebooks/aime.ipynb)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from vidrl_jax.data import formats
from vidrl_jax.envs.host import BatchEnv, random_policy, run_episodes
from vidrl_jax.methods.aime import model as model_lib
from vidrl_jax.methods.aime.envs import aime_trajectory, make_env, observation_keys
from vidrl_jax.methods.aime import phases
from vidrl_jax.train import MetricWriter, loop_config, run
from vidrl_jax.train.optim import optim_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pendulum_trajs():
  env = BatchEnv([make_env("pendulum-swingup", max_steps=24) for _ in range(2)])
  out = []
  run_episodes(env, random_policy(1, 0), 6, seed=0, on_episode=lambda i, t: out.append(aime_trajectory(t)))
  return out


def _small_model(trajs, setting="lpomdp"):
  keys = observation_keys("pendulum-swingup", setting)
  spec = {k: (trajs[0][k].shape[1:], trajs[0][k].dtype) for k in keys}
  return keys, model_lib.make_world_model(spec, keys, 1, model_lib.model_config(deter=16, stoch=4, hidden=16, idm=True))


def _phase1(trajs, workdir, steps=6, stop_after=None):
  keys, wm = _small_model(trajs)
  data = formats.from_episodes(trajs, keys).windows(8)
  cfg = dict(steps=steps, batch_size=4, window=8, optim=optim_config(lr=1e-3, clip=100.0))
  import ml_collections
  task = phases.phase1_task("p1", wm, data, ml_collections.ConfigDict(cfg), seed=0)
  loop = loop_config(log_every=2, checkpoint_every=2, progress=False)
  state, _ = run(task, loop, workdir, MetricWriter(workdir), seed=0, stop_after=stop_after)
  return wm, data, state


def test_phase2_moves_only_the_policy(pendulum_trajs, tmp_path):
  wm, data, p1 = _phase1(pendulum_trajs, str(tmp_path))
  cfg = model_lib.phase2_config(steps=3, batch_size=4, window=8, hidden=(16, 16),
                                optim=optim_config(lr=1e-2, clip=100.0))
  for use_idm in (False, True):
    cfg.use_idm = use_idm
    task = phases.phase2_task(f"p2_{use_idm}", wm, p1.params, data, cfg, seed=0)
    state = task.init(jax.random.PRNGKey(0))
    before = jax.device_get(state)
    for step in range(3):
      state, metrics = jax.jit(task.step)(state, task.batch(step), jax.random.PRNGKey(step))
    after = jax.device_get(state)
    same = jax.tree.map(lambda a, b: np.array_equal(a, b), before.world_model, after.world_model)
    assert all(jax.tree.leaves(same)), "phase 2 changed a world-model parameter"
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), before.policy.params, after.policy.params)
    assert any(jax.tree.leaves(moved)), "phase 2 did not move the policy"
    assert np.isfinite(float(metrics["loss/total"]))
    assert ("loss/action_kl" in metrics) == use_idm


def test_phase1_resume_equals_uninterrupted(pendulum_trajs, tmp_path):
  _, _, full = _phase1(pendulum_trajs, str(tmp_path / "a"))
  _phase1(pendulum_trajs, str(tmp_path / "b"), stop_after=4)
  _, _, resumed = _phase1(pendulum_trajs, str(tmp_path / "b"))
  # The loop resumes exactly: the same compiled step on the restored state, bit for bit.
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(a, b)


def test_model_policy_acts_in_range(pendulum_trajs):
  keys, wm = _small_model(pendulum_trajs)
  params = wm.init(jax.random.PRNGKey(0))
  policy = model_lib.policy_module(1, model_lib.phase2_config(hidden=(16, 16)))
  pp = policy.init(jax.random.PRNGKey(1), np.zeros((1, wm.feature_dim)))
  env = BatchEnv([make_env("pendulum-swingup", max_steps=5) for _ in range(2)])
  returns = run_episodes(env, phases.model_policy(wm, params, policy, pp), 2, seed=3)
  assert returns.shape == (2,) and np.all(np.isfinite(returns))
  np.testing.assert_array_equal(returns, run_episodes(env, phases.model_policy(wm, params, policy, pp), 2, seed=3))


def _launch(preset, workdir, *extra):
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "aime.py"),
         f"--config={os.path.join(ROOT, 'configs', 'aime.py')}:{preset}", f"--workdir={workdir}", *extra]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "egl"})


def test_smoke_visual_walker(tmp_path):
  out = _launch("smoke_visual", str(tmp_path))
  if out.returncode != 0 and "EGL" in out.stderr:
    pytest.skip("no EGL rendering on this machine")
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.load(open(tmp_path / "results.json"))
  assert np.isfinite(results["table"]["visual"]["aime"]["stand"]["stand"])


def test_unknown_config_key_and_preset_are_one_sentence(tmp_path):
  """A mistyped key or preset (or a missing config file) ends with one line on stderr and exit status 1."""
  for preset, extra, expected in [
      ("smoke", ("--config.phase1.stepz=3",), "no key 'phase1.stepz' (did you mean 'steps'?)"),
      ("cpuu", (), "unknown config preset 'cpuu'"),
  ]:
    out = _launch(preset, str(tmp_path), *extra)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stderr.strip().count("\n") == 0 and expected in out.stderr, out.stderr
  assert "configs/aime.py:cpu" in out.stderr and "lapo" not in out.stderr   # the preset error names its own file
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "aime.py"), "--config=configs/nope.py:smoke",
         f"--workdir={tmp_path}"]
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert out.returncode == 1 and out.stderr.strip() == (
      "error: cannot load the config file 'configs/nope.py'; check the path (e.g. --config configs/<method>.py:cpu)")


def test_phase2_ablation_weights_select_terms(pendulum_trajs):
  """kl-only and rec-only (paper Fig. 5) keep one side of the ELBO; the default is their sum."""
  keys, wm = _small_model(pendulum_trajs, "mdp")
  params = wm.init(jax.random.PRNGKey(0))
  data = formats.from_episodes(pendulum_trajs, keys).windows(8)
  batch = phases.batch_fn(data, 4, seed=0)(0)
  policy = model_lib.policy_module(1, model_lib.phase2_config(hidden=(16, 16)))
  pp = policy.init(jax.random.PRNGKey(1), np.zeros((1, wm.feature_dim)))
  totals = {}
  for name, rec, kl in (("both", 1.0, 1.0), ("kl_only", 0.0, 1.0), ("rec_only", 1.0, 0.0)):
    cfg = model_lib.phase2_config(hidden=(16, 16))
    cfg.loss_weights.rec, cfg.loss_weights.kl = rec, kl
    total, m = jax.jit(lambda p, b, c=cfg: model_lib.policy_loss(wm, params, policy, p, b, jax.random.PRNGKey(2), c))(pp, batch)
    totals[name] = float(total)
    rec_sum = sum(float(v) for k, v in m.items() if k.startswith("loss/rec/"))
    expect = {"both": rec_sum + float(m["loss/kl"]), "kl_only": float(m["loss/kl"]), "rec_only": rec_sum}[name]
    np.testing.assert_allclose(totals[name], expect, rtol=1e-5, atol=1e-6)   # float32 sums in other orders
  np.testing.assert_allclose(totals["both"], totals["kl_only"] + totals["rec_only"], rtol=1e-5, atol=1e-6)
