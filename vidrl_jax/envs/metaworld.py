"""Meta-World v3 tasks as host-side `HostEnv`s with sparse success rewards (RLV's manipulation tasks, paper §4.2).

  env = MetaWorldEnv('push-v3', image_size=48, domain='strong')   # obs: state (39,), image (48, 48, 3)
  obs = env.reset(seed=0)
  obs, reward, terminal = env.step(np.zeros(env.action_dim, np.float32))

- Tasks: any Meta-World v3 name (`task_names()`: push-v3, door-open-v3, drawer-open-v3, ...), 4-d actions in
  [-1, 1] (hand motion x, y, z and gripper). An episode lasts `max_steps` decisions (default 200, the official RLV
  Meta-World drawer's episode length) and is never terminal (Meta-World never terminates: time limit only).
- `state`: Meta-World's 39-d observation with the goal position visible (MT1's setting; the scripted experts read
  it), float32. `image`: optional (size, size, 3) uint8 frames, rendered fast (`mjrender`) from `camera`: one of
  the model's cameras (`CAMERAS`: corner, corner2, corner3, topview, behindGripper, gripperPOV) or None (default),
  the domain's own camera (the strong domain's free camera, else corner); a named camera also overrides a domain's
  free camera (the domain then changes colours and lights only). The model's `corner` camera is rolled upside down
  (its image-up axis points at the floor); frames of a camera whose up axis points below the horizon are rotated
  by 180 degrees, which shows the same view upright (flipping rows alone would mirror it).
- Reward: `sparse` (default, the paper's): 1.0 on a step whose info['success'] holds, else 0.0; `dense`: Meta-World's
  shaped v2 reward (0 to 10).
- Reset seeds: the object and goal positions (Meta-World's `rand_vec`) are drawn by Meta-World's own reset
  (uniform in the task's reset space, redrawn while its constraints fail, e.g. push's goal at least 0.15 from the
  puck) from the generator `np.random.default_rng(seed)`; with `layout_seed` set, every reset uses that seed's
  positions (one fixed task). Nothing else is random, so a seed and a list of actions always give the same
  observations.
- MuJoCo 3.17 compatibility: Meta-World 3.1.1 pins mujoco 3.3.0; on 3.17 (which dm-control needs) a weld constraint
  keeps 12 numbers in `eq_data` and Meta-World's `reset_mocap_welds` writes 11, failing at the first reset. The env
  replaces that method (`patch_mocap_welds`, applied when an env is made) by one that writes the same 11 numbers
  into the first 11 slots (../shared/FACTS.md).

Domain shift (`domain`, standing in for the paper's human videos): the same task rendered differently, pixels
only (the physics and the state are untouched; `DOMAINS` gives every value). Mean absolute difference from the
plain domain's frame at a reset, measured on push, door-open and drawer-open at 24 and 48 pixels: weak 17.6-19.5,
strong 40.3-42.6 grey levels of 255 (tests/envs/test_metaworld.py):
- `weak`: the arm's coloured links blue, object colours permuted and tinted, the table wood tinted green, the floor
  beige, lights brighter; same camera.
- `strong`: the arm yellow and its grey parts light grey, object colours permuted and tinted otherwise, the table
  with the metal-wall texture tinted blue, a dark floor, warm dimmer lights and ambient, and a free camera from the
  other front corner, lower and closer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vidrl_jax.envs.host import EpisodeLimit, ObsSpec
from vidrl_jax.envs.mjrender import OffscreenRenderer, fixed_camera, free_camera
from vidrl_jax.errors import VidrlError

STATE_DIM = 39
REWARDS = ('sparse', 'dense')
CAMERAS = ('corner', 'corner2', 'corner3', 'topview', 'behindGripper', 'gripperPOV')   # the model's cameras
_WELD_DATA = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0)   # Meta-World's 11 numbers per weld
_SCENERY = ('world', 'tablelink', 'RetainingWall', 'mocap')             # root bodies that are not task objects


@dataclasses.dataclass(frozen=True)
class Domain:
  """How a domain renders the scene (see the module docstring); None leaves a part as Meta-World draws it."""
  arm_rgb: tuple[float, float, float] | None = None        # the robot's coloured geoms (red links, cyan pad)
  arm_grey_rgb: tuple[float, float, float] | None = None   # the robot's grey geoms (pedestal, rail, white pad)
  object_perm: tuple[int, int, int] = (0, 1, 2)           # object rgb -> rgb[perm] * object_gain
  object_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
  table_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the table material's rgb (tints its texture)
  table_texture: str | None = None                         # use this material's texture on the table
  floor_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
  light_diffuse: tuple[float, float, float] | None = None  # every light's diffuse colour (Meta-World: 0.3 grey)
  headlight_ambient: tuple[float, float, float] | None = None   # (Meta-World: 0.4 grey)
  camera: tuple[tuple[float, float, float], float, float, float] | None = None  # free (lookat, dist, az, el)


DOMAINS: dict[str, Domain] = {
    'none': Domain(),
    'weak': Domain(arm_rgb=(0.1, 0.25, 0.65), object_perm=(1, 2, 0), object_gain=(1.0, 0.9, 0.7),
                   table_rgb=(0.6, 0.85, 0.55), floor_rgb=(0.9, 0.8, 0.6), light_diffuse=(0.42, 0.42, 0.42),
                   headlight_ambient=(0.5, 0.5, 0.5)),
    'strong': Domain(arm_rgb=(0.9, 0.75, 0.1), arm_grey_rgb=(0.75, 0.75, 0.8), object_perm=(2, 0, 1),
                     object_gain=(0.6, 1.0, 0.8), table_rgb=(0.55, 0.6, 1.0), table_texture='wall_metal',
                     floor_rgb=(0.3, 0.3, 0.35), light_diffuse=(0.4, 0.3, 0.2),
                     headlight_ambient=(0.3, 0.27, 0.25), camera=((0.0, 0.65, 0.1), 1.3, 130.0, -35.0)),
}


def patch_mocap_welds() -> None:
  """Makes Meta-World's `reset_mocap_welds` write its 11 weld numbers into MuJoCo 3.17's 12-slot `eq_data` rows
  (module docstring); idempotent."""
  import mujoco
  from metaworld.sawyer_xyz_env import SawyerMocapBase

  def reset_mocap_welds(self: Any) -> None:
    if self.model.nmocap > 0 and self.model.eq_data is not None:
      for i in range(self.model.eq_data.shape[0]):
        if self.model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
          self.model.eq_data[i, :len(_WELD_DATA)] = _WELD_DATA

  SawyerMocapBase.reset_mocap_welds = reset_mocap_welds


def _metaworld() -> Any:
  try:
    import metaworld
  except ImportError as e:
    raise VidrlError('Meta-World is not installed; run `bash scripts/setup.sh`, which installs metaworld with '
                     '--no-deps beside mujoco 3.17.') from e
  return metaworld


def task_names() -> tuple[str, ...]:
  """Every Meta-World v3 task name."""
  _metaworld()
  from metaworld.env_dict import ALL_V3_ENVIRONMENTS
  return tuple(ALL_V3_ENVIRONMENTS)


def make_sawyer_env(name: str) -> Any:
  """Meta-World's own env for v3 task `name`, goal visible, positions set by each `MetaWorldEnv.reset`."""
  names = task_names()
  if name not in names:
    raise VidrlError(f'Unknown Meta-World task {name!r}; use a v3 task name such as push-v3, door-open-v3 or '
                     f'drawer-open-v3 (all: vidrl_jax.envs.metaworld.task_names()).')
  from metaworld.env_dict import ALL_V3_ENVIRONMENTS
  patch_mocap_welds()
  env = ALL_V3_ENVIRONMENTS[name]()
  env._partially_observable = False     # as MT1's tasks: the goal position is part of the observation
  del env.sawyer_observation_space      # a cached property that depends on it
  env._set_task_called = True
  env._freeze_rand_vec = False          # positions drawn at each reset from `env.np_random`, which reset seeds
  env.seeded_rand_vec = True
  return env


