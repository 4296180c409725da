"""Distractors: moving noise the agent does not control, painted into an image env's frames (any `VecEnv`).

LAOM (Nikulin et al. 2025, dunnolab/laom) found that latent action models trained on next-frame prediction put
whatever moves unpredictably into the latent action, so distractors crowd out the agent's own action. This
wrapper makes such a version of any image domain. Each copy carries `num` distractors that random-walk: every
step each moves by an offset drawn uniformly from {-speed..speed} per axis, wrapping around the frame, so their
motion cannot be predicted from past frames and a forward model can only explain it through its latent. They are
drawn from the step's rng alone (never from the action), independently per copy, and re-placed at random when
that copy's episode ends.

  kind='dots'    (binary channel frames, MinAtar): `channels` extra 0/255 channels are appended; distractor i
                 lights a `size` x `size` square of channel i % channels, so the game's own channels are unchanged
                 and `obs_shape` gains `channels` channels.
  kind='squares' (RGB frames, Procgen): `size` x `size` squares of a random colour (drawn at each episode start)
                 are painted over the frame, later ones over earlier ones; `obs_shape` is unchanged.

The inner env is stepped with the same rng it would get unwrapped (the distractors use `fold_in(rng, 1)`), so the
game itself behaves exactly as without the wrapper; `info['final_obs']`, where the env gives it, is painted with
the distractors of the step that ended the episode.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from vidrl_jax.envs.base import VecEnv
from vidrl_jax.errors import VidrlError

KINDS = ('none', 'dots', 'squares')
DEFAULTS = dict(kind='none', num=4, size=1, speed=1, channels=1)


def distractor_config(kind: str = 'none', **kw) -> ml_collections.ConfigDict:
  """The `env.distractors` sub-config with every field present (see the module docstring for each field)."""
  unknown = sorted(set(kw) - set(DEFAULTS))
  if unknown:
    raise VidrlError(f'Unknown distractor config field(s) {unknown}; the fields are {", ".join(DEFAULTS)}.')
  return ml_collections.ConfigDict({**DEFAULTS, **kw, 'kind': kind})


@struct.dataclass
class DistractorState:
  inner: object          # the wrapped env's state
  pos: jax.Array         # (N, num, 2) int32, top-left corner (row, column) of each distractor
  colour: jax.Array      # (N, num, 3) uint8 ('squares'; zeros for 'dots')


def _check(env: VecEnv, kind: str, num: int, size: int, speed: int, channels: int) -> None:
  if len(env.obs_shape) != 3 or np.dtype(env.obs_dtype) != np.uint8:
    raise VidrlError(f'Distractors need uint8 image frames (H, W, C) but {env.name} gives {env.obs_dtype} '
                     f'{env.obs_shape}; use an image domain or distractors.kind=none.')
  h, w, c = env.obs_shape
  if kind == 'squares' and c != 3:
    raise VidrlError(f"Distractor kind 'squares' paints RGB frames but {env.name} has {c} channels; use "
                     f"kind='dots' for channel frames such as MinAtar's.")
  if num < 1 or speed < 1 or channels < 1:
    raise VidrlError(f'Distractors need num, speed and channels of at least 1, got num={num}, speed={speed}, '
                     f'channels={channels}.')
  if not 1 <= size <= min(h, w):
    raise VidrlError(f'Distractor size must lie in [1, {min(h, w)}] for {h}x{w} frames, got {size}.')


def with_distractors(env: VecEnv, kind: str = 'none', num: int = 4, size: int = 1, speed: int = 1,
                     channels: int = 1) -> VecEnv:
  """`env` with `num` random-walking distractors per copy (module docstring); `kind='none'` returns `env`."""
  if kind not in KINDS:
    raise VidrlError(f'Unknown distractor kind {kind!r}; use one of {", ".join(KINDS)}.')
  if kind == 'none':
    return env
  _check(env, kind, num, size, speed, channels)
  h, w, c = env.obs_shape
  span = jnp.array([h - size + 1, w - size + 1], jnp.int32)     # the corners that keep a square in the frame
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]

  def place(rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Fresh positions and colours for `num_envs` copies: (N, num, 2), (N, num, 3)."""
    r_pos, r_col = jax.random.split(rng)
    pos = jax.random.randint(r_pos, (env.num_envs, num, 2), 0, span)
    colour = jax.random.randint(r_col, (env.num_envs, num, 3), 0, 256).astype(jnp.uint8)
    return pos, colour if kind == 'squares' else jnp.zeros_like(colour)

  def masks(pos: jax.Array) -> jax.Array:
    """(N, num, 2) corners -> (N, num, H, W) bool squares."""
    r, q = pos[..., 0, None, None], pos[..., 1, None, None]
    return (rows >= r) & (rows < r + size) & (cols >= q) & (cols < q + size)

  def paint(obs: jax.Array, pos: jax.Array, colour: jax.Array) -> jax.Array:
    m = masks(pos)
    if kind == 'dots':
      lit = jnp.stack([m[:, i::channels].any(1) for i in range(channels)], -1)   # distractor i -> i % channels
      return jnp.concatenate([obs, jnp.where(lit, 255, 0).astype(jnp.uint8)], -1)
    for i in range(num):                                                      # later squares over earlier ones
      obs = jnp.where(m[:, i, :, :, None], colour[:, i, None, None, :], obs)
    return obs

  def reset(rng: jax.Array):
    inner, obs = env.reset(rng)
    pos, colour = place(jax.random.fold_in(rng, 1))
    return DistractorState(inner, pos, colour), paint(obs, pos, colour)

  def step(state: DistractorState, action: jax.Array, rng: jax.Array):
    inner, obs, reward, done, info = env.step(state.inner, action, rng)
    r_move, r_new = jax.random.split(jax.random.fold_in(rng, 1))
    moved = jnp.mod(state.pos + jax.random.randint(r_move, state.pos.shape, -speed, speed + 1), span)
    if 'final_obs' in info:
      info = {**info, 'final_obs': paint(info['final_obs'], moved, state.colour)}
    new_pos, new_colour = place(r_new)
    pos = jnp.where(done[:, None, None], new_pos, moved)
    colour = jnp.where(done[:, None, None], new_colour, state.colour)
    return DistractorState(inner, pos, colour), paint(obs, pos, colour), reward, done, info

  shape = (h, w, c + channels) if kind == 'dots' else env.obs_shape
  return dataclasses.replace(env, name=f'{env.name}/{kind}', obs_shape=shape, reset=reset, step=step)


def from_config(env: VecEnv, config: ml_collections.ConfigDict | None) -> VecEnv:
  """`with_distractors` from an `env.distractors` sub-config (None: no distractors)."""
  if config is None:
    return env
  unknown = sorted(set(config.keys()) - set(DEFAULTS))
  if unknown:
    raise VidrlError(f'Unknown distractor config field(s) {unknown}; the fields are {", ".join(DEFAULTS)}.')
  c = {**DEFAULTS, **config.to_dict()}
  return with_distractors(env, str(c['kind']), int(c['num']), int(c['size']), int(c['speed']),
                          int(c['channels']))
