"""DeepMind Control tasks (and gymnax Pendulum) as host-side `HostEnv`s, as used by AIME and SAC.

  env = make_host_env('walker-walk', image_size=64)    # obs: orientations, height, velocity, image
  obs = env.reset(seed=0)
  obs, reward, terminal = env.step(np.zeros(env.action_dim, np.float32))

Names: see `NAMES`. DMC tasks repeat each action `action_repeat` times (default 2) and sum the rewards; an
episode lasts `max_steps` decisions (default 1000 // action_repeat, the DMC time limit) and is never terminal.
The cheetah tasks 'run_backwards', 'flip' and 'flip_backwards' use the Plan2Explore / URLB reward definitions.
'pendulum-swingup' is gymnax 'Pendulum-v1' (jitted on the host, action repeat 1 and 200 decisions by default),
with obs 'position' = [cos θ, sin θ] and 'velocity' = [θdot] and actions scaled to the env's [-2, 2] torque.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from vidrl_jax.envs.host import HostEnv, ObsSpec
from vidrl_jax.errors import VidrlError

_F32 = np.dtype(np.float32)
_U8 = np.dtype(np.uint8)
# Sensor keys in the order dm_control returns them, with their shapes (scalars as (1,)), and action sizes.
_SENSORS: dict[str, dict[str, tuple[int, ...]]] = {
    'walker': {'orientations': (14,), 'height': (1,), 'velocity': (9,)},
    'cheetah': {'position': (8,), 'velocity': (9,)},
    'pendulum': {'position': (2,), 'velocity': (1,)},
}
_ACTION_DIM = {'walker': 6, 'cheetah': 6, 'pendulum': 1}
_CHEETAH_EXTRA = ('run_backwards', 'flip', 'flip_backwards')
NAMES = ('walker-stand', 'walker-walk', 'walker-run', 'cheetah-run', 'cheetah-run_backwards', 'cheetah-flip',
         'cheetah-flip_backwards', 'pendulum-swingup')
SETTINGS = ('mdp', 'lpomdp', 'visual')
_DMC_TIME_LIMIT_STEPS = 1000   # control steps in a DMC episode (walker: 25 s at 0.025 s, cheetah: 10 s at 0.01 s)
_PENDULUM_STEPS = 200          # gymnax Pendulum-v1 episode length


def _split(name: str) -> tuple[str, str]:
  if name not in NAMES:
    raise VidrlError(f'Unknown host env {name!r}; valid names are {", ".join(NAMES)}.')
  domain, task = name.split('-', 1)
  return domain, task


def observation_keys(name: str, setting: str) -> list[str]:
  """The obs keys an agent sees in `setting`: 'mdp' (all sensors), 'lpomdp' (no 'velocity') or 'visual'."""
  domain, _ = _split(name)
  sensors = list(_SENSORS[domain])
  if setting == 'mdp':
    return sensors
  if setting == 'lpomdp':
    return [k for k in sensors if k != 'velocity']
  if setting == 'visual':
    return ['image']
  raise VidrlError(f'Unknown observation setting {setting!r}; use one of {", ".join(SETTINGS)}.')


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


class _Episode:
  """Decision counting shared by the host envs: step before reset or past `max_steps` is an error."""
  name: str
  max_steps: int
  action_dim: int

  def _start(self) -> None:
    self._elapsed = 0

  def _check_action(self, action: np.ndarray) -> np.ndarray:
    elapsed = getattr(self, '_elapsed', None)
    if elapsed is None:
      raise VidrlError(f'{self.name}: step was called before reset; call reset(seed) first.')
    if elapsed >= self.max_steps:
      raise VidrlError(f'{self.name}: step was called after the episode limit of {self.max_steps} decisions; '
                       'call reset(seed) to start a new episode.')
    action = np.asarray(action, np.float32)
    if action.shape != (self.action_dim,):
      raise VidrlError(f'{self.name}: expected an action of shape ({self.action_dim},), got {action.shape}.')
    self._elapsed = elapsed + 1
    return np.clip(action, -1.0, 1.0)


class DMCEnv(_Episode):
  """A DeepMind Control task as a `HostEnv`; the dm_control env is built on first reset and re-seeded after."""

  def __init__(self, name: str, action_repeat: int, max_steps: int, image_size: int, camera: int):
    self.name = name
    self._domain, self._task = _split(name)
    self.action_repeat = action_repeat
    self.max_steps = max_steps
    self.action_dim = _ACTION_DIM[self._domain]
    self.image_size = image_size
    self.camera = camera
    self.obs_spec: ObsSpec = {k: (shape, _F32) for k, shape in _SENSORS[self._domain].items()}
    if image_size > 0:
      self.obs_spec['image'] = ((image_size, image_size, 3), _U8)
    self._env: Any = None

  @property
  def dm_env(self) -> Any:
    """The underlying dm_control `control.Environment` (built on first use)."""
    if self._env is None:
      self._env = _load_dmc(self._domain, self._task)
    return self._env

  @property
  def physics(self) -> Any:
    return self.dm_env.physics

  def _obs(self, sensors: dict[str, Any]) -> dict[str, np.ndarray]:
    obs = {k: np.asarray(sensors[k], np.float32).reshape(self.obs_spec[k][0]) for k in _SENSORS[self._domain]}
    if self.image_size > 0:
      obs['image'] = np.array(self.physics.render(self.image_size, self.image_size, camera_id=self.camera),
                              np.uint8)
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


@functools.lru_cache(maxsize=None)
def _pendulum_fns() -> tuple[Callable, Callable, float]:
  """Jitted gymnax Pendulum-v1 reset(seed) and step(state, torque, repeat), shared by all instances."""
  import gymnax
  import jax
  import jax.numpy as jnp

  env, params = gymnax.make('Pendulum-v1')

  def reset(seed: jax.Array) -> tuple[jax.Array, Any]:
    return env.reset_env(jax.random.PRNGKey(seed), params)

  def step(state: Any, torque: jax.Array, repeat: int) -> tuple[jax.Array, Any, jax.Array]:
    key = jax.random.PRNGKey(0)   # Pendulum's dynamics are deterministic; the key is unused
    total = jnp.zeros((), jnp.float32)
    for _ in range(repeat):       # step_env: no gymnax auto-reset, the episode limit is counted on the host
      obs, state, reward, _, _ = env.step_env(key, state, torque, params)
      total = total + reward.astype(jnp.float32)
    return obs, state, total

  return jax.jit(reset), jax.jit(step, static_argnums=2), float(params.max_torque)


class PendulumEnv(_Episode):
  """gymnax Pendulum-v1 as a `HostEnv` (see module docstring)."""

  def __init__(self, name: str, action_repeat: int, max_steps: int):
    self.name = name
    self.action_repeat = action_repeat
    self.max_steps = max_steps
    self.action_dim = 1
    self.obs_spec: ObsSpec = {k: (shape, _F32) for k, shape in _SENSORS['pendulum'].items()}
    self._state: Any = None

  @staticmethod
  def _obs(obs: Any) -> dict[str, np.ndarray]:
    obs = np.asarray(obs, np.float32)
    return {'position': obs[:2].copy(), 'velocity': obs[2:3].copy()}

  def reset(self, seed: int) -> dict[str, np.ndarray]:
    reset, _, _ = _pendulum_fns()
    obs, self._state = reset(np.uint32(seed))
    self._start()
    return self._obs(obs)

  def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool]:
    action = self._check_action(action)
    _, step, max_torque = _pendulum_fns()
    obs, self._state, reward = step(self._state, action * np.float32(max_torque), self.action_repeat)
    return self._obs(obs), float(reward), False


def make_host_env(name: str, *, action_repeat: int | None = None, max_steps: int | None = None,
                  image_size: int = 0, camera: int = 0) -> HostEnv:
  """Builds host env `name` (one of `NAMES`).

  `action_repeat` defaults to 2 for DMC tasks and 1 for 'pendulum-swingup'. `max_steps` (decisions per episode)
  defaults to the task's time limit divided by the action repeat (1000 // repeat for DMC, 200 // repeat for
  pendulum); a smaller value cuts episodes short. `image_size` > 0 adds an 'image' obs rendered from `camera`
  (DMC only).
  """
  domain, _ = _split(name)
  if action_repeat is None:
    action_repeat = 1 if domain == 'pendulum' else 2
  if action_repeat < 1:
    raise VidrlError(f'action_repeat must be at least 1, got {action_repeat}.')
  limit = _PENDULUM_STEPS if domain == 'pendulum' else _DMC_TIME_LIMIT_STEPS
  if max_steps is None:
    max_steps = max(1, limit // action_repeat)
  if max_steps < 1:
    raise VidrlError(f'max_steps must be at least 1, got {max_steps}.')
  if image_size < 0:
    raise VidrlError(f'image_size must be 0 (no image) or a positive size in pixels, got {image_size}.')
  if domain == 'pendulum':
    if image_size > 0:
      raise VidrlError('pendulum-swingup has no image observations; use image_size=0 or a DMC task.')
    return PendulumEnv(name, action_repeat, max_steps)
  return DMCEnv(name, action_repeat, max_steps, image_size, camera)


__all__ = ['NAMES', 'SETTINGS', 'DMCEnv', 'PendulumEnv', 'make_host_env', 'observation_keys']
