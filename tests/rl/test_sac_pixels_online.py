"""Pixel SAC as an online stage of the shared loop (`offpolicy.sac_task` with an image key): it learns a colour
task only the image solves, greedy evaluation sees the image, and a killed run resumes bit for bit with the uint8
images of its replay file."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vidrl_jax.data.replay import ReplayBuffer
from vidrl_jax.envs.host import BatchEnv
from vidrl_jax.errors import VidrlError
from vidrl_jax.rl import offpolicy, sac
from vidrl_jax.train import MetricWriter, loop_config, run

RED, BLUE = (220, 20, 20), (20, 20, 220)


class ColourEnv:
  """`max_steps` decisions, each on a new 12x12 noise image with a red or a blue 6x6 square in the middle (colours
  and noise drawn from the reset seed) and a clock; reward -(a - target)^2 with target -0.6 for red, +0.6 for
  blue. Terminal after the last decision or one off its target by more than 1.3. Only the image tells the
  targets apart: a constant action scores at best -0.36 per decision, uniform random actions -0.69."""
  name = "colour"
  obs_spec = {"image": ((12, 12, 3), np.uint8), "clock": ((1,), np.float32)}
  action_dim = 1

  def __init__(self, max_steps: int = 1):
    self.max_steps = max_steps

  def reset(self, seed):
    r = np.random.default_rng(seed)
    self.colours = r.integers(0, 2, self.max_steps)
    self.noise = r.integers(0, 40, (self.max_steps, 12, 12, 3)).astype(np.uint8)
    self.t = 0
    return self._obs()

  def _obs(self):
    i = min(self.t, self.max_steps - 1)
    image = self.noise[i].copy()
    image[3:9, 3:9] = RED if self.colours[i] == 0 else BLUE
    return {"image": image, "clock": np.asarray([self.t / self.max_steps], np.float32)}

  def step(self, action):
    error = float(np.asarray(action).reshape(-1)[0]) - (-0.6 if self.colours[self.t] == 0 else 0.6)
    self.t += 1
    return self._obs(), -error ** 2, self.t == self.max_steps or abs(error) > 1.3


def _config(**settings):
  c = dict(actor_hidden=(32, 32), critic_hidden=(32, 32), actor_lr=3e-3, critic_lr=3e-3, alpha_lr=3e-3,
           encoder_filters=(8,), encoder_kernel=3, augment_pad=2, batch_size=32, train_every=4, updates_per_step=2.0)
  return sac.sac_config(**{**c, **settings})


def test_pixel_sac_learns_the_colour_task_through_the_loop(tmp_path):
  config = _config(random_steps=32, num_episodes=240, checkpoint_every_episodes=0, eval_every_episodes=240,
                   eval_episodes=16)
  task = offpolicy.sac_task("pix", ColourEnv(), ["image"], config, seed=0, eval_env=ColourEnv())
  state, summary = run(task, loop_config(progress=False), str(tmp_path), MetricWriter(str(tmp_path)), seed=0)
  assert state.encoder_params is not None and int(state.step) == (240 - 32 + 4) // 4 * 8
  replay = task.collector.replay
  assert set(replay.obs_spec) == {"image"} and replay.state_dict()["obs/image"].dtype == np.uint8
  # Far above uniform random actions (-0.69) and above the best action blind to the colour (-0.36).
  assert summary["eval/mean_return"] > -0.1 and summary["last10_return"] > -0.36, summary
  # The greedy host policy on a batch of observations (run_episodes' protocol) acts as on each alone.
  env = BatchEnv([ColourEnv(), ColourEnv(), ColourEnv()])
  obs = env.reset([1, 2, 3])
  policy = offpolicy.greedy_policy(sac.policy_params(state), ["image"], config, 1)
  batched, _ = policy.act(policy.init(3), obs, np.ones(3, bool))
  alone = [policy.act(policy.init(1), {k: v[i:i + 1] for k, v in obs.items()}, np.ones(1, bool))[0][0]
           for i in range(3)]
  np.testing.assert_allclose(batched, np.stack(alone), rtol=1e-5, atol=1e-6)
  target = np.where(obs["image"][:, 5, 5, 0] > 100, -0.6, 0.6)
  np.testing.assert_allclose(batched[:, 0], target, atol=0.3)


def test_pixel_sac_resume_equals_uninterrupted(tmp_path):
  """Image and clock (the encoder's image and vector parts), episodes of up to 5 decisions that may end early;
  killed mid-episode and rerun: agent, replay (uint8 images) and logs as an uninterrupted run's."""
  config = _config(batch_size=8, random_steps=12, num_episodes=6, checkpoint_every_episodes=2, replay_capacity=24,
                   eval_every_episodes=3, eval_episodes=2)
  stage = lambda: offpolicy.sac_task("pix", ColourEnv(5), ["clock", "image"], config, seed=3,
                                     eval_env=ColourEnv(5))
  wa, wb = MetricWriter(str(tmp_path / "a")), MetricWriter(str(tmp_path / "b"))
  full_task = stage()
  full, summary_a = run(full_task, loop_config(progress=False), str(tmp_path / "a"), wa, seed=3)
  b = str(tmp_path / "b")
  first, _ = run(stage(), loop_config(progress=False), b, wb, seed=3, stop_after=4)   # a logging step
  assert 0 < int(first.step) < int(full.step)
  with np.load(os.path.join(b, "pix", "collector", "collector_4.npz")) as f:
    assert bool(f["collector/running"])   # killed mid-episode: resuming replays it from its seed
  resumed_task = stage()
  resumed, summary_b = run(resumed_task, loop_config(progress=False), b, wb, seed=3)

  assert full.encoder_params is not None
  for x, y in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(x, y)
  state_a, state_b = full_task.collector.state_dict(), resumed_task.collector.state_dict()
  assert set(state_a) == set(state_b) and state_a["replay/obs/image"].dtype == np.uint8
  assert state_a["replay/obs/state"].shape[1:] == (1,) and list(state_a["replay/size"]) == [24]   # ring wrapped
  for k in state_a:
    np.testing.assert_array_equal(state_a[k], state_b[k])
  saved = sorted(os.listdir(os.path.join(b, "pix", "collector")))
  with np.load(os.path.join(b, "pix", "collector", saved[-1])) as f:
    assert f["replay/obs/image"].dtype == np.uint8
    np.testing.assert_array_equal(f["replay/obs/image"], state_a["replay/obs/image"])
  assert summary_a == summary_b and "eval/mean_return" in summary_a and summary_a["episodes"] >= 6
  rows_a, rows_b = wa.rows("pix"), wb.rows("pix")
  assert [(r["step"], r.get("episode_return"), r.get("critic_loss"), r.get("eval/mean_return")) for r in rows_a] == \
      [(r["step"], r.get("episode_return"), r.get("critic_loss"), r.get("eval/mean_return")) for r in rows_b]


def test_extra_source_reaches_the_aux_relabel(tmp_path):
  """RLV's shape: a fixed action-free pool of images beside the interaction replay, 8 + 4 per update; the aux
  relabel receives the pool's draws (uint8 images, as SAC sees them) and appends them to the SAC batch."""
  pool = ReplayBuffer(40, {"state": ((1,), np.float32), "image": ((12, 12, 3), np.uint8)}, rewards=False)
  env = ColourEnv(5)
  frames = [env.reset(7)] + [env.step(np.zeros(1))[0] for _ in range(5)]
  pool.add_episode({"obs": {"image": np.stack([f["image"] for f in frames]),
                            "state": np.stack([f["clock"] for f in frames])}})

  def relabel(params, encode, batch, rng):   # the observation half with zero actions and rewards (RLV's Eq. 2 aside)
    video, n = batch["video"], batch["video"]["discount"].shape[0]
    join = lambda a, b: jnp.concatenate([a, b], axis=0)
    return dict(obs=jax.tree.map(join, batch["obs"], video["obs"]),
                next_obs=jax.tree.map(join, batch["next_obs"], video["next_obs"]),
                action=join(batch["action"], jnp.zeros((n, 1))), reward=join(batch["reward"], jnp.zeros(n)),
                discount=join(batch["discount"], video["discount"]),
                video_uint8=jnp.float32(video["obs"]["image"].dtype == jnp.uint8))

  def loss(params, encode, batch, rng):
    feat = encode(batch["obs"])
    return {"probe": jnp.square(feat @ params["w"])}, {"rows": jnp.float32(feat.shape[0]),
                                                        "video_uint8": batch["video_uint8"]}
  aux = sac.Aux(init=lambda rng, feat, a: {"w": jnp.zeros((feat.shape[-1],))}, loss=loss, weights={"probe": 0.0},
                optimizer=optax.sgd(0.0), relabel=relabel)
  config = _config(batch_size=8, random_steps=8, num_episodes=3, checkpoint_every_episodes=0)
  task = offpolicy.sac_task("pix", ColourEnv(5), ["clock", "image"], config, seed=0, aux=aux,
                            extra_sources={"video": (pool, 4)})
  writer = MetricWriter(str(tmp_path))
  state, _ = run(task, loop_config(progress=False), str(tmp_path), writer, seed=0)
  rows = [r for r in writer.rows("pix") if "aux/rows" in r]
  assert int(state.step) > 0 and rows and all(r["aux/rows"] == 12 and r["aux/video_uint8"] == 1 for r in rows)
  with pytest.raises(VidrlError, match="clash"):
    offpolicy.sac_task("pix", ColourEnv(5), ["image"], config, seed=0, extra_sources={"obs": (pool, 4)})


def test_image_obs_keys_errors_are_one_sentence():
  env = ColourEnv()
  assert offpolicy.obs_spec(env, ["clock", "image"], "image") == {
      "state": ((1,), np.float32), "image": ((12, 12, 3), np.dtype(np.uint8))}
  cases = ((_config(image_key="pixels"), ["clock", "image"], "one image under image_key 'pixels'"),
           (_config(image_key="clock"), ["clock"], r"must have shape \(H, W, C\)"),
           (_config(image_key="state"), ["state", "image"], "obs_keys"))
  for config, keys, match in cases:
    with pytest.raises(VidrlError, match=match) as err:
      offpolicy.sac_task("pix", env, keys, config, seed=0)
    assert str(err.value).count(". ") == 0 and "\n" not in str(err.value)
