"""RLV's Acrobot, its observation pools and the pipeline: the +-0.5 thresholding into three torques, 100-step
episodes, observation-only pools (no action or reward, is_last on each trajectory's last step) read back as
transitions, the pools' snapshots (at target returns: the decision, and a resumed expert making the same pools), and
the launcher's refusals (every Acrobot group end to end, then the launcher resuming the main group
on that workdir: tests/test_notebooks.py, notebooks/rlv.ipynb)."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.envs import env_config, make_env
from vidrl_jax.envs.discretise import discrete_action, thresholded
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.rlv import data as rlv_data
from vidrl_jax.methods.rlv import report
from vidrl_jax.rl import offpolicy, sac
from vidrl_jax.train import MetricWriter, loop_config, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_thresholds_map_to_the_three_torques():
  a = jnp.array([[-1.0], [-0.51], [-0.5], [0.0], [0.5], [0.51], [1.0], [3.0]])
  np.testing.assert_array_equal(discrete_action(a, (-0.5, 0.5)), [0, 0, 0, 1, 1, 2, 2, 2])   # a tie goes down


def test_thresholded_acrobot_steps_as_the_discrete_env():
  """The same rng and the thresholded action give the discrete env's transition exactly."""
  discrete = make_env(env_config("gymnax", "Acrobot-v1", 3, params=dict(max_steps_in_episode=100)))
  env = rlv_data.acrobot(3)
  assert env.action_shape == (1,) and env.num_actions is None and env.max_episode_steps == 100
  assert (env.action_low, env.action_high) == ((-1.0,), (1.0,))
  state, obs = env.reset(jax.random.PRNGKey(0))
  d_state, d_obs = discrete.reset(jax.random.PRNGKey(0))
  np.testing.assert_array_equal(obs, d_obs)
  rng = jax.random.PRNGKey(1)
  for t in range(5):
    action = jnp.array([[-0.9], [0.2], [0.7]]) * (1 if t % 2 else -1)
    state, obs, reward, _, _ = env.step(state, action, rng)
    d_state, d_obs, d_reward, _, _ = discrete.step(d_state, discrete_action(action, (-0.5, 0.5)), rng)
    np.testing.assert_array_equal(obs, d_obs)
    np.testing.assert_array_equal(reward, d_reward)


def test_acrobot_episodes_last_100_steps_unless_the_goal_is_reached():
  env = rlv_data.acrobot(4)
  zero = lambda params, obs, rng: jnp.zeros((obs.shape[0], 1))   # no torque: the goal is never reached
  episodes = rlv_data.rollout_episodes(env, zero, None, jax.random.PRNGKey(0))
  assert [len(e["state"]) for e in episodes] == [101] * 4
  assert all(float(e["log_return"]) == -100.0 and not e["is_terminal"].any() for e in episodes)


def test_thresholding_rejects_mismatched_envs():
  with pytest.raises(VidrlError, match="2 thresholds give 3 actions"):
    thresholded(make_env(env_config("gymnax", "CartPole-v1", 1)))
  with pytest.raises(VidrlError, match="already has continuous actions"):
    thresholded(make_env(env_config("gymnax", "Pendulum-v1", 1)))
  with pytest.raises(VidrlError, match="increase strictly"):
    thresholded(make_env(env_config("gymnax", "Acrobot-v1", 1)), (0.5, -0.5))


def test_sac_runs_on_the_thresholded_acrobot(tmp_path):
  env = rlv_data.acrobot(2, episode_steps=10)
  config = sac.sac_config(actor_hidden=(8,), critic_hidden=(8,), batch_size=8, random_steps=10, train_every=5,
                          num_episodes=2, checkpoint_every_episodes=0)
  state, summary = run(offpolicy.sac_task("sac", env, None, config, seed=0, eval_env=env),
                       loop_config(progress=False), str(tmp_path), MetricWriter(str(tmp_path)), seed=0)
  assert summary["env_steps"] == 40 and summary["episodes"] == 4 and int(state.step) > 0
  assert -10 <= summary["eval/mean_return"] <= 0