def apply_domain(model: Any, domain: Domain) -> None:
  """Recolours and relights `model` for `domain` (rendering fields only; see `Domain`)."""
  import mujoco
  body = lambda name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
  material = lambda name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_MATERIAL, name)
  robot_root, scenery = model.body_rootid[body('base')], {body(n) for n in _SCENERY}
  object_materials = set()
  for g in range(model.ngeom):
    root, mat, rgb = model.body_rootid[model.geom_bodyid[g]], model.geom_matid[g], model.geom_rgba[g, :3]
    if root == robot_root and mat < 0:
      new = domain.arm_rgb if np.ptp(rgb) > 0.1 else domain.arm_grey_rgb
      if new is not None:
        model.geom_rgba[g, :3] = new
    elif root != robot_root and root not in scenery:   # a task object: its own colour and its material's
      model.geom_rgba[g, :3] = _object_rgb(rgb, domain)
      if mat >= 0:
        object_materials.add(int(mat))
  for mat in object_materials:
    model.mat_rgba[mat, :3] = _object_rgb(model.mat_rgba[mat, :3], domain)
  table = model.geom_matid[model.body_geomadr[body('tablelink')]]
  model.mat_rgba[table, :3] = domain.table_rgb
  if domain.table_texture is not None:
    model.mat_texid[table] = model.mat_texid[material(domain.table_texture)]
  model.mat_rgba[model.geom_matid[0], :3] = domain.floor_rgb   # geom 0: the floor
  if domain.light_diffuse is not None:
    model.light_diffuse[:] = domain.light_diffuse
  if domain.headlight_ambient is not None:
    model.vis.headlight.ambient[:] = domain.headlight_ambient


