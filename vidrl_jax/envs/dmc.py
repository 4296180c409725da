"""DeepMind Control tasks as host-side `HostEnv`s (AIME's embodiments, SAC experts).

  env = make_host_env('walker-walk', image_size=64)    # obs: orientations, height, velocity, image
  obs = env.reset(seed=0)
  obs, reward, terminal = env.step(np.zeros(env.action_dim, np.float32))

Names: see `NAMES`. Tasks repeat each action `action_repeat` times (default 2) and sum the rewards; an episode
lasts `max_steps` decisions (default 1000 // action_repeat, the DMC time limit) and is never terminal. The
cheetah tasks 'run_backwards', 'flip' and 'flip_backwards' use the Plan2Explore / URLB reward definitions.

Rendering: `fast_render` (default on where JAX runs on the CPU, `fast_render_default`) renders without
anti-aliasing, shadows and reflections: in MuJoCo's software renderer (EGL on Mesa's llvmpipe, 2 CPU cores) 64x64
walker frames went from 33 to 273 per second (anti-aliasing and shadow map off alone: 143; benchmarks/render_speed.py).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from vidrl_jax.envs.host import EpisodeLimit, HostEnv, ObsSpec
from vidrl_jax.errors import VidrlError

_F32 = np.dtype(np.float32)
_U8 = np.dtype(np.uint8)
# Sensor keys in the order dm_control returns them, with their shapes (scalars as (1,)), and action sizes.
_SENSORS: dict[str, dict[str, tuple[int, ...]]] = {
    'walker': {'orientations': (14,), 'height': (1,), 'velocity': (9,)},
    'cheetah': {'position': (8,), 'velocity': (9,)},
}
_ACTION_DIM = {'walker': 6, 'cheetah': 6}
_CHEETAH_EXTRA = ('run_backwards', 'flip', 'flip_backwards')
NAMES = ('walker-stand', 'walker-walk', 'walker-run', 'cheetah-run', 'cheetah-run_backwards', 'cheetah-flip',
         'cheetah-flip_backwards')
_DMC_TIME_LIMIT_STEPS = 1000   # control steps in a DMC episode (walker: 25 s at 0.025 s, cheetah: 10 s at 0.01 s)
FAST_RENDER_FLAGS = {'shadow': False, 'reflection': False}   # mjvScene flags off in fast rendering


def _split(name: str) -> tuple[str, str]:
  if name not in NAMES:
    raise VidrlError(f'Unknown DMC task {name!r}; valid names are {", ".join(NAMES)}.')
  domain, task = name.split('-', 1)
  return domain, task


def sensor_keys(name: str) -> list[str]:
  """The state observation keys of task `name`, in dm_control's order."""
  domain, _ = _split(name)
  return list(_SENSORS[domain])


def _cheetah_reward(task: str) -> Callable[[Any], float]:
  """Plan2Explore / URLB reward of a cheetah task on the physics state."""
  from dm_control.utils import rewards
  inf = float('inf')
  if task == 'run_backwards':
    return lambda physics: rewards.tolerance(-physics.speed(), bounds=(10, inf), margin=10, value_at_margin=0,
                                             sigmoid='linear')
  sign = 1.0 if task == 'flip' else -1.0
  return lambda physics: rewards.tolerance(sign * physics.named.data.subtree_angmom['torso'][1], bounds=(5, inf),
                                           margin=5, value_at_margin=0, sigmoid='linear')


def _load_dmc(domain: str, task: str) -> Any:
  """A dm_control `control.Environment` without time limit (`DMCEnv` counts decisions itself)."""
  inf = float('inf')
  if domain == 'cheetah' and task in _CHEETAH_EXTRA:
    from dm_control.rl import control
    from dm_control.suite import cheetah

    class CustomCheetah(cheetah.Cheetah):
      """The cheetah task with a different reward."""

      def __init__(self, reward_fn: Callable[[Any], float], random: Any = None):
        super().__init__(random=random)
        self._reward_fn = reward_fn

      def get_reward(self, physics: Any) -> float:
        return self._reward_fn(physics)

    physics = cheetah.Physics.from_xml_string(*cheetah.get_model_and_assets())
    return control.Environment(physics, CustomCheetah(_cheetah_reward(task), random=0), time_limit=inf)
  from dm_control import suite
  return suite.load(domain, task, task_kwargs={'random': 0, 'time_limit': inf})


