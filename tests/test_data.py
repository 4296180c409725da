"""Frame datasets: the window sampler never crosses an episode or a shard; bad shards give one clear error."""

import os

import numpy as np
import pytest

from vidrl_jax import io
from vidrl_jax.data.collect import returns_per_frame
from vidrl_jax.data.frames import FrameDataset, valid_starts
from vidrl_jax.errors import VidrlError


def _shard(path, n, done_at=(), h=4, c=2, seed=0):
  rng = np.random.default_rng(seed)
  done = np.zeros(n, bool)
  done[list(done_at)] = True
  episode = np.cumsum(np.concatenate([[0], done[:-1]]))        # episode id of every frame
  obs = np.zeros((n, h, h, c), np.uint8)
  obs[:, 0, 0, 0] = episode                                    # frames remember their episode ...
  obs[:, 0, 1, 0] = np.arange(n)                               # ... and their index
  io.write_npz(path, {"obs": obs, "ta": rng.integers(0, 3, n), "done": done,
                      "rewards": np.ones(n, np.float32), "ep_returns": np.zeros(n, np.float32)})
  return obs


def test_valid_starts_by_hand():
  done = np.array([0, 0, 1, 0, 0, 0, 1, 0], bool)
  # window 3: frames t..t+2 need done[t], done[t+1] False; one shard of 8 frames.
  # t=0 ok (frame 2 is the episode's last); t=1, 2 cross the end at 2; t=5 crosses the end at 6; t=6, 7 too short.
  assert valid_starts(done, np.array([8]), 3).tolist() == [0, 3, 4]
  # two shards [0, 4) and [4, 8): start 3 would also cross the shard boundary.
  assert valid_starts(done, np.array([4, 8]), 3).tolist() == [0, 4]
  assert valid_starts(np.zeros(5, bool), np.array([5]), 2).tolist() == [0, 1, 2, 3]


def test_sampled_windows_stay_in_one_episode(tmp_path):
  _shard(tmp_path / "a.npz", 200, done_at=range(7, 200, 13), seed=1)
  _shard(tmp_path / "b.npz", 150, done_at=range(3, 150, 5), seed=2)
  data = FrameDataset(str(tmp_path), window=3, obs_shape=(4, 4, 2))
  for step in range(20):
    w = data.sample(seed=0, step=step, batch_size=64)["frames"]
    episode, index = w[:, :, 0, 0, 0], w[:, :, 0, 1, 0].astype(int)
    assert (episode == episode[:, :1]).all()                   # one episode per window
    assert (np.diff(index, axis=1) == 1).all()                 # consecutive frames of one shard


def test_sampling_is_a_function_of_step(tmp_path):
  _shard(tmp_path / "a.npz", 100, done_at=[50])
  data = FrameDataset(str(tmp_path), window=3)
  a = data.sample_starts(seed=3, step=17, batch_size=32)
  np.testing.assert_array_equal(a, data.sample_starts(seed=3, step=17, batch_size=32))
  assert not np.array_equal(a, data.sample_starts(seed=3, step=18, batch_size=32))


def test_missing_and_empty_directory(tmp_path):
  with pytest.raises(VidrlError, match="does not exist"):
    FrameDataset(str(tmp_path / "nope"), window=3)
  with pytest.raises(VidrlError, match="holds no .npz shards"):
    FrameDataset(str(tmp_path), window=3)


def test_truncated_shard(tmp_path):
  _shard(tmp_path / "a.npz", 64)
  blob = open(tmp_path / "a.npz", "rb").read()
  with open(tmp_path / "a.npz", "wb") as f:
    f.write(blob[: len(blob) // 2])
  with pytest.raises(VidrlError, match="truncated or corrupt"):
    FrameDataset(str(tmp_path), window=3)


def test_missing_key_length_mismatch_and_shape(tmp_path):
  io.write_npz(str(tmp_path / "a.npz"), {"obs": np.zeros((8, 4, 4, 2), np.uint8)})
  with pytest.raises(VidrlError, match="lacks the key"):
    FrameDataset(str(tmp_path), window=3)
  io.write_npz(str(tmp_path / "a.npz"), {"obs": np.zeros((8, 4, 4, 2), np.uint8), "done": np.zeros(7, bool)})
  with pytest.raises(VidrlError, match="different lengths"):
    FrameDataset(str(tmp_path), window=3)
  _shard(tmp_path / "a.npz", 16)
  with pytest.raises(VidrlError, match="config expects"):
    FrameDataset(str(tmp_path), window=3, obs_shape=(64, 64, 3))


def test_returns_per_frame():
  done = np.array([0, 0, 1, 0, 1, 0], bool)
  ep = np.array([0, 0, 5.0, 0, 2.0, 0], np.float32)
  out = returns_per_frame(done, ep)
  np.testing.assert_array_equal(out[:5], [5, 5, 5, 2, 2])
  assert np.isnan(out[5])


def test_atomic_write_leaves_no_partial_file(tmp_path):
  class Boom(Exception):
    pass

  def bad(f):
    f.write(b"half")
    raise Boom

  with pytest.raises(Boom):
    io._atomic(str(tmp_path / "x.json"), bad)
  assert os.listdir(tmp_path) == []
