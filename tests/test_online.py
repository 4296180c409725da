"""Online stages of the shared loop: a run killed anywhere (mid-episode, or between the collector file and the
orbax step) and rerun in its workdir ends as an uninterrupted run does, agent and replay buffer bit for bit."""

import os
import shutil

import jax
import numpy as np
import pytest

from vidrl_jax.envs.gymnax_host import GymnaxHostEnv
from vidrl_jax.errors import VidrlError
from vidrl_jax.rl import offpolicy, sac
from vidrl_jax.train import MetricWriter, loop_config, run

KEYS = ("position", "velocity")


def _pendulum(max_steps):
  return GymnaxHostEnv("Pendulum-v1", max_steps=max_steps, obs_keys={"position": (0, 2), "velocity": (2, 3)})


def _config(**kw):
  c = dict(actor_hidden=(8, 8), critic_hidden=(8, 8), batch_size=8, random_steps=12, train_every=4,
           updates_per_step=0.5, num_episodes=3, checkpoint_every_episodes=1, replay_capacity=30)
  c.update(kw)
  return sac.sac_config(**c)


def _stage(config, seen, env=None):
  env = env or _pendulum(10)   # 10 decisions: episodes end mid-iteration
  return offpolicy.sac_task("sac", env, KEYS, config, seed=4, on_episode=lambda e, t: seen.__setitem__(e, t))


def _loop():
  return loop_config(log_every=2, progress=False)   # the task checkpoints every ceil(10 / 4) = 3 steps


def test_host_env_resume_equals_uninterrupted(tmp_path):
  config = _config()   # 8 loop steps = 32 env steps = 36 rows (3 episodes and 2 steps): the ring of 30 wraps
  seen_a, seen_b = {}, {}
  wa, wb = MetricWriter(str(tmp_path / "a")), MetricWriter(str(tmp_path / "b"))
  full_task = _stage(config, seen_a)
  full, summary_a = run(full_task, _loop(), str(tmp_path / "a"), wa, seed=4)
  assert full_task.num_steps == 8 and int(full.step) > 0 and len(seen_a) == 3

  b = str(tmp_path / "b")
  first, _ = run(_stage(config, seen_b), _loop(), b, wb, seed=4, stop_after=6)   # killed at env step 24,
  assert 0 < int(first.step) < int(full.step) and sorted(seen_b) == [0, 1]       # mid episode 2
  # A kill between writing the collector file of step 6 and its orbax checkpoint: resume from step 3.
  shutil.rmtree(os.path.join(b, "sac", "checkpoints", "6"))
  assert sorted(os.listdir(os.path.join(b, "sac", "collector"))) == ["collector_3.npz", "collector_6.npz"]
  wb.write("sac", 7, {"episode_return": 0.0})   # a row the killed run logged after its checkpoint
  resumed_task = _stage(config, seen_b)
  resumed, summary_b = run(resumed_task, _loop(), b, wb, seed=4)

  for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(x, y)
  replay_a, replay_b = full_task.collector.state_dict(), resumed_task.collector.state_dict()
  assert set(replay_a) == set(replay_b) and list(replay_a["replay/size"]) == [30]
  for k in replay_a:
    np.testing.assert_array_equal(replay_a[k], replay_b[k])
  assert summary_a == summary_b and summary_a["episodes"] == 3 and summary_a["env_steps"] == 32
  for e in range(3):                              # episode 2 was replayed from its seed: same trajectory
    for x, y in zip(jax.tree.leaves(seen_a[e]), jax.tree.leaves(seen_b[e])):
      np.testing.assert_array_equal(x, y)
  rows_a, rows_b = wa.rows("sac"), wb.rows("sac")
  assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == [3, 6, 8]   # about once an episode
  assert [r.get("episode_return") for r in rows_a] == [r.get("episode_return") for r in rows_b]
  assert rows_a[-1]["env_steps"] == 32 and all(k in rows_a[-1] for k in sac.SAC_METRICS)
  assert sorted(os.listdir(os.path.join(b, "sac", "collector"))) == ["collector_6.npz", "collector_8.npz"]
  again, summary_c = run(_stage(config, {}), _loop(), b, wb, seed=4)   # finished: restored, no more training
  assert int(again.step) == int(full.step) and summary_c == summary_a


class _Flaky:
  """A host env whose reset ignores its seed: replaying an episode does not reproduce it."""
  name, obs_spec, action_dim, max_steps = "flaky", {"x": ((1,), np.float32)}, 1, 10
  _draws = iter(range(10_000))

  def reset(self, seed):
    self.x = np.asarray([next(self._draws)], np.float32)
    return {"x": self.x}

  def step(self, action):
    self.x = self.x + action
    return {"x": self.x}, 0.0, False


def test_mid_episode_resume_of_a_nondeterministic_env_is_one_sentence(tmp_path):
  config = _config(num_episodes=1, random_steps=100)
  make = lambda: offpolicy.sac_task("sac", _Flaky(), ("x",), config, seed=0)
  run(make(), _loop(), str(tmp_path), MetricWriter(str(tmp_path)), seed=0, stop_after=1)
  with pytest.raises(VidrlError, match="not deterministic"):
    run(make(), _loop(), str(tmp_path), MetricWriter(str(tmp_path)), seed=0)