def fast_render_default() -> bool:
  """Fast rendering is on by default where JAX computes on the CPU: there MuJoCo renders in software too (Mesa's
  llvmpipe under EGL), and shadows, reflections and anti-aliasing cost most of its time."""
  import jax
  return jax.default_backend() == 'cpu'


def set_fast_render(physics: Any) -> None:
  """Turns off anti-aliasing (`vis.quality.offsamples`) and the shadow map (`vis.quality.shadowsize`) of a freshly
  loaded model; they take effect when the rendering context is made, i.e. before the first `physics.render`."""
  physics.model.vis.quality.offsamples = 0
  physics.model.vis.quality.shadowsize = 0


class DMCEnv(EpisodeLimit):
  """A DeepMind Control task as a `HostEnv`; the dm_control env is built on first reset and re-seeded after.

  With `fast_render`, images are rendered without anti-aliasing, shadows and reflections (`set_fast_render` and
  `FAST_RENDER_FLAGS`): 7-10x faster in software rendering (module docstring), with visibly plainer frames, so
  datasets rendered one way should not be mixed with the other.
  """

  def __init__(self, name: str, action_repeat: int, max_steps: int, image_size: int, camera: int,
               fast_render: bool = False):
    self.name = name
    self._domain, self._task = _split(name)
    self.action_repeat = action_repeat
    self.max_steps = max_steps
    self.action_dim = _ACTION_DIM[self._domain]
    self.image_size = image_size
    self.camera = camera
    self.fast_render = fast_render
    self.obs_spec: ObsSpec = {k: (shape, _F32) for k, shape in _SENSORS[self._domain].items()}
    if image_size > 0:
      self.obs_spec['image'] = ((image_size, image_size, 3), _U8)
    self._env: Any = None

  @property
  def dm_env(self) -> Any:
    """The underlying dm_control `control.Environment` (built on first use)."""
    if self._env is None:
      self._env = _load_dmc(self._domain, self._task)
      if self.fast_render:
        set_fast_render(self._env.physics)
    return self._env

  @property
  def physics(self) -> Any:
    return self.dm_env.physics

  def _obs(self, sensors: dict[str, Any]) -> dict[str, np.ndarray]:
    obs = {k: np.asarray(sensors[k], np.float32).reshape(self.obs_spec[k][0]) for k in _SENSORS[self._domain]}
    if self.image_size > 0:
      flags = FAST_RENDER_FLAGS if self.fast_render else None
      obs['image'] = np.array(self.physics.render(self.image_size, self.image_size, camera_id=self.camera,
                                                  render_flag_overrides=dict(flags) if flags else None), np.uint8)
    return obs

  def reset(self, seed: int) -> dict[str, np.ndarray]:
    """Starts an episode whose initial state is drawn from `seed` (the task's RandomState is re-seeded)."""
    env = self.dm_env
    env.task.random.seed(int(seed))   # same state as the RandomState(seed) that suite.load(random=seed) makes
    time_step = env.reset()
    self._start()
    return self._obs(time_step.observation)

  def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool]:
    action = self._check_action(action)
    reward = 0.0
    for _ in range(self.action_repeat):
      time_step = self._env.step(action)
      reward += float(time_step.reward or 0.0)
    return self._obs(time_step.observation), reward, False


def make_host_env(name: str, *, action_repeat: int = 2, max_steps: int | None = None, image_size: int = 0,
                  camera: int = 0, fast_render: bool | None = None) -> HostEnv:
  """Builds DMC task `name` (one of `NAMES`).

  `max_steps` (decisions per episode) defaults to the DMC time limit divided by the action repeat (1000 //
  repeat); a smaller value cuts episodes short. `image_size` > 0 adds an 'image' obs rendered from `camera`,
  fast (see the module docstring) when `fast_render`, by default when `fast_render_default()`.
  """
  _split(name)
  if action_repeat < 1:
    raise VidrlError(f'action_repeat must be at least 1, got {action_repeat}.')
  if max_steps is None:
    max_steps = max(1, _DMC_TIME_LIMIT_STEPS // action_repeat)
  if max_steps < 1:
    raise VidrlError(f'max_steps must be at least 1, got {max_steps}.')
  if image_size < 0:
    raise VidrlError(f'image_size must be 0 (no image) or a positive size in pixels, got {image_size}.')
  if fast_render is None:
    fast_render = fast_render_default()
  return DMCEnv(name, action_repeat, max_steps, image_size, camera, bool(fast_render))


__all__ = ['FAST_RENDER_FLAGS', 'NAMES', 'DMCEnv', 'fast_render_default', 'make_host_env', 'sensor_keys',
           'set_fast_render']
