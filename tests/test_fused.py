"""The fused on-device SAC (rl/fused.py) and its device replay ring (data/replay.py): ring writes and draws, a run's
numbers independent of the runs sharing its program, each run drawing from its own (padded) pool, exact resume,
and SAC learning inside it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.data import replay
from vidrl_jax.envs import env_config, make_env
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.rlv import data as rlv_data
from vidrl_jax.rl import fused, sac
from vidrl_jax.train import MetricWriter, loop_config, run

TINY = dict(actor_hidden=(16,), critic_hidden=(16,), batch_size=8, random_steps=20, train_every=1,
            num_episodes=4, eval_every_episodes=2, checkpoint_every_episodes=2)


def test_ring_writes_in_place_and_draws_only_stored_rows():
  ring = replay.ring_init({"x": ((2,), np.float32), "r": ((), np.float32)}, 6)
  ring = replay.ring_add(ring, {"x": jnp.ones((3, 2)), "r": jnp.arange(3.0)}, 0)
  ring = replay.ring_add(ring, {"x": 2 * jnp.ones((3, 2)), "r": jnp.arange(3.0, 6.0)}, 3)
  np.testing.assert_array_equal(ring["r"], np.arange(6.0))
  ring = replay.ring_add(ring, {"x": 3 * jnp.ones((3, 2)), "r": -jnp.ones(3)}, 0)   # the oldest rows go first
  np.testing.assert_array_equal(ring["r"], [-1, -1, -1, 3, 4, 5])
  drawn = replay.ring_sample(ring, jax.random.PRNGKey(0), 3, (4, 50))
  assert drawn["x"].shape == (4, 50, 2) and np.all(np.asarray(drawn["r"]) == -1)
  with pytest.raises(VidrlError, match="divides"):
    replay.ring_add(ring, {"x": jnp.ones((4, 2)), "r": jnp.ones(4)}, 0)


def _train(tmp_path, runs, name="sac", stop_after=None, **kw):
  env = rlv_data.acrobot(1, episode_steps=10)
  task = fused.fused_sac_task(name, env, sac.sac_config(**TINY), runs, eval_env=rlv_data.acrobot(2, 10), **kw)
  state, metrics = run(task, loop_config(progress=False), str(tmp_path), MetricWriter(str(tmp_path)), 0,
                       stop_after=stop_after)
  return state, metrics


def test_a_run_does_not_depend_on_the_runs_beside_it(tmp_path):
  alone, m1 = _train(tmp_path / "a", [fused.Run("seed3", 3)])
  shared, m2 = _train(tmp_path / "b", [fused.Run("seed7", 7), fused.Run("seed3", 3)])
  assert int(alone.t) == 40 and int(fused.run_state(alone, 0).step) == 21   # 40 env steps, updates from step 20
  a, b = jax.tree.leaves(fused.run_state(alone, 0)), jax.tree.leaves(fused.run_state(shared, 1))
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
  assert m1["eval/return/seed3"] == pytest.approx(m2["eval/return/seed3"])
  other = jax.tree.leaves(fused.run_state(shared, 0))
  assert any(not np.allclose(x, y) for x, y in zip(a, other))   # another seed is another run


def test_resume_equals_an_uninterrupted_run(tmp_path):
  runs = [fused.Run("seed0", 0), fused.Run("seed1", 1)]
  whole, _ = _train(tmp_path / "whole", runs)
  _train(tmp_path / "cut", runs, stop_after=1)
  resumed, _ = _train(tmp_path / "cut", runs)
  for x, y in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(x, y)


def _probe_aux() -> sac.Aux:
  """An aux that trains nothing of note and reports the mean observation its pool draws carried."""
  def loss(params, encode, batch, rng):
    return {"probe": jnp.sum(params["w"] ** 2)}, {"pool_obs": jnp.mean(batch["observation"]["obs"])}
  import optax
  return sac.Aux(init=lambda rng, feat, a: {"w": jnp.zeros(1)}, loss=loss, weights={"probe": 1.0},
                 optimizer=optax.sgd(0.0))


class _Pool:
  def __init__(self, value, n):
    self.value, self.n = value, n

  def population(self):
    return self.n

  def gather(self, ids):
    m = len(ids)
    return {"obs": {"state": np.full((m, 6), self.value, np.float32)},
            "next_obs": {"state": np.full((m, 6), self.value, np.float32)},
            "discount": np.ones(m, np.float32), "is_last": np.zeros(m, bool)}


def test_each_run_draws_from_its_own_pool_and_never_the_padding(tmp_path):
  pools = fused.stack_pools([_Pool(1.0, 7), _Pool(2.0, 3)], ("obs", "next_obs", "discount", "is_last"))
  assert pools["obs"].shape == (2, 7, 6) and pools["size"].tolist() == [7, 3]
  assert np.all(pools["obs"][1, 3:] == 0)   # padding
  for pool, value in ((0, 1.0), (1, 2.0)):
    _, _ = _train(tmp_path / str(pool), [fused.Run("seed0", 0, pool)], aux=_probe_aux(),
                  extra_pools={"observation": pools}, pool_batch=16)
    rows = [r for r in MetricWriter(str(tmp_path / str(pool))).rows("sac") if "aux/pool_obs" in r]
    assert rows and all(r["aux/pool_obs"] == pytest.approx(value) for r in rows)


def test_fused_sac_learns_pendulum():
  """SAC inside the fused program learns: gymnax Pendulum, 2x64 networks, 25 episodes of 200 steps -> the greedy
  return of both seeds well above the untrained policy's."""
  env = make_env(env_config("gymnax", "Pendulum-v1", 1))
  config = sac.sac_config(actor_hidden=(64, 64), critic_hidden=(64, 64), train_every=1, num_episodes=25,
                          eval_every_episodes=25, checkpoint_every_episodes=0, random_steps=1000)
  task = fused.fused_sac_task("sac", env, config, [fused.Run("seed0", 0), fused.Run("seed1", 1)],
                              eval_env=make_env(env_config("gymnax", "Pendulum-v1", 4)))
  state = jax.jit(task.init)(jax.random.PRNGKey(0))
  before = task.evaluate(state, 0)
  step = jax.jit(task.step)
  for _ in range(task.num_steps):
    state, metrics = step(state, None, jax.random.PRNGKey(0))
  after = task.evaluate(state, task.num_steps)
  gain = [after[f"return/seed{s}"] - before[f"return/seed{s}"] for s in (0, 1)]
  assert min(gain) > 300 and after["mean_return"] > -800, (before, after)   # measured: -1,558 / -1,219 -> -810 / -503


def test_bad_runs_and_pools_are_refused():
  env = rlv_data.acrobot(1, episode_steps=10)
  config = sac.sac_config(**TINY)
  with pytest.raises(VidrlError, match="distinct labels"):
    fused.fused_sac_task("x", env, config, [fused.Run("a", 0), fused.Run("a", 1)])
  pools = fused.stack_pools([_Pool(1.0, 3)], ("obs", "next_obs", "discount", "is_last"))
  with pytest.raises(VidrlError, match="index past"):
    fused.fused_sac_task("x", env, config, [fused.Run("a", 0, 1)], extra_pools={"o": pools}, pool_batch=4)
  with pytest.raises(VidrlError, match="pool_batch"):
    fused.fused_sac_task("x", env, config, [fused.Run("a", 0)], extra_pools={"o": pools})
