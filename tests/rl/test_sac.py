"""SAC: losses checked by hand, the tanh-Gaussian density, Polyak averaging, a bandit it must solve, and its online
stage's exact resumption on an env with terminal episodes of varying length (replay: tests/test_replay.py)."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.distributions import TanhNormal
from vidrl_jax.errors import VidrlError
from vidrl_jax.rl import offpolicy, sac
from vidrl_jax.train import MetricWriter, loop_config, run


# ---------------------------------------------------------------- fake host envs (the API of envs/host.py)

class BanditEnv:
  """One decision per episode: reward -|a - 0.5|^2, then terminal (obs and action sizes as DriftEnv's)."""
  name = "bandit"
  obs_spec = {"x": ((3,), np.float32)}
  action_dim = 2
  max_steps = 1

  def reset(self, seed):
    return {"x": np.ones((3,), np.float32)}

  def step(self, action):
    return {"x": np.ones((3,), np.float32)}, float(-np.sum((action - 0.5) ** 2)), True


class DriftEnv:
  """A point pushed by its actions, with an image; terminal when it leaves [-2, 2], else cut at 10 steps."""
  name = "drift"
  obs_spec = {"pos": ((2,), np.float32), "vel": ((1,), np.float32), "image": ((4, 4, 3), np.uint8)}
  action_dim = 2
  max_steps = 10
  push = 0.3

  def reset(self, seed):
    self.pos = np.random.default_rng(seed).uniform(-1, 1, 2).astype(np.float32)
    return self._obs()

  def step(self, action):
    self.pos = self.pos + self.push * np.asarray(action, np.float32)
    return self._obs(), float(-np.sum(self.pos ** 2)), bool(np.any(np.abs(self.pos) > 2))

  def _obs(self):
    return {"pos": self.pos.copy(), "vel": np.asarray([self.pos.sum()], np.float32),
            "image": np.full((4, 4, 3), int(abs(self.pos[0]) * 50) % 256, np.uint8)}


# ---------------------------------------------------------------- (a) losses by hand

def test_pure_losses_on_worked_numbers():
  y = sac.critic_target(jnp.array([1.0, 0.0]), jnp.array([1.0, 0.0]), jnp.array([[2.0, 3.0], [1.0, 5.0]]),
                        jnp.array([0.5, -1.0]), alpha=0.2, gamma=0.9)
  np.testing.assert_allclose(y, [1.0 + 0.9 * (1.0 - 0.2 * 0.5), 0.0], rtol=1e-6, atol=1e-6)  # min Q' = 1; s' terminal
  q = jnp.array([[1.0, 2.0], [3.0, 0.0]])
  np.testing.assert_allclose(sac.actor_loss(q, jnp.array([-1.0, 0.5]), 0.5), np.mean([-0.5 - 1, 0.25 - 0]),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(sac.critic_loss(q, jnp.array([1.0, 1.0])), np.mean([0, 1]) + np.mean([4, 1]),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(sac.alpha_loss(jnp.log(0.1), jnp.array([-1.0, 0.5]), -1.0),
                             -math.log(0.1) * np.mean([-2.0, -0.5]), rtol=1e-6, atol=1e-6)


def _tiny_config(**loop_settings):
  """One learner (and batch shape) for the loop tests, so they share their compilations."""
  return sac.sac_config(actor_hidden=(32, 32), critic_hidden=(32, 32), actor_lr=3e-3, critic_lr=3e-3,
                        alpha_lr=3e-3, batch_size=16, train_every=4, updates_per_step=2.0, **loop_settings)


def _np_mlp(p, x, i=None):
  """numpy forward of `MLP(hidden, out)` from its params (relu); `i` picks one critic of the twin axis."""
  get = (lambda a: np.asarray(a, np.float64)) if i is None else (lambda a: np.asarray(a, np.float64)[i])
  n = len(p) - 1
  for j in range(n):
    x = np.maximum(x @ get(p[f"dense{j}"]["kernel"]) + get(p[f"dense{j}"]["bias"]), 0.0)
  return x @ get(p["out"]["kernel"]) + get(p["out"]["bias"])


def _np_log_prob(u, mean, log_std):
  std = np.exp(log_std)
  gauss = -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
  return np.sum(gauss - np.log(1.0 - np.tanh(u) ** 2), axis=-1)


def test_update_matches_numpy_by_hand():
  config = _tiny_config()
  D, A, Bn = 3, 2, 6
  state = sac.init(jax.random.PRNGKey(0), D, A, config)
  # A target critic that differs from the online one, so the test can tell them apart.
  state = state.replace(target_params=jax.tree.map(lambda x: x * 0.7 + 0.01, state.critic_params))
  r = np.random.default_rng(0)
  batch = dict(obs=r.normal(size=(Bn, D)), action=r.uniform(-1, 1, (Bn, A)), reward=r.normal(size=Bn),
               next_obs=r.normal(size=(Bn, D)), discount=np.array([1, 1, 0, 1, 1, 0.0]))
  batch = {k: jnp.asarray(v, jnp.float32) for k, v in batch.items()}
  rng = jax.random.PRNGKey(42)
  new, metrics = jax.jit(lambda s, b, k: sac.update(s, b, k, config))(state, batch, rng)
  nb = {k: np.asarray(v, np.float64) for k, v in batch.items()}

  def policy(obs):
    out = _np_mlp(state.actor_params["params"]["torso"], obs)
    mean, raw = out[:, :A], out[:, A:]
    return mean, -5.0 + 0.5 * 7.0 * (np.tanh(raw) + 1.0)

  def twin_q(params, obs, action):
    x = np.concatenate([obs, action], -1)
    return np.stack([_np_mlp(params["params"]["q"], x, i)[:, 0] for i in range(2)])

  rng_next, rng_pi = jax.random.split(rng)  # update()'s documented use of its rng
  alpha, gamma, tau, lr = 0.1, 0.99, 0.005, 3e-3
  mean, log_std = policy(nb["next_obs"])
  u = mean + np.exp(log_std) * np.asarray(jax.random.normal(rng_next, (Bn, A)), np.float64)
  next_q = twin_q(state.target_params, nb["next_obs"], np.tanh(u))
  y = nb["reward"] + gamma * nb["discount"] * (next_q.min(0) - alpha * _np_log_prob(u, mean, log_std))
  q = twin_q(state.critic_params, nb["obs"], nb["action"])
  critic = ((q - y) ** 2).mean(1).sum()
  mean, log_std = policy(nb["obs"])
  u = mean + np.exp(log_std) * np.asarray(jax.random.normal(rng_pi, (Bn, A)), np.float64)
  logp = _np_log_prob(u, mean, log_std)
  actor = np.mean(alpha * logp - twin_q(state.critic_params, nb["obs"], np.tanh(u)).min(0))
  temp = -np.mean(np.log(alpha) * (logp - A))  # target entropy -A

  np.testing.assert_allclose(metrics["critic_loss"], critic, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["actor_loss"], actor, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["alpha_loss"], temp, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["entropy"], -logp.mean(), rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["q_mean"], q.mean(), rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["alpha"], alpha, rtol=1e-6)
  # Adam's first step moves each parameter by lr * sign(gradient): dJ/dlog_alpha = -mean(logp - A) and
  # dJ_Q/d(output bias of critic i) = 2 mean(Q_i - y). Exactly: lr * g / (|g| + eps), off by lr * eps / |g|
  # (2e-8 of the 3e-3 bias step seen), hence atol 3e-7.
  np.testing.assert_allclose(new.log_alpha, np.log(alpha) + lr * np.sign(np.mean(logp - A)), rtol=1e-5)
  old_bias = np.asarray(state.critic_params["params"]["q"]["out"]["bias"])[:, 0]
  np.testing.assert_allclose(new.critic_params["params"]["q"]["out"]["bias"][:, 0],
                             old_bias - lr * np.sign((q - y).mean(1)), rtol=1e-5, atol=3e-7)
  for t_old, c_new, t_new in zip(jax.tree.leaves(state.target_params), jax.tree.leaves(new.critic_params),
                                 jax.tree.leaves(new.target_params)):  # Polyak
    np.testing.assert_allclose(t_new, tau * c_new + (1 - tau) * t_old, rtol=1e-6, atol=1e-7)
  assert int(new.step) == 1


# ---------------------------------------------------------------- (b) tanh-Gaussian density

def test_tanh_gaussian_log_prob_is_change_of_variables():
  """The project's one sampler (`distributions.TanhNormal`), as SAC's actor parametrises it (std = exp(log_std))."""
  r = np.random.default_rng(1)
  u, mean, log_std = r.normal(size=(50, 3)) * 2, r.normal(size=(50, 3)), r.uniform(-2, 1, (50, 3))
  log_prob = jax.jit(lambda u, m, s: TanhNormal(m, jnp.exp(s)).log_prob_pre_tanh(u))
  got = log_prob(jnp.asarray(u), jnp.asarray(mean), jnp.asarray(log_std))
  np.testing.assert_allclose(got, _np_log_prob(u, mean, log_std), rtol=1e-5, atol=1e-4)
  # ... and is a density over actions in (-1, 1): it integrates to 1 (1-d, numerically in a-space).
  a = np.linspace(-1, 1, 400_001)[1:-1]
  p = np.exp(np.asarray(log_prob(jnp.asarray(np.arctanh(a))[:, None], jnp.asarray([[0.3]]),
                                jnp.asarray([[-0.5]])), np.float64))
  assert abs(np.trapezoid(p, a) - 1.0) < 1e-3
  # Sampled actions come with their own log-probabilities.
  action, logp = jax.jit(lambda k: TanhNormal(jnp.zeros((4, 2)), jnp.ones((4, 2))).sample_and_log_prob(k))(
      jax.random.PRNGKey(0))
  u = np.arctanh(np.asarray(action, np.float64))
  np.testing.assert_allclose(logp, _np_log_prob(u, 0.0, 0.0), rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- (c) Polyak

def test_polyak_update_is_exact():
  target = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(4.0)}}
  online = {"a": jnp.array([3.0, -2.0]), "b": {"c": jnp.array(0.0)}}
  out = sac.polyak(target, online, 0.25)
  np.testing.assert_array_equal(out["a"], [1.5, 1.0])
  np.testing.assert_array_equal(out["b"]["c"], 3.0)  # 0.25 * online + 0.75 * target; the update's is checked above
  # (exact: every product and sum of these dyadic numbers is a float32, in any order)


# ---------------------------------------------------------------- (d) learning

def _loop():
  return loop_config(progress=False)


def test_sac_solves_a_one_step_bandit(tmp_path):
  config = _tiny_config(random_steps=32, num_episodes=300, checkpoint_every_episodes=0, eval_every_episodes=300,
                        eval_episodes=2)
  writer = MetricWriter(str(tmp_path))
  task = offpolicy.sac_task("sac", BanditEnv(), ["x"], config, seed=0, eval_env=BanditEnv())
  state, summary = run(task, _loop(), str(tmp_path), writer, seed=0)
  action = np.asarray(sac.act(sac.policy_params(state), jnp.ones((3,)), jax.random.PRNGKey(0), True, config, 2))
  np.testing.assert_allclose(action, [0.5, 0.5], atol=0.1)
  assert summary["episodes"] == 300 and summary["env_steps"] == 300 and int(state.step) == (300 - 32 + 4) // 4 * 8
  assert summary["last10_return"] > summary["mean_return"] and summary["eval/mean_return"] > -0.02
  rows = [r for r in writer.rows("sac") if "episode_return" in r]
  assert [r["step"] for r in rows] == list(range(1, 76))        # 4 one-step episodes per loop step
  assert np.mean([r["episode_return"] for r in rows[-10:]]) > np.mean([r["episode_return"] for r in rows[:10]])
  assert all(k in rows[-1] for k in sac.SAC_METRICS)


# ---------------------------------------------------------------- (e) exact resumption

def test_resume_equals_uninterrupted(tmp_path):
  seen_a, seen_b = {}, {}
  keys = ["pos", "vel"]
  config = _tiny_config(random_steps=12, num_episodes=4, checkpoint_every_episodes=2, replay_capacity=100)
  env = type("FastDrift", (DriftEnv,), {"push": 0.9})
  stage = lambda seen: offpolicy.sac_task("sac", env(), keys, config, seed=3,
                                          on_episode=lambda e, t: seen.__setitem__(e, t))
  wa, wb = MetricWriter(str(tmp_path / "a")), MetricWriter(str(tmp_path / "b"))
  full_task = stage(seen_a)
  full, summary_a = run(full_task, _loop(), str(tmp_path / "a"), wa, seed=3)
  b = str(tmp_path / "b")
  first, _ = run(stage(seen_b), _loop(), b, wb, seed=3, stop_after=5)
  assert 0 < int(first.step) < int(full.step)  # updates on both sides of the interruption
  wb.write("sac", 9, {"episode_return": 0.0})  # a row logged after the checkpoint by the "interrupted" run
  resumed_task = stage(seen_b)
  resumed, summary_b = run(resumed_task, _loop(), b, wb, seed=3)

  for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(x, y)
  for k, v in full_task.collector.state_dict().items():
    np.testing.assert_array_equal(v, resumed_task.collector.state_dict()[k])
  # Episodes end early when the point leaves [-2, 2]: more than 4 episodes fit into the 40 env steps.
  assert summary_a == summary_b and summary_a["episodes"] > 4 and summary_a["env_steps"] == 40
  assert sorted(seen_a) == sorted(seen_b)
  for e in seen_a:
    assert set(seen_a[e]["obs"]) == set(seen_b[e]["obs"]) >= {"pos", "vel", "image"}
    for x, y in zip(jax.tree.leaves(seen_a[e]), jax.tree.leaves(seen_b[e])):
      np.testing.assert_array_equal(x, y)
  rows_a, rows_b = wa.rows("sac"), wb.rows("sac")
  assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
  assert [r.get("episode_return") for r in rows_a] == [r.get("episode_return") for r in rows_b]
  assert sorted(os.listdir(os.path.join(b, "sac", "collector"))) == ["collector_10.npz", "collector_5.npz"]
  # Rerunning a finished stage restores it and trains no further.
  again, summary_c = run(stage({}), _loop(), b, wb, seed=3)
  assert summary_c == summary_a and int(again.step) == int(full.step)


def test_obs_vector_and_bad_obs_keys(tmp_path):
  obs = DriftEnv().reset(0)
  vec = offpolicy.obs_vector(obs, ["vel", "pos"])
  np.testing.assert_array_equal(vec, np.concatenate([obs["vel"], obs["pos"]]))
  batched = {k: np.stack([v, v]) for k, v in obs.items()}
  np.testing.assert_array_equal(offpolicy.obs_vector(batched, ["vel", "pos"]), np.stack([vec, vec]))
  assert offpolicy.obs_spec(DriftEnv(), ["vel", "pos"], "image") == {"state": ((3,), np.float32)}
  stored = offpolicy.stored_obs(obs, ["vel", "pos"], "image")   # vector keys only: SAC sees the vector itself
  assert set(stored) == {"state"} and offpolicy.agent_obs(stored, "image") is stored["state"]
  stored = offpolicy.stored_obs(batched, ["vel", "image", "pos"], "image")   # with the image: the dict
  np.testing.assert_array_equal(stored["state"], np.stack([vec, vec]))
  assert stored["image"].dtype == np.uint8 and offpolicy.agent_obs(stored, "image") is stored
  for keys, match in ((["speed"], "obs_keys"), ([], "obs_keys"), (["pos", "image"], "image_key 'pixels'")):
    with pytest.raises(VidrlError, match=match):
      offpolicy.sac_task("sac", DriftEnv(), keys, _tiny_config(num_episodes=1, image_key="pixels"), seed=0)
