"""The replay buffer: row layout and transitions by hand, dict observations with uint8 images, the ring, windows
that never cross an episode, exact save/load, and the one fixed-share sampler (`mix.Sampler`) over replays."""

import numpy as np
import pytest

from vidrl_jax.data.mix import Sampler
from vidrl_jax.data.replay import ReplayBuffer
from vidrl_jax.errors import VidrlError

SPEC = {"state": ((2,), np.float32), "image": ((4, 4, 3), np.uint8)}


def _episode(first: float, n: int, terminal: bool = False, action_dim: int = 1) -> dict:
  """n rows: state_t = [first + t, episode marker]; action_t = reward_t = first + t (row 0's are ignored zeros)."""
  t = np.arange(n, dtype=np.float32)
  value = first + t
  image = np.broadcast_to((value % 256).astype(np.uint8)[:, None, None, None], (n, 4, 4, 3))
  ep = {"obs": {"state": np.stack([value, np.full(n, first)], -1), "image": image},
        "action": np.repeat(value[:, None], action_dim, 1) * (t[:, None] > 0), "reward": value * (t > 0)}
  if terminal:
    ep["is_terminal"] = t == n - 1
  return ep


def test_transitions_by_hand_and_uint8_images():
  buf = ReplayBuffer(capacity=10, obs_spec=SPEC, action_dim=1)
  buf.add_episode(_episode(0.0, 4, terminal=True))     # rows 0..3: transitions 0->1, 1->2, 2->3 (terminal)
  assert len(buf) == 4 and buf.num_transitions() == 3
  state = buf.state_dict()
  assert state["obs/image"].dtype == np.uint8 and state["obs/state"].dtype == np.float32
  np.testing.assert_array_equal(state["is_first"], [1, 0, 0, 0])
  np.testing.assert_array_equal(state["is_last"], [0, 0, 0, 1])
  b = Sampler({"replay": (buf, 50)}, seed=0).sample(0)["replay"]
  assert b["obs"]["image"].dtype == np.uint8 and b["next_obs"]["image"].shape == (50, 4, 4, 3)
  s = b["obs"]["state"][:, 0]
  np.testing.assert_array_equal(b["next_obs"]["state"][:, 0], s + 1)   # whole transitions
  np.testing.assert_array_equal(b["action"][:, 0], s + 1)               # the action taken in obs t led to t+1
  np.testing.assert_array_equal(b["reward"], s + 1)
  np.testing.assert_array_equal(b["discount"], np.where(s == 2, 0.0, 1.0))   # only into the terminal obs
  np.testing.assert_array_equal(b["is_last"], s == 2)
  np.testing.assert_array_equal(b["obs"]["image"][:, 0, 0, 0], s.astype(np.uint8))
  assert set(s) == {0, 1, 2}
  np.testing.assert_array_equal(buf.gather(np.arange(3))["obs"]["state"][:, 0], [0, 1, 2])   # ids in row order
  # Step by step gives the same rows as a whole episode; an episode cut by a time limit keeps discount 1.
  one = ReplayBuffer(capacity=10, obs_spec=SPEC, action_dim=1)
  ep = _episode(0.0, 4, terminal=True)
  for t in range(4):
    one.add({k: v[t] for k, v in ep["obs"].items()}, ep["action"][t], ep["reward"][t], is_first=t == 0,
            is_last=t == 3, is_terminal=t == 3)
  for k, v in buf.state_dict().items():
    np.testing.assert_array_equal(one.state_dict()[k], v)