def test_pools_are_observation_only_with_is_last(tmp_path):
  env = rlv_data.acrobot(3, episode_steps=8)
  policy = lambda params, obs, rng: jax.random.uniform(rng, (obs.shape[0], 1), minval=-1.0, maxval=1.0)
  episodes = rlv_data.rollout_episodes(env, policy, None, jax.random.PRNGKey(2))
  directory = str(tmp_path / "low")
  summary = rlv_data.write_pool(directory, episodes, dict(quality="low"))
  assert summary["episodes"] == 3 and summary["mean_return"] == pytest.approx(-8.0)   # no goal in 8 steps
  files = sorted(f for f in os.listdir(directory) if f.endswith(".npz"))
  for f in files:
    stored = np.load(os.path.join(directory, f))
    assert set(stored.files) == {"state", "is_first", "is_last", "is_terminal", "log_return"}   # no labels asked
    assert stored["state"].shape == (9, 6) and stored["is_last"].tolist() == [False] * 8 + [True]
  pool = rlv_data.load_pool(directory)
  assert pool.population() == 3 * 8
  batch = pool.gather(np.arange(pool.population()))
  assert "action" not in batch and "reward" not in batch
  assert batch["is_last"].sum() == 3 and batch["is_last"][7] and not batch["is_last"][:7].any()
  np.testing.assert_array_equal(batch["next_obs"]["state"][:7], batch["obs"]["state"][1:8])
  np.testing.assert_array_equal(batch["discount"], np.ones(24, np.float32))
  with pytest.raises(VidrlError, match="finished dataset"):
    rlv_data.write_pool(directory, episodes, dict(quality="low"))


def _smoke_config(**data):
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  import rlv as rlv_configs   # configs/rlv.py
  config = rlv_configs.get_config("smoke")
  config.unlock()
  for k, v in data.items():
    config.data[k] = v
  return config


@pytest.mark.parametrize("data, message", [
    (dict(snapshot_by="episodes", snapshots=dict(low=3, medium=2)), "increasing"),
    (dict(snapshot_by="episodes", snapshots=dict(med=2)), "names \\['med'\\]"),
    (dict(targets=dict(low=-50.0, medium=-60.0)), "data.targets .* increasing"),
    (dict(snapshot_by="reward"), "data.snapshot_by is 'reward'"),
    (dict(max_expert_episodes=0), "multiple of expert.eval_every_episodes")])
def test_pool_settings_are_refused_before_anything_trains(tmp_path, data, message):
  with pytest.raises(VidrlError, match=message):
    rlv_data.make_pools(_smoke_config(**data), str(tmp_path), MetricWriter(str(tmp_path)))
  assert not os.listdir(tmp_path)   # nothing trained or written


def test_snapshot_decisions_take_each_targets_first_evaluation():
  """The first evaluation whose greedy return reaches (>=) a target; several targets may share one; a target none
  reached is taken at the last evaluation once the evaluations reach the maximum, marked not reached."""
  evaluations = [(50, -100.0), (100, -99.0), (150, -85.0), (200, -70.0), (250, -78.0)]
  targets = dict(low=-99.0, medium=-79.0, high=-63.0)
  low = dict(target=-99.0, expert_episodes=100, expert_greedy_return=-99.0, target_reached=True)
  medium = dict(target=-79.0, expert_episodes=200, expert_greedy_return=-70.0, target_reached=True)
  assert rlv_data.snapshot_decisions(evaluations, targets, 300) == dict(low=low, medium=medium)   # high: not yet
  assert rlv_data.snapshot_decisions(evaluations + [(300, -66.0)], targets, 300) == dict(
      low=low, medium=medium, high=dict(target=-63.0, expert_episodes=300, expert_greedy_return=-66.0,
                                        target_reached=False))
  assert rlv_data.snapshot_decisions([], targets, 300) == {}
  jump = rlv_data.snapshot_decisions([(50, -100.0), (100, -60.0)], targets, 100)
  assert {q: (d["expert_episodes"], d["target_reached"]) for q, d in jump.items()} == {
      "low": (100, True), "medium": (100, True), "high": (100, True)}
  assert list(rlv_data.snapshot_decisions(evaluations, dict(high=-80.0), 300)) == ["high"]   # a subset of qualities
  for bad, message in ((dict(low=-79.0, medium=-99.0), "must give increasing"), (dict(low=-99.0, high=-99.0),
                       "must give increasing"), (dict(low=-99.0, best=-1.0), "names \\['best'\\]")):
    with pytest.raises(VidrlError, match=message):
      rlv_data.snapshot_decisions(evaluations, bad, 300)


