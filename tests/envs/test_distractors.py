"""The distractor wrapper: random-walking dots (MinAtar channels) and squares (RGB) the agent does not control."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.envs import env_config, make_env
from vidrl_jax.envs.base import VecEnv
from vidrl_jax.envs.distractors import with_distractors
from vidrl_jax.errors import VidrlError

N, T = 4, 40


def _run(env, actions, seed=0):
  """Steps `env` through `actions` (T, N) with keys split from `seed` in one scan: (obs (T+1, ...), done, final_obs,
  states (T, ...))."""
  state, obs0 = env.reset(jax.random.key(seed))

  def body(state, x):
    state, obs, _, done, info = env.step(state, *x)
    return state, (obs, done, info["final_obs"], state)

  keys = jax.random.split(jax.random.key(seed + 1), len(actions))
  _, (obs, done, final, states) = jax.jit(lambda s, a: jax.lax.scan(body, s, (a, keys)))(state, jnp.asarray(actions))
  return np.concatenate([np.asarray(obs0)[None], np.asarray(obs)]), np.asarray(done), np.asarray(final), states


def _torus_step(a, b, size):
  """Largest per-axis distance between positions a and b on a torus of `size` cells."""
  d = np.abs(a - b)
  return np.minimum(d, size - d).max(-1)


def _breakout(**distractors):
  return make_env(env_config("gymnax", "Breakout-MinAtar", N, params=dict(max_steps_in_episode=15),
                             distractors=distractors or None))


def test_dots_leave_the_game_alone_and_random_walk_independently_per_copy():
  plain, env = _breakout(), _breakout(kind="dots", num=3, channels=2)
  c = plain.obs_shape[-1]
  assert env.obs_shape == plain.obs_shape[:2] + (c + 2,)
  actions = np.random.default_rng(0).integers(0, plain.num_actions, (T, N))
  obs, done, final, states = _run(env, actions)
  ref_obs, ref_done, ref_final, _ = _run(plain, actions)
  np.testing.assert_array_equal(obs[..., :c], ref_obs)          # the game's own channels, as without the wrapper
  np.testing.assert_array_equal(final[..., :c], ref_final)
  np.testing.assert_array_equal(done, ref_done)
  assert done.any()                                             # 15-step episodes: resets happen within T
  pos = np.asarray(states.pos)                                  # (T, N, 3, 2)
  # the extra channels show exactly the dots: dot i lights its cell in channel i % 2
  for t in range(T):
    for n in range(N):
      lit = np.zeros((10, 10, 2), bool)
      for i, (r, q) in enumerate(pos[t, n]):
        lit[r, q, i % 2] = True
      np.testing.assert_array_equal(obs[t + 1, n, :, :, c:] == 255, lit)
  # between resets each dot moves at most one cell per axis (wrapping), and they do move
  step = _torus_step(pos[1:], pos[:-1], 10)                     # (T-1, N, 3)
  keep = ~done[1:]
  assert (step[keep] <= 1).all() and (step[keep] > 0).mean() > 0.5
  # where a copy's episode ends its dots are placed afresh: most jump further than one cell
  assert (step[done[1:]] > 1).mean() > 0.5
  # the copies' dots differ
  assert (pos[:, 0] != pos[:, 1]).any((-1, -2)).all()


def test_dots_do_not_depend_on_the_actions():
  env = _breakout(kind="dots", num=3)
  rng = np.random.default_rng(1)
  obs_a, done_a, _, states_a = _run(env, np.zeros((T, N), np.int32))
  obs_b, done_b, _, states_b = _run(env, rng.integers(0, env.num_actions, (T, N)))
  assert not np.array_equal(obs_a[..., :-1], obs_b[..., :-1])     # the actions did change the game
  # before either run's first episode end, the distractors are the same whatever the actions
  first = int(np.argmax((done_a | done_b).any(1))) if (done_a | done_b).any() else T
  assert first >= 5
  np.testing.assert_array_equal(np.asarray(states_a.pos)[:first], np.asarray(states_b.pos)[:first])
  np.testing.assert_array_equal(obs_a[:first + 1, ..., -1], obs_b[:first + 1, ..., -1])


def _blank_rgb(num_envs=3, end_every=4):
  """A fake RGB VecEnv: black 8x8 frames, every episode `end_every` steps long."""
  zeros = jnp.zeros((num_envs, 8, 8, 3), jnp.uint8)

  def reset(rng):
    return jnp.zeros((num_envs,), jnp.int32), zeros

  def step(t, action, rng):
    t = t + 1
    done = t % end_every == 0
    info = {"terminated": done, "final_obs": zeros}
    return jnp.where(done, 0, t), zeros, jnp.zeros((num_envs,)), done, info

  return VecEnv("blank", num_envs, (8, 8, 3), np.dtype(np.uint8), 2, (), reset, step)


def test_squares_paint_rgb_frames_and_change_colour_each_episode():
  env = with_distractors(_blank_rgb(), "squares", num=2, size=3, speed=2)
  assert env.obs_shape == (8, 8, 3)
  obs, done, final, states = _run(env, np.zeros((12, 3), np.int32))
  pos, colour = np.asarray(states.pos), np.asarray(states.colour)
  for t in range(12):
    for n in range(3):
      painted = np.zeros((8, 8), bool)
      for r, q in pos[t, n]:
        assert 0 <= r <= 5 and 0 <= q <= 5                      # squares stay inside the frame
        painted[r:r + 3, q:q + 3] = True
      np.testing.assert_array_equal(obs[t + 1, n].any(-1), painted)
      r, q = pos[t, n, 1]                                       # the last square is painted over the first
      assert (obs[t + 1, n, r:r + 3, q:q + 3] == colour[t, n, 1]).all()
  assert done[3].all() and not done[:3].any()
  assert (colour[3] != colour[2]).any() and (colour[2] == colour[1]).all()
  # the ended episode's last frame shows its own squares, not the next episode's
  assert final[3].any() and not np.array_equal(final[3], obs[4])
  np.testing.assert_array_equal(final[2], obs[3])               # no episode end: the frame the step returns


def test_make_env_builds_distractors_from_the_config_and_rejects_bad_values():
  cfg = env_config("gymnax", "Breakout-MinAtar", 2)
  assert cfg.distractors.kind == "none" and make_env(cfg).obs_shape == (10, 10, 4)
  cfg.distractors.kind, cfg.distractors.channels = "dots", 3
  assert make_env(cfg).obs_shape == (10, 10, 7)
  env = make_env(env_config("gymnax", "CartPole-v1", 2))        # no distractors: vector envs still work
  assert env.obs_shape == (4,)
  bad = [(dict(kind="stripes"), "Unknown distractor kind"), (dict(kind="squares"), "paints RGB frames"),
         (dict(kind="dots", size=11), "size must lie in"), (dict(kind="dots", num=0), "at least 1")]
  for distractors, message in bad:
    with pytest.raises(VidrlError, match=message):
      make_env(env_config("gymnax", "Breakout-MinAtar", 2, distractors=distractors))
  with pytest.raises(VidrlError, match="uint8 image frames"):
    make_env(env_config("gymnax", "CartPole-v1", 2, distractors=dict(kind="dots")))
  with pytest.raises(VidrlError, match="Unknown distractor config field"):
    env_config("gymnax", "Breakout-MinAtar", 2, distractors=dict(kind="dots", speeed=2))
  legacy = env_config("gymnax", "Breakout-MinAtar", 2)
  del legacy["distractors"]                                     # a config written before distractors existed
  assert make_env(legacy).obs_shape == (10, 10, 4)
  assert dataclasses.is_dataclass(make_env(cfg))