def test_ring_drops_orphans_and_windows_never_cross_episodes():
  buf = ReplayBuffer(capacity=7, obs_spec=SPEC, action_dim=1)
  buf.add_episode(_episode(0.0, 4))
  buf.add_episode(_episode(10.0, 5))       # 9 rows into 7 slots: rows 0 and 1 of episode 0 are gone
  assert len(buf) == 7
  # Stored (oldest first): ep0 rows 2, 3 | ep1 rows 0..4. Transitions: 2->3 and ep1's 4 (row 2 of ep0 is orphaned).
  assert buf.num_transitions() == 5
  b = buf.gather(np.random.default_rng(1).integers(0, buf.population(), 200))
  pairs = set(zip(b["obs"]["state"][:, 0].tolist(), b["next_obs"]["state"][:, 0].tolist()))
  assert pairs == {(2.0, 3.0), (10.0, 11.0), (11.0, 12.0), (12.0, 13.0), (13.0, 14.0)}
  # Windows of 3: none in ep0's two rows, three in ep1.
  assert buf.num_windows(3) == 3 and buf.num_windows(2) == 5 and buf.num_windows(6) == 0
  w = buf.windows(3).gather(np.random.default_rng(2).integers(0, 3, (4, 25)))
  assert w["obs"]["state"].shape == (4, 25, 3, 2) and w["obs"]["image"].dtype == np.uint8
  marker = w["obs"]["state"][..., 1]
  assert np.all(marker == marker[..., :1])                             # one episode per window
  assert not w["is_first"][..., 1:].any()
  np.testing.assert_array_equal(np.diff(w["obs"]["state"][..., 0], axis=-1), 1.0)
  assert set(w["obs"]["state"][..., 0, 0].ravel()) == {10.0, 11.0, 12.0}
  with pytest.raises(VidrlError, match="no episode"):
    Sampler({"replay": (buf.windows(6), 1)}, seed=0).sample(0)


def test_save_load_is_exact(tmp_path):
  buf = ReplayBuffer(capacity=6, obs_spec=SPEC, action_dim=2)
  buf.add_episode(_episode(0.0, 4, action_dim=2))
  buf.add_episode(_episode(20.0, 3, terminal=True, action_dim=2))     # wraps the ring
  buf.save(str(tmp_path / "r.npz"), counter=np.int64(7))
  other = ReplayBuffer(capacity=6, obs_spec=SPEC, action_dim=2)
  assert other.load(str(tmp_path / "r.npz")) == {"counter": 7}
  for k, v in buf.state_dict().items():
    np.testing.assert_array_equal(other.state_dict()[k], v)
    assert other.state_dict()[k].dtype == v.dtype
  for b in (buf, other):
    b.add_episode(_episode(40.0, 2, action_dim=2))
  draw = lambda b: Sampler({"replay": (b, 9)}, seed=3).sample(0)["replay"]["obs"]["state"]
  np.testing.assert_array_equal(draw(buf), draw(other))
  np.testing.assert_array_equal(buf.newest_obs()["state"], [41.0, 40.0])
  with pytest.raises(VidrlError, match="does not fit"):
    ReplayBuffer(capacity=6, obs_spec={"state": ((3,), np.float32)}, action_dim=2).load(str(tmp_path / "r.npz"))