def test_gymnax_resume_equals_uninterrupted(tmp_path):
  """Three gymnax Pendulum copies stepped inside jit, one replay stream each; the env state is checkpointed."""
  from vidrl_jax.envs import env_config, make_env
  env = make_env(env_config("gymnax", "Pendulum-v1", 3, params=dict(max_steps_in_episode=10)))
  config = _config(replay_capacity=60)    # 20 rows per stream < 33 rows each: every stream's ring wraps
  stage = lambda: offpolicy.sac_task("sac", env, None, config, seed=4, eval_env=env)
  full_task = stage()
  full, summary_a = run(full_task, _loop(), str(tmp_path / "a"), MetricWriter(str(tmp_path / "a")), seed=4)
  b = str(tmp_path / "b")
  first, _ = run(stage(), _loop(), b, MetricWriter(b), seed=4, stop_after=4)   # killed at vector step 16,
  assert 0 < int(first.step) < int(full.step)
  resumed_task = stage()
  resumed, summary_b = run(resumed_task, _loop(), b, MetricWriter(b), seed=4)   # mid-episode
  for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(x, y)
  state_a, state_b = full_task.collector.state_dict(), resumed_task.collector.state_dict()
  assert set(state_a) == set(state_b) and list(state_a["replay/size"]) == [20, 20, 20]
  for k in state_a:
    np.testing.assert_array_equal(state_a[k], state_b[k])
  assert summary_a == summary_b and summary_a["episodes"] == 9 and summary_a["env_steps"] == 96
  assert summary_a["eval/num_episodes"] == 3 and -200 < summary_a["eval/mean_return"] < 0   # 10 steps, cost <= 16.3
  # Each stream holds whole episodes of its own copy: 11 rows each (a first row and 10 steps), cut by the ring.
  first_rows = state_a["replay/is_first"].reshape(20, 3)
  assert (first_rows.sum(0) == 2).all()


def test_two_pool_stage_through_the_loop(tmp_path):
  """RLV's shape with no special case: a growing interaction replay and a fixed observation-only pool, 6 + 2 per
  batch, into a task step of the shared loop; resume is exact and only the interaction replay is saved. The
  observation pool may be a replay filled from an episode or the episode read as a dataset's transitions: the
  same run either way."""
  import jax.numpy as jnp
  from vidrl_jax.data.mix import Sampler
  from vidrl_jax.data.replay import ReplayBuffer
  from vidrl_jax.train import Task
  from vidrl_jax.train.online import make_collector

  from vidrl_jax.data import formats

  def stage(pool="replay"):
    env = _pendulum(10)
    replay = ReplayBuffer(50, {"state": ((3,), np.float32)}, action_dim=1)
    t = np.arange(12, dtype=np.float32)
    frames = np.stack([np.cos(t), np.sin(t), t / 12], -1)
    if pool == "replay":
      video = ReplayBuffer(50, {"state": ((3,), np.float32)}, rewards=False)
      video.add_episode({"obs": {"state": frames}})
    else:
      video = formats.from_episodes([{"state": frames}]).transitions()
    sampler = Sampler({"interaction": (replay, 6), "observation": (video, 2)}, seed=1)
    policy = lambda s, obs, rng: jnp.tanh(obs["state"] @ s["w"] + 0.1 * jax.random.normal(rng, (1,)))
    collector = make_collector(env, replay, sampler, policy, rng=jax.random.PRNGKey(2), seed=1, train_every=5,
                               updates_per_burst=2, random_steps=5, min_transitions=6,
                               obs_fn=lambda o: {"state": offpolicy.obs_vector(o, KEYS)})

    def step(state, batch, rng):
      def one(w, b):   # regress the interaction actions, keep the video's next states' outputs small
        i, o = b["interaction"], b["observation"]
        loss_fn = lambda w: (jnp.mean((i["obs"]["state"] @ w - i["action"]) ** 2)
                             + jnp.mean((o["next_obs"]["state"] @ w) ** 2))
        loss, g = jax.value_and_grad(loss_fn)(w)
        return w - 0.1 * g, {"loss/total": loss, "n_interaction": jnp.float32(i["obs"]["state"].shape[0]),
                             "n_observation": jnp.float32(o["obs"]["state"].shape[0])}
      w, metrics = jax.lax.scan(one, state["w"], batch)
      return {"w": w}, metrics

    return Task(name="two_pools", init=lambda rng: {"w": jax.random.normal(rng, (3, 1))}, step=step, num_steps=6,
                collector=collector, checkpoint_every=2, log_every=1)

  loop = loop_config(progress=False)
  full_task = stage()
  full, _ = run(full_task, loop, str(tmp_path / "a"), MetricWriter(str(tmp_path / "a")), seed=0)
  rows = MetricWriter(str(tmp_path / "a")).rows("two_pools")
  shares = [(r["n_interaction"], r["n_observation"]) for r in rows if "loss/total" in r]
  assert shares == [(6.0, 2.0)] * 5          # loop steps 2..6: after the random steps, with 6 transitions stored
  b = str(tmp_path / "b")
  run(stage(), loop, b, MetricWriter(b), seed=0, stop_after=3)
  resumed_task = stage()
  resumed, _ = run(resumed_task, loop, b, MetricWriter(b), seed=0)
  np.testing.assert_array_equal(full["w"], resumed["w"])
  saved = np.load(os.path.join(b, "two_pools", "collector", "collector_6.npz"))
  assert list(saved["replay/size"]) == [33] and not any("observation" in k for k in saved.files)
  c = str(tmp_path / "c")
  from_dataset, _ = run(stage("dataset"), loop, c, MetricWriter(c), seed=0)
  np.testing.assert_array_equal(full["w"], from_dataset["w"])