def _object_rgb(rgb: np.ndarray, domain: Domain) -> np.ndarray:
  return np.clip(np.asarray(rgb)[list(domain.object_perm)] * np.asarray(domain.object_gain), 0.0, 1.0)


class MetaWorldEnv(EpisodeLimit):
  """Meta-World v3 task `name` as a `HostEnv`; see the module docstring."""

  def __init__(self, name: str, *, image_size: int = 0, domain: str = 'none', reward: str = 'sparse',
               max_steps: int = 200, camera: str | None = None, layout_seed: int | None = None):
    if domain not in DOMAINS:
      raise VidrlError(f'Unknown domain {domain!r}; use one of {", ".join(DOMAINS)}.')
    if reward not in REWARDS:
      raise VidrlError(f'Unknown reward {reward!r}; use one of {", ".join(REWARDS)}.')
    if max_steps < 1:
      raise VidrlError(f'max_steps must be at least 1, got {max_steps}.')
    if image_size < 0:
      raise VidrlError(f'image_size must be 0 (no image) or a positive size in pixels, got {image_size}.')
    self.name = name if domain == 'none' else f'{name}/{domain}'
    self.task, self.domain, self.reward, self.image_size = name, domain, reward, int(image_size)
    self.max_steps, self.action_dim, self.layout_seed = int(max_steps), 4, layout_seed
    self.obs_spec: ObsSpec = {'state': ((STATE_DIM,), np.dtype(np.float32))}
    self._env = make_sawyer_env(name)
    self._env.max_path_length = max(self._env.max_path_length, self.max_steps)
    self._renderer = None
    if self.image_size:
      self.obs_spec['image'] = ((self.image_size, self.image_size, 3), np.dtype(np.uint8))
      self._camera, self._rotate = self._make_camera(camera)
      apply_domain(self._env.model, DOMAINS[domain])
      self._renderer = OffscreenRenderer(self._env.model, self.image_size, self.image_size)

  def _make_camera(self, camera: str | None) -> tuple[Any, bool]:
    """The MjvCamera to render with, and whether its frames need a 180-degree turn (module docstring)."""
    import mujoco
    view = DOMAINS[self.domain].camera
    if camera is None and view is not None:
      return free_camera(*view), False
    cam = fixed_camera(self._env.model, 'corner' if camera is None else camera)
    mujoco.mj_forward(self._env.model, self._env.data)
    up = self._env.data.cam_xmat[cam.fixedcamid].reshape(3, 3)[:, 1]
    return cam, bool(up[2] < 0)

  @property
  def sawyer_env(self) -> Any:
    """Meta-World's own env (for its scripted policies and info dicts)."""
    return self._env

  def render(self) -> np.ndarray:
    """The current frame, (size, size, 3) uint8."""
    if self._renderer is None:
      raise VidrlError(f'{self.name} renders no images; make it with image_size > 0.')
    frame = self._renderer.render(self._env.data, self._camera)
    return frame[::-1, ::-1].copy() if self._rotate else frame

  def _obs(self, state: np.ndarray) -> dict[str, np.ndarray]:
    obs = {'state': np.asarray(state, np.float32)}
    if self._renderer is not None:
      obs['image'] = self.render()
    return obs

  def reset(self, seed: int) -> dict[str, np.ndarray]:
    """Starts an episode with object and goal positions drawn from `seed` (or `layout_seed`)."""
    self._env.np_random = np.random.default_rng(int(seed if self.layout_seed is None else self.layout_seed))
    state, _ = self._env.reset()
    self._start()
    return self._obs(state)

  def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool]:
    action = self._check_action(action)
    state, reward, _, _, info = self._env.step(action)
    return self._obs(state), float(info['success']) if self.reward == 'sparse' else float(reward), False

  def close(self) -> None:
    if self._renderer is not None:
      self._renderer.close()


__all__ = ['CAMERAS', 'DOMAINS', 'Domain', 'MetaWorldEnv', 'REWARDS', 'STATE_DIM', 'apply_domain', 'make_sawyer_env',
           'patch_mocap_welds', 'task_names']
