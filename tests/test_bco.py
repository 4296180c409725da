"""BCO(0) and oracle BC (AIME App. B): frame stacks, trajectory split, IDM/BC learning, best-validation selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.data import formats
from vidrl_jax.errors import VidrlError
from vidrl_jax.rl import bco
from vidrl_jax.train import MetricWriter, loop_config, run
from vidrl_jax.train import mesh as mesh_lib
from vidrl_jax.train.checkpoint import Checkpointer

KEYS = ("x",)


def _marker_trajs(lengths=(7, 3, 10, 2, 6)):
  """obs 'x' = 1000 * i + t, pre_action[t] = (i, t): every index can be read back from its value."""
  trajs = []
  for i, n in enumerate(lengths):
    t = np.arange(n + 1, dtype=np.float32)
    trajs.append({"x": (1000 * i + t)[:, None], "y": np.stack([t, -t], 1),
                  "pre_action": np.stack([np.full(n + 1, i, np.float32), t], 1),
                  "reward": np.zeros(n + 1, np.float32), "is_first": t == 0, "is_last": t == n,
                  "is_terminal": np.zeros(n + 1, bool)})
    trajs[-1]["pre_action"][0] = 0.0
  return trajs


def _linear_trajs(num, steps, rng, B, W=None):
  """o_{t+1} = o_t + 0.1 B a_t; random a_t in [-0.9, 0.9], or the demonstrator a_t = 0.9 tanh(W o_t).

  With W = -B^T / 3 the demonstrator is a stabilising feedback, so its states stay where the IDM was trained.
  """
  trajs = []
  for _ in range(num):
    obs = [rng.normal(size=4).astype(np.float32)]
    pre = [np.zeros(2, np.float32)]
    for _ in range(steps):
      a = rng.uniform(-0.9, 0.9, 2) if W is None else 0.9 * np.tanh(W @ obs[-1])
      obs.append(obs[-1] + 0.1 * B @ a)
      pre.append(a)
    n = steps + 1
    trajs.append({"x": np.asarray(obs, np.float32), "pre_action": np.asarray(pre, np.float32),
                  "reward": np.zeros(n, np.float32), "is_first": np.arange(n) == 0,
                  "is_last": np.arange(n) == n - 1, "is_terminal": np.zeros(n, bool)})
  return trajs


def _frames(trajs, keys=KEYS, stack=5):
  return bco.stacked_frames(formats.from_episodes(trajs, keys), stack)


def _loop():
  return loop_config(log_every=50, checkpoint_every=0, progress=False)


def test_stacked_frames_never_cross_trajectories_and_clip_at_starts():
  trajs = _marker_trajs()
  data = _frames(trajs, ("x", "y"), stack=5)
  assert data.num_windows == sum(len(t["x"]) - 1 for t in trajs)
  b = bco.gather_stacks(data, np.arange(data.num_windows))
  x = b["obs"]["x"][..., 0]
  np.testing.assert_array_equal(b["action"], bco.true_actions(data))
  n = 0
  for i, traj in enumerate(trajs):                   # ids run trajectory by trajectory, t ascending
    for t in range(len(traj["x"]) - 1):
      assert np.all(x[n] // 1000 == i)               # never another trajectory
      np.testing.assert_array_equal(x[n] % 1000, [max(t + j, 0) for j in range(-4, 1)] + [t + 1])
      np.testing.assert_array_equal(b["action"][n], traj["pre_action"][t + 1])   # a_t = pre_action[t + 1]
      np.testing.assert_array_equal(b["obs"]["y"][n, :, 0], np.maximum(np.arange(t - 4, t + 2), 0))
      n += 1
  b = bco.gather_stacks(data, data.draw(0, 3, 16))
  assert b["obs"]["x"].shape == (16, 6, 1) and b["obs"]["y"].shape == (16, 6, 2) and b["action"].shape == (16, 2)
  assert bco.gather_stacks(data, np.arange(4), with_next=False)["obs"]["x"].shape == (4, 5, 1)
  labels = np.arange(2 * data.num_windows, dtype=np.float32).reshape(-1, 2)
  train, _ = data.split(0.3, seed=0)
  ids = np.arange(train.num_windows)
  np.testing.assert_array_equal(bco.gather_stacks(train, ids, labels)["action"], labels[train.parent_ids(ids)])


def test_split_is_by_trajectory_seeded_and_batches_are_deterministic():
  trajs = _marker_trajs(lengths=(4,) * 10)
  data = _frames(trajs)
  train, val = data.split(0.3, seed=1)
  traj_of = lambda w: set((bco.gather_stacks(w, np.arange(w.num_windows))["obs"]["x"][:, -1, 0] // 1000).tolist())
  assert len(traj_of(val)) == 3 and not traj_of(train) & traj_of(val) and traj_of(train) | traj_of(val) == set(range(10))
  again = _frames(trajs).split(0.3, seed=1)[1]
  np.testing.assert_array_equal(again.parent_ids(np.arange(again.num_windows)), val.parent_ids(np.arange(val.num_windows)))
  b1, b2, b3 = (bco.gather_stacks(val, val.draw(0, s, 32)) for s in (5, 5, 6))
  np.testing.assert_array_equal(b1["obs"]["x"], b2["obs"]["x"])
  assert not np.array_equal(b1["obs"]["x"], b3["obs"]["x"])
  assert set(b1["obs"]["x"][:, -1, 0] // 1000) <= traj_of(val)
  with pytest.raises(VidrlError, match="lacks the key"):
    _frames(trajs, ("image",))


def test_idm_labels_demos_and_bc_on_labels_matches_oracle(tmp_path):
  rng = np.random.default_rng(0)
  B = 3.0 * rng.normal(size=(4, 2)).astype(np.float32)
  W = -B.T / 3.0
  config = bco.bco_config(batch_size=128, idm_steps=500, bc_steps=300, val_every=50, val_size=256)
  embodiment = _frames(_linear_trajs(40, 30, rng, B))
  demos = _frames(_linear_trajs(20, 30, rng, B, W))
  demo_actions = bco.true_actions(demos)
  var = float(np.var(bco.true_actions(embodiment)))
  writer = MetricWriter(str(tmp_path))

  idm, ev = run(bco.make_idm_task("idm", embodiment, KEYS, 2, config, seed=0), _loop(), str(tmp_path), writer, 0)
  vals = [r["val_nll"] for r in writer.rows("idm") if "val_nll" in r]
  assert float(idm["best_val"]) == pytest.approx(min(vals)) == pytest.approx(ev["eval/best_val_nll"])
  labels = bco.label_demos(idm["best_params"], demos, KEYS, 2, config)
  assert labels.shape == demo_actions.shape
  label_mse = float(np.mean((labels - demo_actions) ** 2))
  assert label_mse < 0.05 * var, (label_mse, var)

  bc_config = bco.bco_config(**{**config.to_dict(), "val_every": 1})   # one compiled step (each validates)
  val_part = demos.split(bc_config.val_fraction, 0)[1]
  val = bco.gather_stacks(val_part, np.arange(val_part.num_windows), with_next=False)
  mse = {}
  for name, lab in (("bco", labels), ("oracle", None)):
    state, _ = run(bco.make_bc_task(name, demos, lab, KEYS, 2, bc_config, seed=0), _loop(), str(tmp_path), writer, 0)
    net = bco.StackNet(2, config.hidden, with_next=False)
    pred = np.asarray(net.apply({"params": state["best_params"]}, val["obs"]).mode())
    mse[name] = float(np.mean((pred - val["action"]) ** 2))
  demo_var = float(np.var(demo_actions))
  assert mse["oracle"] < 0.3 * demo_var and mse["bco"] < 0.3 * demo_var, (mse, demo_var)
  assert mse["bco"] < mse["oracle"] + 0.2 * demo_var, mse


def test_best_params_keep_the_earlier_model_when_validation_rises(tmp_path):
  trajs = _linear_trajs(6, 8, np.random.default_rng(1), np.eye(4, 2, dtype=np.float32))
  data = _frames(trajs)
  config = bco.bco_config(batch_size=8, val_every=2, val_size=16, val_fraction=0.5)
  task = bco.make_idm_task("idm", data, KEYS, 2, config, seed=0)
  step = jax.jit(task.step)
  state = jax.jit(task.init)(jax.random.PRNGKey(0))
  state, m = step(state, task.batch(0), jax.random.PRNGKey(0))        # a check of the initial params
  first = state["best_params"]
  assert float(state["best_val"]) == float(m["val_nll"]) < np.inf       # exact: the metric itself, kept
  state, _ = step(state, task.batch(1), jax.random.PRNGKey(0))        # no check: best unchanged
  assert float(state["best_val"]) == float(m["val_nll"])
  worse = dict(state, params=jax.tree.map(lambda p: p + 3.0, state["params"]))   # validation rises
  worse, m2 = step(worse, task.batch(2), jax.random.PRNGKey(0))
  assert float(m2["val_nll"]) > float(m["val_nll"]) == float(worse["best_val"])
  jax.tree.map(np.testing.assert_array_equal, worse["best_params"], first)
  ckpt = Checkpointer(str(tmp_path))                                  # the selection lives in the state
  ckpt.save(3, worse)
  abstract = jax.eval_shape(task.init, jax.random.PRNGKey(0))
  repl = mesh_lib.replicated(mesh_lib.make_mesh())
  restored = ckpt.restore(3, abstract, jax.tree.map(lambda _: repl, abstract))
  ckpt.close()
  jax.tree.map(np.testing.assert_array_equal, restored, worse)
  better = dict(state, best_val=jnp.asarray(1e9, jnp.float32))
  better, _ = step(better, task.batch(2), jax.random.PRNGKey(0))     # improves: params after step 2 kept
  jax.tree.map(np.testing.assert_array_equal, better["best_params"], state["params"])


def test_stack_policy_matches_the_data_stacks_and_is_deterministic():
  trajs = _marker_trajs(lengths=(9, 9))
  for t in trajs:
    t["x"] = t["x"] / 1000.0
  data = _frames(trajs, ("x", "y"))
  config = bco.bco_config(hidden=(16,))
  net = bco.StackNet(2, config.hidden, with_next=False)
  params = net.init(jax.random.PRNGKey(0), bco.gather_stacks(data, np.arange(1), with_next=False)["obs"])["params"]
  policy = bco.stack_policy(params, ("x", "y"), 2, config)
  want = np.asarray(net.apply({"params": params},
                              bco.gather_stacks(data, np.arange(data.num_windows), with_next=False)["obs"]).mode())
  def replay():
    carry, actions = policy.init(2), []
    for t in range(9):                 # both envs replay their trajectory
      obs = {k: np.stack([tr[k][t] for tr in trajs]) for k in ("x", "y")}
      obs["extra"] = np.zeros((2, 3))  # keys the policy does not use are ignored
      a, carry = policy.act(carry, obs, np.full(2, t == 0))
      actions.append(a)
    return np.stack(actions, 1), carry

  actions, carry = replay()
  assert actions.shape == (2, 9, 2) and actions.dtype == np.float32
  np.testing.assert_allclose(actions.reshape(18, 2), want, atol=1e-6)   # the data's stacks, clipped at starts
  np.testing.assert_array_equal(replay()[0], actions)                      # deterministic
  a_reset, _ = policy.act(carry, {k: np.stack([tr[k][0] for tr in trajs]) for k in ("x", "y")}, np.ones(2, bool))
  np.testing.assert_allclose(a_reset, want[[0, 9]], atol=1e-6)     # is_first refills the stack


def test_image_smoke(tmp_path):
  rng = np.random.default_rng(0)
  trajs = []
  for _ in range(8):
    trajs.append({"image": rng.integers(0, 256, (9, 64, 64, 3), dtype=np.uint8),
                  "pre_action": rng.uniform(-1, 1, (9, 2)).astype(np.float32)})
  keys = ("image",)
  data = _frames(trajs, keys)
  assert bco.gather_stacks(data, np.arange(2))["obs"]["image"].dtype == np.uint8
  config = bco.bco_config(cnn_width=4, hidden=(16,), batch_size=8, idm_steps=3, bc_steps=3, val_every=1,
                          val_size=8)            # every step validates: one compiled step per task
  writer = MetricWriter(str(tmp_path))
  idm, _ = run(bco.make_idm_task("idm", data, keys, 2, config, 0), _loop(), str(tmp_path), writer, 0)
  labels = bco.label_demos(idm["best_params"], data, keys, 2, config)
  assert labels.shape == (64, 2) and np.all(np.abs(labels) < 1)
  bc, _ = run(bco.make_bc_task("bc", data, labels, keys, 2, config, 0), _loop(), str(tmp_path), writer, 0)
  rows = writer.rows("bc")
  assert {"loss/nll", "loss/total", "action_mse", "val_nll"} <= set(rows[0])
  policy = bco.stack_policy(bc["best_params"], keys, 2, config)
  a, carry = policy.act(policy.init(3), {"image": rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)},
                        np.ones(3, bool))
  assert a.shape == (3, 2) and carry["image"].shape == (3, 5, 64, 64, 3)