def _recurrent_collector(env, seen_first, width=3):
  """A RecurrentPolicy whose action is a function of its carry (the sum of the observations since is_first, and
  their count); `seen_first` records the is_first of each call. Episodes of 7 steps, random for the first 4."""
  import jax.numpy as jnp
  from vidrl_jax.data.mix import Sampler
  from vidrl_jax.data.replay import ReplayBuffer
  from vidrl_jax.envs.host import RecurrentPolicy
  from vidrl_jax.train.online import make_collector

  def act(state, carry, obs, is_first, rng):
    total, count = carry
    x = jnp.concatenate([obs["position"], obs["velocity"]], -1)
    total = jnp.where(is_first[:, None], 0.0, total) + x
    count = jnp.where(is_first, 0, count) + 1
    jax.debug.callback(lambda f: seen_first.append(bool(f[0])), is_first)
    noise = jax.random.uniform(rng, (x.shape[0], 1), minval=-0.1, maxval=0.1)
    return jnp.tanh(state * total[:, :1] / count[:, None] + noise), (total, count)

  policy = RecurrentPolicy(init=lambda n: (jnp.zeros((n, width)), jnp.zeros((n,), jnp.int32)), act=act)
  replay = ReplayBuffer(100, {"position": ((2,), np.float32), "velocity": ((1,), np.float32)}, action_dim=1)
  return make_collector(env, replay, Sampler({"replay": (replay, 4)}, 0), policy, rng=jax.random.key(3), seed=5,
                        train_every=3, updates_per_burst=1, random_steps=4, min_transitions=4,
                        obs_fn=lambda obs: {k: obs[k] for k in KEYS})


def test_recurrent_policy_carry_resumes_mid_episode_exactly():
  """A collector resumed mid-episode from `state_dict` into a fresh one continues with the carry of the
  uninterrupted run (same actions, replay and carry bit for bit); replaying the episode does not call the policy."""
  state = jax.numpy.asarray(2.0)
  first_a, first_b = [], []
  full = _recurrent_collector(_pendulum(7), first_a)
  for step in range(8):                           # 24 env steps: episodes start at env steps 0, 7, 14, 21
    full.collect(state, step)
  cut = _recurrent_collector(_pendulum(7), first_b)
  for step in range(3):                           # 9 env steps: mid episode 1, after two policy steps
    cut.collect(state, step)
  saved = cut.state_dict()
  np.testing.assert_array_equal(saved["collector/carry/1"], [2])
  resumed = _recurrent_collector(_pendulum(7), first_b)
  resumed.load_state_dict(saved)
  for step in range(3, 8):
    resumed.collect(state, step)
  a, b = full.state_dict(), resumed.state_dict()
  assert set(a) == set(b) and "collector/carry/0" in a
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  jax.effects_barrier()
  assert first_b == first_a and len(first_a) == 20   # env steps 4..23: the policy is not called during the replay

  reset = _recurrent_collector(_pendulum(7), [])   # the carry matters: resuming from init(1) acts otherwise
  reset.load_state_dict({**saved, "collector/carry/0": np.zeros((1, 3), np.float32),
                         "collector/carry/1": np.zeros((1,), np.int32)})
  reset.collect(state, 3)
  actions = reset.state_dict()["replay/action"]
  assert not np.array_equal(actions, a["replay/action"][:len(actions)])
  with pytest.raises(VidrlError, match="does not match this policy's init"):
    _recurrent_collector(_pendulum(7), [], width=4).load_state_dict(saved)


def test_recurrent_policy_is_first_on_each_episode_first_policy_call():
  """is_first is True on each episode's first policy call: its first frame, or (episode 0 here) the frame where
  the random steps end; the replay's is_first marks episode starts only."""
  seen = []
  collector = _recurrent_collector(_pendulum(7), seen)
  for step in range(8):
    collector.collect(jax.numpy.asarray(1.0), step)
  jax.effects_barrier()
  assert [4 + i for i, f in enumerate(seen) if f] == [4, 7, 14, 21]
  rows = collector.state_dict()["replay/is_first"]
  assert len(rows) == 28 and list(np.flatnonzero(rows)) == [0, 8, 16, 24]   # episodes of 7 steps and a first row