def test_two_source_sampler_shares_and_determinism():
  interaction = ReplayBuffer(capacity=100, obs_spec=SPEC, action_dim=1)
  interaction.add_episode(_episode(0.0, 30))
  observation = ReplayBuffer(capacity=100, obs_spec=SPEC, rewards=False)   # action-free video
  observation.add_episode({"obs": _episode(100.0, 30)["obs"]})
  sampler = Sampler({"interaction": (interaction, 6), "observation": (observation, 4)}, seed=5)
  a = sampler.sample(3, (2,))
  assert a["interaction"]["obs"]["state"].shape == (2, 6, 2) and a["observation"]["obs"]["state"].shape == (2, 4, 2)
  assert set(a["observation"]) == {"obs", "next_obs", "discount", "is_last"}   # no actions or rewards in video
  assert np.all(a["interaction"]["obs"]["state"][..., 1] == 0.0)      # each share from its own source
  assert np.all(a["observation"]["obs"]["state"][..., 1] == 100.0)
  again, other = sampler.sample(3, (2,)), sampler.sample(4, (2,))
  for src in a:
    np.testing.assert_array_equal(a[src]["obs"]["state"], again[src]["obs"]["state"])
  assert not np.array_equal(a["interaction"]["obs"]["state"], other["interaction"]["obs"]["state"])
  # Share i is the global draw of default_rng([seed, counter, i]) over the pool's ids, gathered by the pool.
  for i, (name, pool, share) in enumerate((("interaction", interaction, 6), ("observation", observation, 4))):
    ids = np.random.default_rng([5, 3, i]).integers(0, pool.num_transitions(), (2, share))
    np.testing.assert_array_equal(pool.gather(ids)["obs"]["state"], a[name]["obs"]["state"])
  # A one-pool sampler draws what default_rng([seed, counter]) draws (the SAC expert's batches are unchanged).
  one = Sampler({"replay": (interaction, 6)}, seed=5).sample(3, (2,))["replay"]
  ids = np.random.default_rng([5, 3]).integers(0, interaction.num_transitions(), (2, 6))
  np.testing.assert_array_equal(one["action"], interaction.gather(ids)["action"])
  # Process p of 2 takes the rows [..., 3p:3p+3] of the global draw (every leading axis kept).
  halves = [Sampler({"interaction": (interaction, 6), "observation": (observation, 4)}, seed=5, process_index=p,
                    process_count=2).sample(3, (2,)) for p in range(2)]
  for src in a:
    assert halves[0][src]["obs"]["state"].shape[:2] == (2, a[src]["obs"]["state"].shape[1] // 2)
    for k in ("state", "image"):
      np.testing.assert_array_equal(np.concatenate([h[src]["next_obs"][k] for h in halves], 1), a[src]["next_obs"][k])
  windows = Sampler({"interaction": (interaction.windows(4), 3), "observation": (observation.windows(4), 1)},
                    seed=5).sample(0)
  assert windows["interaction"]["obs"]["image"].shape == (3, 4, 4, 4, 3)
  assert windows["observation"]["obs"]["state"].shape == (1, 4, 2) and "action" not in windows["observation"]
  with pytest.raises(VidrlError, match="share"):
    Sampler({"interaction": (interaction, 0)}, seed=0)
  with pytest.raises(VidrlError, match="multiple of the process count"):
    Sampler({"interaction": (interaction, 3)}, seed=0, process_index=0, process_count=2)
  with pytest.raises(VidrlError, match="not pools"):
    Sampler({"interaction": (np.zeros(3), 3)}, seed=0)


def test_streams_keep_side_by_side_episodes_apart():
  """A vectorised env's copies write one row each per step into their own stream; episodes end at different times."""
  buf = ReplayBuffer(capacity=12, obs_spec={"state": ((2,), np.float32)}, action_dim=1, streams=2)
  assert buf.slots == 6
  for t in range(5):   # stream 0: one episode 0..4; stream 1: episodes of 2 rows (t = 0, 1 | 2, 3 | 4)
    buf.add({"state": np.array([[t, 0.0], [100 + t, 1.0]], np.float32)}, np.array([[t], [100 + t]], np.float32),
            np.array([t, 100 + t], np.float32), is_first=np.array([t == 0, t % 2 == 0]))
  buf.add({"state": np.array([[9.0, 1.0]], np.float32)}, np.array([[9.0]]), np.array([9.0]), streams=[1])
  assert len(buf) == 11 and list(buf._size) == [5, 6]
  # Stream 0: 4 transitions; stream 1: 0->1, 2->3, 4->9 (the extra row continues stream 1's last episode).
  assert buf.num_transitions() == 7
  b = buf.gather(np.random.default_rng(0).integers(0, buf.population(), 300))
  pairs = set(zip(b["obs"]["state"][:, 0].tolist(), b["next_obs"]["state"][:, 0].tolist()))
  assert pairs == {(0, 1), (1, 2), (2, 3), (3, 4), (100, 101), (102, 103), (104, 9)}
  np.testing.assert_array_equal(b["action"][:, 0], b["next_obs"]["state"][:, 0])
  assert buf.num_windows(3) == 3                 # only stream 0's episode is long enough
  w = Sampler({"windows": (buf.windows(2), 20)}, seed=1).sample(0)["windows"]
  assert np.all(w["obs"]["state"][..., 1] == w["obs"]["state"][..., :1, 1]) and not w["is_first"][:, 1].any()
  with pytest.raises(VidrlError, match="single-stream"):
    buf.add_episode(_episode(0.0, 3))
