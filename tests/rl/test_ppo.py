"""PPO as a Task: learns CartPole through the shared loop, honours a trainable mask, logs aux-loss terms."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax import train
from vidrl_jax.envs.gymnax_env import make_gymnax
from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.actor_critic import make_actor_critic
from vidrl_jax.rl import ppo
from vidrl_jax.rl.evaluate import discrete_act, evaluate_policy
from vidrl_jax.train.optim import trainable_mask


def _cartpole_agent(num_envs: int):
  env = make_gymnax("CartPole-v1", num_envs)
  apply_fn, init_fn = make_actor_critic(env.num_actions, "mlp", hidden=(64, 64), activation=nn.tanh)
  params = init_fn(jax.random.PRNGKey(0), jnp.zeros((1,) + env.obs_shape, env.obs_dtype))
  return env, apply_fn, params


def _small_config(**overrides):
  return ppo.ppo_config(**{**dict(num_envs=4, num_steps=16, total_env_steps=640, update_epochs=2,
                                  num_minibatches=2, lr=1e-2), **overrides})


def _one_update(task, seed=0):
  state = jax.jit(task.init)(jax.random.PRNGKey(seed))
  new_state, metrics = jax.jit(task.step)(state, None, jax.random.PRNGKey(seed + 1))
  return state, new_state, jax.device_get(metrics)


def test_ppo_learns_cartpole(tmp_path):
  env, apply_fn, params = _cartpole_agent(8)
  config = ppo.ppo_config(num_envs=8, num_steps=256, total_env_steps=102_400, update_epochs=4, num_minibatches=8,
                          lr=2.5e-3, gamma=0.99, eval_episodes=32)
  task = ppo.make_ppo_task(env, apply_fn, params, config, eval_env=make_gymnax("CartPole-v1", 32))
  assert task.num_steps == 50
  writer = train.MetricWriter(str(tmp_path))
  loop = train.loop_config(checkpoint_every=0, progress=False)
  state, eval_metrics = train.run(task, loop, str(tmp_path), writer, seed=0)

  rng = jax.random.PRNGKey(1)
  uniform = lambda p, obs: (jnp.zeros(obs.shape[:1] + (env.num_actions,)), jnp.zeros(obs.shape[:1]))
  random_return = evaluate_policy(env, discrete_act(uniform), None, rng, 32)["mean_return"]
  trained = evaluate_policy(make_gymnax("CartPole-v1", 32), discrete_act(apply_fn), state.train_state.params, rng,
                            32)
  assert 10 < random_return < 40
  assert trained["num_episodes"] == 32
  assert trained["mean_return"] > 80, (trained, random_return)  # 4x random; 130-350 over seeds 0-3
  assert eval_metrics["eval/mean_return"] > 80
  rows = writer.rows("ppo")
  logged = [r for r in rows if "episode_return" in r]
  assert logged[-1]["episode_return"] > logged[0]["episode_return"]
  assert len(logged) == 50 and logged[-1]["step"] == 50  # the task logs every update
  assert logged[-1]["env_steps"] == 102_400
  for key in ("loss/pg", "loss/value", "loss/entropy", "loss/total", "approx_kl", "clip_frac"):
    assert np.isfinite(logged[-1][key]), key


def test_trainable_mask_freezes_torso():
  env, apply_fn, params = _cartpole_agent(4)
  trainable = trainable_mask(params, lambda path: "torso" not in path)
  assert not trainable["params"]["torso"]["dense0"]["kernel"] and trainable["params"]["policy"]["kernel"]
  task = ppo.make_ppo_task(env, apply_fn, params, _small_config(), trainable=trainable)
  before, after, _ = _one_update(task)
  old, new = before.train_state.params["params"], after.train_state.params["params"]
  for a, b in zip(jax.tree.leaves(old["torso"]), jax.tree.leaves(new["torso"])):
    np.testing.assert_array_equal(a, b)
  assert not np.allclose(old["policy"]["kernel"], new["policy"]["kernel"])
  assert not np.allclose(old["value"]["kernel"], new["value"]["kernel"])


def test_aux_loss_terms_are_logged():
  env, apply_fn, params = _cartpole_agent(4)
  seen = {}

  def aux_prepare(p, traj, rng):  # once per update, e.g. labels from a frozen model
    return {"target": jnp.ones(traj["action"].shape)}

  def aux_loss(p, traj, rng):
    seen.update({k: v.shape for k, v in traj.items()})
    _, value = apply_fn(p, traj["obs"])
    return {"probe": jnp.mean(jnp.square(value - traj.get("target", 0.0)))}   # a scalar: not the minibatch

  with pytest.raises(VidrlError, match="loss weights"):  # the aux term needs its weight in the config
    _one_update(ppo.make_ppo_task(env, apply_fn, params, _small_config(), aux_loss=aux_loss))
  config = _small_config(loss_weights=dict(probe=0.1))
  _, _, metrics = _one_update(ppo.make_ppo_task(env, apply_fn, params, config, aux_loss=aux_loss,
                                                aux_prepare=aux_prepare))
  assert seen["obs"] == (16, 4, 4) and seen["next_obs"] == (4, 4) and seen["action"] == (16, 4)
  assert seen["target"] == (16, 4)
  assert np.isfinite(metrics["loss/probe"]) and metrics["loss/probe"] > 0
  assert {"loss/pg", "loss/value", "loss/entropy", "loss/total", "approx_kl", "clip_frac", "episode_return",
          "env_steps"} <= set(metrics)


def test_episode_return_is_carried_when_no_episode_ends():
  env, apply_fn, params = _cartpole_agent(4)
  task = ppo.make_ppo_task(env, apply_fn, params, _small_config(num_steps=4, num_minibatches=1))
  _, state, metrics = _one_update(task)  # CartPole episodes last more than 4 steps
  assert metrics["episodes_completed"] == 0 and metrics["episode_return"] == 0.0
  assert metrics["env_steps"] == 16


def test_reward_norm_scales_by_return_std():
  rs = np.random.RandomState(0)
  rewards = rs.randn(32, 3).astype(np.float32) + 1.0
  dones = rs.rand(32, 3) < 0.1
  norm, scaled = ppo.RewardNorm.create(3).normalise(jnp.asarray(rewards), jnp.asarray(dones), 0.9)
  rets, ret = [], np.zeros(3)
  for r, d in zip(rewards, dones):  # ppo2 VecNormalize: ret = gamma ret + r, reset after an episode end
    ret = 0.9 * ret + r
    rets.append(ret.copy())
    ret = np.where(d, 0.0, ret)
  np.testing.assert_allclose(norm.var, np.var(rets), rtol=1e-3)
  np.testing.assert_allclose(norm.ret, ret, rtol=1e-5, atol=1e-5)   # float32 running sums against float64
  np.testing.assert_allclose(scaled, np.clip(rewards / np.sqrt(np.var(rets) + 1e-8), -10, 10), rtol=1e-3,
                             atol=1e-6)


def test_minatar_image_networks():
  env = make_gymnax("Breakout-MinAtar", 2)
  _, obs = env.reset(jax.random.PRNGKey(0))
  for encoder, kwargs in (("minatar", {}), ("mlp", {}), ("impala", dict(channels=(4, 4), num_blocks=1, features=8))):
    apply_fn, init_fn = make_actor_critic(env.num_actions, encoder, **kwargs)
    logits, value = apply_fn(init_fn(jax.random.PRNGKey(0), obs), obs)
    assert logits.shape == (2, env.num_actions) and value.shape == (2,), encoder


def test_cpu_step_runs_impala_convolutions_as_gemms():
  """Inside PPO's step (loop bodies) "auto" convolutions are GEMMs on the CPU: no convolution op is compiled."""
  env = make_gymnax("Breakout-MinAtar", 2)
  apply_fn, init_fn = make_actor_critic(env.num_actions, "impala", channels=(4,), num_blocks=1, features=8)
  _, obs = env.reset(jax.random.PRNGKey(0))
  config = _small_config(num_envs=2, num_steps=4, num_minibatches=2)
  task = ppo.make_ppo_task(env, apply_fn, init_fn(jax.random.PRNGKey(0), obs), config)
  state = task.init(jax.random.PRNGKey(1))
  hlo = jax.jit(task.step).lower(state, None, jax.random.PRNGKey(2)).as_text()
  assert jax.default_backend() != "cpu" or "convolution" not in hlo
  assert "convolution" in jax.jit(apply_fn).lower(state.train_state.params, obs).as_text()   # outside: XLA's