class _Interrupted(Exception):
  pass


def test_return_snapshots_resume_to_the_same_pools(tmp_path, monkeypatch):
  """Interrupted after the expert's second evaluation was checkpointed but before it was recorded, a rerun resumes
  from the checkpoint and the recorded evaluations to the pools of an uninterrupted run; a pool whose snapshot the
  expert has trained past cannot be made again, in either mode."""
  config = _smoke_config()
  whole_dir, cut_dir = str(tmp_path / "whole"), str(tmp_path / "cut")
  whole = rlv_data.make_pools(config, whole_dir, MetricWriter(whole_dir))
  train = rlv_data._Expert.train

  def interrupted(self, episodes):
    out = train(self, episodes)
    if episodes == 2:
      raise _Interrupted
    return out

  monkeypatch.setattr(rlv_data._Expert, "train", interrupted)
  with pytest.raises(_Interrupted):
    rlv_data.make_pools(config, cut_dir, MetricWriter(cut_dir))
  assert sorted(os.listdir(os.path.join(cut_dir, "data"))) == ["low", "medium"]   # both at the first evaluation
  monkeypatch.undo()
  resumed = rlv_data.make_pools(config, cut_dir, MetricWriter(cut_dir))
  drop = lambda p: {k: v for k, v in p.items() if k not in ("seconds", "dir")}
  assert {q: drop(p) for q, p in resumed.items()} == {q: drop(p) for q, p in whole.items()}
  assert [(q, p["expert_episodes"], p["target_reached"]) for q, p in whole.items()] == [
      ("low", 1, True), ("medium", 1, True), ("high", 3, False)]
  for q in whole:
    for f in sorted(f for f in os.listdir(whole[q]["dir"]) if f.endswith(".npz")):
      a, b = np.load(os.path.join(whole[q]["dir"], f)), np.load(os.path.join(resumed[q]["dir"], f))
      assert all(np.array_equal(a[k], b[k]) for k in a.files), (q, f)
  record = lambda d: json.load(open(os.path.join(d, "expert", "snapshots.json")))
  assert record(cut_dir) == record(whole_dir) and [e for e, _ in record(cut_dir)["evaluations"]] == [1, 2, 3]
  shutil.rmtree(os.path.join(cut_dir, "data", "low"))
  with pytest.raises(VidrlError, match="expert has trained on to 3"):
    rlv_data.make_pools(config, cut_dir, MetricWriter(cut_dir))
  with pytest.raises(VidrlError, match="has trained past 2 episodes"):   # by episodes: low=2, the expert at 3
    rlv_data.make_pools(_smoke_config(snapshot_by="episodes"), cut_dir, MetricWriter(cut_dir))


def test_pools_keep_true_labels_only_for_the_ablations(tmp_path):
  """With actions=True the files hold the expert's actions and rewards (DreamerV2's rows: what led to row t);
  RLV's load drops them, the true-label ablations' load (labelled=True) reads them."""
  env = rlv_data.acrobot(2, episode_steps=6)
  policy = lambda params, obs, rng: jnp.full((obs.shape[0], 1), 0.7)   # torque +1 every step
  episodes = rlv_data.rollout_episodes(env, policy, None, jax.random.PRNGKey(0), actions=True)
  directory = str(tmp_path / "pool")
  rlv_data.write_pool(directory, episodes, dict(quality="medium"))
  assert "action" not in rlv_data.load_pool(directory).gather(np.arange(3))
  labelled = rlv_data.load_pool(directory, labelled=True).gather(np.arange(12))
  np.testing.assert_allclose(labelled["action"], np.full((12, 1), 0.7), rtol=1e-6)
  np.testing.assert_array_equal(labelled["reward"], np.full(12, -1.0, np.float32))
  observation_only = str(tmp_path / "unlabelled")
  rlv_data.write_pool(observation_only, rlv_data.rollout_episodes(env, policy, None, jax.random.PRNGKey(0)), {})
  with pytest.raises(VidrlError, match="holds no actions or rewards"):
    rlv_data.load_pool(observation_only, labelled=True)


