"""AIME's environments and observation settings, and its trajectory format from the host envs' plain episodes.

- Tasks (`NAMES`): the DeepMind Control tasks of `vidrl_jax.envs.dmc`, plus 'pendulum-swingup', gymnax
  'Pendulum-v1' stepped on the host (action repeat 1, 200 decisions) with its observation split so that an
  observation setting can hide the velocity: 'position' = [cos θ, sin θ], 'velocity' = [θdot] (the smoke preset's
  cheap stand-in for a DMC embodiment).
- Observation settings (paper Sec. 4): 'mdp' sees every sensor, 'lpomdp' every sensor but 'velocity', 'visual'
  only the 'image'.
- `aime_trajectory` writes a recorded episode with the official AIME keys (`vidrl_jax.data.trajectories`).
"""

from __future__ import annotations

import numpy as np

from vidrl_jax.envs import dmc
from vidrl_jax.envs.gymnax_host import GymnaxHostEnv
from vidrl_jax.envs.host import HostEnv
from vidrl_jax.errors import VidrlError

SETTINGS = ("mdp", "lpomdp", "visual")
PENDULUM = "pendulum-swingup"
PENDULUM_KEYS = {"position": (0, 2), "velocity": (2, 3)}   # slices of gymnax Pendulum's [cos θ, sin θ, θdot]
NAMES = dmc.NAMES + (PENDULUM,)
RENDER = {"auto": None, "fast": True, "full": False}       # env.render -> dmc.make_host_env(fast_render=...)


def _sensor_keys(name: str) -> list[str]:
  if name == PENDULUM:
    return list(PENDULUM_KEYS)
  if name not in dmc.NAMES:
    raise VidrlError(f"unknown AIME task {name!r}; valid names are {', '.join(NAMES)}")
  return dmc.sensor_keys(name)


def observation_keys(name: str, setting: str) -> list[str]:
  """The obs keys an agent sees in `setting`: 'mdp' (all sensors), 'lpomdp' (no 'velocity') or 'visual'."""
  sensors = _sensor_keys(name)
  if setting == "mdp":
    return sensors
  if setting == "lpomdp":
    return [k for k in sensors if k != "velocity"]
  if setting == "visual":
    return ["image"]
  raise VidrlError(f"unknown observation setting {setting!r}; use one of {', '.join(SETTINGS)}")


def make_env(name: str, *, action_repeat: int | None = None, max_steps: int | None = None, image_size: int = 0,
             render: str = "auto") -> HostEnv:
  """Host env `name` (one of `NAMES`). `action_repeat` defaults to 2 for DMC tasks and 1 for the pendulum;
  `max_steps` to the task's time limit over the action repeat; `image_size` > 0 adds rendered frames (DMC),
  `render` (config `env.render`) 'fast' (no anti-aliasing, shadows, reflections), 'full', or 'auto' (fast where
  JAX runs on the CPU; `vidrl_jax.envs.dmc.fast_render_default`)."""
  _sensor_keys(name)
  if render not in RENDER:
    raise VidrlError(f"unknown env.render {render!r}; use one of {', '.join(RENDER)}")
  if name == PENDULUM:
    if image_size > 0:
      raise VidrlError(f"{PENDULUM} has no image observations; use image_size=0 or a DMC task")
    return GymnaxHostEnv("Pendulum-v1", action_repeat=action_repeat or 1, max_steps=max_steps,
                         obs_keys=PENDULUM_KEYS, name=PENDULUM)
  return dmc.make_host_env(name, action_repeat=action_repeat or 2, max_steps=max_steps, image_size=image_size,
                           fast_render=RENDER[render])


def aime_trajectory(episode: dict) -> dict[str, np.ndarray]:
  """A plain episode (`vidrl_jax.envs.host.EpisodeRecorder`: 'obs' (T+1), 'action' (T, A), 'reward' (T,),
  'terminal') in the official AIME keys, all T+1 rows: the obs keys, 'pre_action' (row 0 zeros, row t the action
  that led to obs t), 'reward' (row 0 zero), 'is_first', 'is_last' and 'is_terminal' (at T only if terminal)."""
  action = np.asarray(episode["action"], np.float32)
  length = action.shape[0] + 1
  traj = {k: np.asarray(v) for k, v in episode["obs"].items()}
  traj["pre_action"] = np.concatenate([np.zeros((1,) + action.shape[1:], np.float32), action])
  traj["reward"] = np.concatenate([np.zeros(1, np.float32), np.asarray(episode["reward"], np.float32)])
  for flag, row in (("is_first", 0), ("is_last", -1), ("is_terminal", -1)):
    traj[flag] = np.zeros(length, bool)
    traj[flag][row] = flag != "is_terminal" or bool(episode["terminal"])
  return traj
