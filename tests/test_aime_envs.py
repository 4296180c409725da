"""AIME's environment binding: observation settings, the pendulum task, and its trajectory format."""

import numpy as np
import pytest

from vidrl_jax.envs.host import BatchEnv, random_policy, run_episodes
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.aime.envs import NAMES, aime_trajectory, make_env, observation_keys


def test_observation_settings():
  assert observation_keys("walker-run", "mdp") == ["orientations", "height", "velocity"]
  assert observation_keys("walker-run", "lpomdp") == ["orientations", "height"]
  assert observation_keys("cheetah-flip", "lpomdp") == ["position"]
  assert observation_keys("pendulum-swingup", "mdp") == ["position", "velocity"]
  assert observation_keys("pendulum-swingup", "lpomdp") == ["position"]     # the velocity is hidden
  assert observation_keys("walker-walk", "visual") == ["image"]
  assert len(NAMES) == 8
  with pytest.raises(VidrlError, match="mdp"):
    observation_keys("walker-walk", "pixels")
  with pytest.raises(VidrlError, match="walker-walk"):
    observation_keys("walker-jump", "mdp")


def test_pendulum_task_and_errors():
  env = make_env("pendulum-swingup")
  assert (env.name, env.max_steps, env.action_repeat, env.action_dim) == ("pendulum-swingup", 200, 1, 1)
  assert list(env.obs_spec) == observation_keys("pendulum-swingup", "mdp")
  obs = env.reset(0)
  np.testing.assert_allclose(np.sum(obs["position"] ** 2), 1.0, rtol=1e-5)   # [cos θ, sin θ]
  assert make_env("walker-walk").action_repeat == 2
  with pytest.raises(VidrlError, match="image"):
    make_env("pendulum-swingup", image_size=64)
  with pytest.raises(VidrlError, match="env.render"):
    make_env("walker-walk", render="pretty")
  assert make_env("walker-walk", image_size=8, render="full").fast_render is False
  assert make_env("walker-walk", image_size=8, render="fast").fast_render is True


def test_aime_trajectory_from_a_plain_episode():
  episode = {"obs": {"x": np.arange(4, dtype=np.float32)[:, None]}, "action": np.array([[0.5], [-1.0], [0.25]],
             np.float32), "reward": np.array([1.0, 2.0, 3.0], np.float32), "terminal": True}
  traj = aime_trajectory(episode)
  assert set(traj) == {"x", "pre_action", "reward", "is_first", "is_last", "is_terminal"}
  np.testing.assert_array_equal(traj["x"][:, 0], [0, 1, 2, 3])
  np.testing.assert_array_equal(traj["pre_action"][:, 0], [0.0, 0.5, -1.0, 0.25])
  np.testing.assert_array_equal(traj["reward"], [0.0, 1.0, 2.0, 3.0])
  assert traj["pre_action"].dtype == traj["reward"].dtype == np.float32
  assert traj["is_first"].tolist() == [True, False, False, False]
  assert traj["is_last"].tolist() == [False, False, False, True]
  assert traj["is_terminal"].tolist() == [False, False, False, True]
  assert not aime_trajectory({**episode, "terminal": False})["is_terminal"].any()


def test_recorded_episodes_become_aime_trajectories():
  env = BatchEnv([make_env("pendulum-swingup", max_steps=6) for _ in range(2)])
  trajs = {}
  returns = run_episodes(env, random_policy(1, 0), 2, seed=0, on_episode=lambda i, t: trajs.__setitem__(
      i, aime_trajectory(t)))
  for i in range(2):
    assert all(len(v) == 7 for v in trajs[i].values())
    assert returns[i] == pytest.approx(float(trajs[i]["reward"].astype(np.float64).sum()), rel=1e-9)