class _Rows:
  def __init__(self, rows):
    self._rows = rows

  def rows(self, stage):
    return [r for r in self._rows if r["stage"] == stage]


def test_stage_curves_group_runs_by_condition_and_use_env_steps():
  """A fused stage's rows -> {condition: per-seed (env steps, return)}; a resumed step's last row wins."""
  rows = [dict(stage="rlv", step=1, env_steps=1000.0), dict(stage="rlv", step=1, **{
              "eval/return/medium/seed0": -100.0, "eval/return/medium/seed1": -90.0, "eval/return/low/seed0": -99.0}),
          dict(stage="rlv", step=2, env_steps=2000.0), dict(stage="rlv", step=2, **{
              "eval/return/medium/seed0": -50.0, "eval/return/medium/seed1": -70.0, "eval/return/low/seed0": -98.0}),
          dict(stage="rlv", step=2, **{"eval/return/medium/seed0": -60.0}),
          dict(stage="sac", step=1, env_steps=1000.0), dict(stage="sac", step=1, **{"eval/return/seed0": -100.0})]
  writer = _Rows(rows)
  curves = report.stage_curves(writer, type("T", (), {"name": "rlv"}))
  assert sorted(curves) == ["rlv/low", "rlv/medium"] and len(curves["rlv/medium"]) == 2
  x, y = curves["rlv/medium"][0]
  assert x.tolist() == [1000, 2000] and y.tolist() == [-100.0, -60.0]
  assert list(report.stage_curves(writer, type("T", (), {"name": "sac"}))) == ["sac"]
  agg = report.aggregate(curves["rlv/medium"])
  assert agg["env_steps"] == [1000, 2000] and agg["mean"] == [-95.0, -65.0] and agg["final"] == [-60.0, -70.0]
  np.testing.assert_allclose(agg["se"], [5.0, 5.0])   # std (ddof 1) / sqrt(2): |a - b| / 2
  assert report.baseline_of("shift/rlv/weak") == "shift/sac" and report.baseline_of("rlv/low") == "sac"


def _launch(workdir, *extra):
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "rlv.py"),
         f"--config={os.path.join(ROOT, 'configs', 'rlv.py')}:smoke", f"--workdir={workdir}", *extra]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT})


def _check_results(workdir, conditions):
  results = json.load(open(os.path.join(workdir, "results.json")))
  pools = results["pools"]
  assert set(pools) == {"low", "medium", "high"}
  assert all(-10 <= p["mean_return"] <= 0 and p["episodes"] == 3 for p in pools.values())
  # the smoke preset's snapshots by return: low and medium reached at the first evaluation, high never
  assert {q: (p["snapshot_by"], p["target"], p["expert_episodes"], p["target_reached"]) for q, p in pools.items()} == {
      "low": ("return", -100.0, 1, True), "medium": ("return", -50.0, 1, True), "high": ("return", 1.0, 3, False)}
  assert all(-10 <= p["expert_greedy_return"] <= 0 for p in pools.values())
  md = open(os.path.join(workdir, "results.md")).read()
  assert f"| high | 3 | {pools['high']['mean_return']:.1f} | return | 1.0 | no (taken at the maximum) | 3 |" in md
  assert set(results["curves"]) == set(conditions)
  for k, c in results["curves"].items():   # 2 seeds, evaluated every 2 episodes of 10 steps, one env copy
    assert c["env_steps"] == ([20] if k.startswith("bco/") else [20, 40]), k
    assert len(c["final"]) == 2 and all(-10 <= r <= 0 for r in c["final"])
  assert set(results["speedup"]) == set(conditions) - {"sac", "shift/sac"}
  for q in ("low", "medium", "high"):
    assert os.path.getsize(os.path.join(workdir, f"returns_{q}.png")) > 0
  assert "| medium |" in md
  return results


def test_bad_groups_and_shift_settings_are_refused(tmp_path):
  for flag, message in (("--config.groups=('main','mujoco')", "config.groups names"),
                        ("--config.shift.strengths=('huge',)", "shift.strengths"),
                        ("--config.ablation_quality=best", "ablation_quality")):
    out = _launch(tmp_path, flag)
    assert out.returncode == 1 and message in out.stderr, out.stderr[-2000:]
  assert set(os.listdir(tmp_path)) <= {"config.json"}   # nothing trained or written
