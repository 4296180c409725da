"""Offscreen rendering of raw `mujoco` models (Meta-World) for host envs, fast in software rendering.

  renderer = OffscreenRenderer(model, height=48, width=48)   # made before the first frame: fast settings apply
  frame = renderer.render(data, fixed_camera(model, 'corner'))                  # (48, 48, 3) uint8, top row first
  frame = renderer.render(data, free_camera(lookat=(0, 0.6, 0.1), distance=1.4, azimuth=135, elevation=-30))

Why not `mujoco.Renderer`: each one owns a GL context, and its `close` (also run by `__del__`) frees its GL objects
without making its own context current first, so they are freed in whichever context is current: with two
renderers alive, garbage-collecting one wipes the other's framebuffer and textures (measured with mujoco 3.17 on
EGL: the second renderer's frames differ from the first's by 86 grey levels on average after `del`, by 0 without
it). Here every renderer shares one process-wide GL context, made on first use from `MUJOCO_GL` (e.g. `egl`), and
owns only its `MjrContext`, freed with that context current.

Fast rendering (as `vidrl_jax.envs.dmc` does for DeepMind Control): anti-aliasing off (`vis.quality.offsamples =
0`, read when the `MjrContext` is made, so the renderer is made before the first frame) and the scene's shadow and
reflection flags off. In MuJoCo's software renderer (Mesa's llvmpipe under EGL) they cost most of the time
(../shared/FACTS.md: Meta-World 64x64 frames 7/s with the defaults, 122/s without them).
"""

from __future__ import annotations

import atexit
from typing import Any, Sequence

import numpy as np

from vidrl_jax.errors import VidrlError

_GL: Any = None   # the process-wide GL context (see the module docstring)
_EXITING = False  # set at interpreter exit, when the GL library may be gone: nothing is freed then


def _at_exit() -> None:
  global _EXITING
  _EXITING = True


def _make_current() -> None:
  """Makes the shared GL context current, creating it on first use."""
  global _GL
  if _GL is None:
    import mujoco

    class SharedContext(mujoco.GLContext):
      """Left to the operating system at exit: another library's exit hook (dm_control's) may have terminated the
      EGL display by then, and freeing would fail."""

      def __del__(self) -> None:
        if not _EXITING:
          getattr(super(), '__del__', lambda: None)()

    _GL = SharedContext(64, 64)   # offscreen rendering draws into the MjrContext's framebuffer, not this size
    atexit.register(_at_exit)
  _GL.make_current()


def _gl_error(e: Exception) -> VidrlError:
  return VidrlError(f'MuJoCo could not render ({type(e).__name__}: {e}); set MUJOCO_GL=egl (or osmesa) before '
                    'Python starts, or render no images.')


def fixed_camera(model: Any, name: str) -> Any:
  """An `MjvCamera` that views through the model's camera `name`."""
  import mujoco
  cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
  if cam_id < 0:
    names = [model.camera(i).name for i in range(model.ncam)]
    raise VidrlError(f'the model has no camera {name!r}; use one of {names}.')
  cam = mujoco.MjvCamera()
  cam.type, cam.fixedcamid = mujoco.mjtCamera.mjCAMERA_FIXED, cam_id
  return cam


def free_camera(lookat: Sequence[float], distance: float, azimuth: float, elevation: float) -> Any:
  """An `MjvCamera` at `distance` from `lookat`, looking along azimuth / elevation (degrees): its viewing direction
  is (cos az cos el, sin az cos el, sin el), so elevation < 0 looks down; image up is the world's up."""
  import mujoco
  cam = mujoco.MjvCamera()
  cam.type = mujoco.mjtCamera.mjCAMERA_FREE
  cam.lookat[:] = lookat
  cam.distance, cam.azimuth, cam.elevation = distance, azimuth, elevation
  return cam


class OffscreenRenderer:
  """Renders RGB frames of one model's data, sharing the process-wide GL context (module docstring)."""

  def __init__(self, model: Any, height: int, width: int, fast: bool = True):
    import mujoco
    if height < 1 or width < 1:
      raise VidrlError(f'frames need a positive size, got {height}x{width}.')
    self.model, self.height, self.width = model, int(height), int(width)
    if fast:
      model.vis.quality.offsamples = 0
    model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), self.width)
    model.vis.global_.offheight = max(int(model.vis.global_.offheight), self.height)
    try:   # without a usable GL backend the context or MjrContext fails, with the backend's own error type
      _make_current()
      self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
    except Exception as e:  # noqa: BLE001
      raise _gl_error(e) from e
    self._scene = mujoco.MjvScene(model, maxgeom=10_000)
    if fast:
      self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
      self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
    self._option, self._perturb = mujoco.MjvOption(), mujoco.MjvPerturb()
    self._viewport = mujoco.MjrRect(0, 0, self.width, self.height)
    self._rgb = np.zeros((self.height, self.width, 3), np.uint8)

  def render(self, data: Any, camera: Any) -> np.ndarray:
    """A (height, width, 3) uint8 frame of `data` seen by `camera` (an `MjvCamera`), top row first."""
    import mujoco
    if self._ctx is None:
      raise VidrlError('render was called after close; make a new OffscreenRenderer.')
    _make_current()
    mujoco.mjv_updateScene(self.model, data, self._option, self._perturb, camera, mujoco.mjtCatBit.mjCAT_ALL,
                           self._scene)
    mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
    mujoco.mjr_render(self._viewport, self._scene, self._ctx)
    mujoco.mjr_readPixels(self._rgb, None, self._viewport, self._ctx)
    return self._rgb[::-1].copy()   # OpenGL reads the bottom row first

  def close(self) -> None:
    """Frees the GL objects of this renderer in the shared context (they belong to it)."""
    if getattr(self, '_ctx', None) is not None and not _EXITING:
      _make_current()
      self._ctx.free()
      self._ctx = None

  def __del__(self) -> None:
    self.close()


__all__ = ['OffscreenRenderer', 'fixed_camera', 'free_camera']
