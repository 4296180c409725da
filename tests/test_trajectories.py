"""AIME trajectories as sequence datasets: round trip on disk, clear errors, windows that never cross a trajectory."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.data import formats, ownership
from vidrl_jax.data import trajectories as tr
from vidrl_jax.errors import VidrlError


def _traj(n: int, marker: float = 0.0, a: int = 3, image: bool = False, seed: int = 0) -> dict:
  """A trajectory of n rows; 'marker' is constant (its id), 'tstep' counts rows, 'height' is an official (n,)."""
  rng = np.random.default_rng(seed)
  pre_action = rng.uniform(-1, 1, (n, a)).astype(np.float32)
  pre_action[0] = 0
  t = {"marker": np.full((n, 1), marker, np.float32), "tstep": np.arange(n, dtype=np.float32)[:, None],
       "height": rng.normal(size=n).astype(np.float32), "pre_action": pre_action,
       "reward": rng.normal(size=n).astype(np.float32), "is_first": np.arange(n) == 0,
       "is_last": np.arange(n) == n - 1, "is_terminal": np.zeros(n, bool)}
  if image:
    t["image"] = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
  return t


KEYS = ("marker", "tstep", "height")


def _dataset(lengths=(12, 5, 30, 9), window=4):
  return formats.from_episodes([_traj(n, i, seed=i) for i, n in enumerate(lengths)], KEYS).windows(window)


def test_round_trip_and_marker(tmp_path):
  d = str(tmp_path / "data")
  trajs = [_traj(n, i, image=True, seed=i) for i, n in enumerate([6, 9, 4])]
  ownership.claim(d, {"format": "aime_episodes"})
  paths = [tr.write_trajectory(d, i, t) for i, t in enumerate(trajs)]
  assert [os.path.basename(p) for p in paths] == ["000000.npz", "000001.npz", "000002.npz"]
  assert ownership.read_complete(d) is None and ownership.state(d) == "partial"
  ownership.mark_complete(d, {"episodes": 3})
  assert ownership.read_complete(d) == {"episodes": 3} and ownership.state(d) == "complete"
  data = formats.episodes(d, ("image", "height"), cache_dir=str(tmp_path / "cache"))
  assert data.num_runs == 3 and data.obs_keys == ("image", "height") and data.action_dim == 3
  assert not os.path.exists(tmp_path / "cache")                       # our files are mapped in place
  assert data.spec("height") == ((1,), np.float32) and data.spec("image") == ((8, 8, 3), np.uint8)
  for i, t in enumerate(trajs):                                        # each whole trajectory as one window
    n = len(t["reward"])
    windows = data.windows(n)
    ids = np.arange(windows.num_windows)
    run, start = windows.locate(ids)
    b = windows.gather(ids[(run == i) & (start == 0)])
    np.testing.assert_array_equal(b["obs"]["image"][0], t["image"])
    assert b["obs"]["image"].dtype == np.uint8
    assert b["obs"]["height"].shape == (1, n, 1)                       # official (T+1,) scalar -> (T+1, 1)
    np.testing.assert_array_equal(b["obs"]["height"][0, :, 0], t["height"])
    np.testing.assert_array_equal(b["action"][0], t["pre_action"])
    np.testing.assert_array_equal(b["reward"][0], t["reward"])
    np.testing.assert_array_equal(b["is_first"][0], np.arange(n) == 0)
    assert b["action"].dtype == np.float32 and b["reward"].dtype == np.float32 and b["is_first"].dtype == bool
  assert formats.episodes([d, d], ("height",), limit=2).num_runs == 4
  assert tr.episode_return(trajs[0]) == pytest.approx(float(trajs[0]["reward"].sum()), rel=1e-5)


def test_validate_errors():
  t = _traj(6)
  del t["is_last"]
  with pytest.raises(VidrlError, match=r"src lacks the key\(s\) \['is_last'\].*it has"):
    tr.validate(t, KEYS, "src")
  with pytest.raises(VidrlError, match=r"lacks the key\(s\) \['velocity'\]"):
    tr.validate(_traj(6), ["velocity"], "src")
  t = _traj(6)
  t["reward"] = t["reward"][:5]
  with pytest.raises(VidrlError, match=r"src has keys of different lengths.*'reward': 5"):
    tr.validate(t, KEYS, "src")
  with pytest.raises(VidrlError, match=r"src has 1 step\(s\) but a trajectory needs at least 2"):
    tr.validate(_traj(1), KEYS, "src")
  t = _traj(6)
  t["tstep"][3] = np.nan
  with pytest.raises(VidrlError, match=r"src has a non-finite value in 'tstep' \(first at row 3\)"):
    tr.validate(t, KEYS, "src")
  with pytest.raises(VidrlError, match=r"at least 2"):
    tr.write_trajectory("/nonexistent-unused", 0, _traj(1))


def test_corrupt_missing_and_empty(tmp_path):
  d = tmp_path / "data"
  tr.write_trajectory(str(d), 0, _traj(5))
  bad = d / "000001.npz"
  bad.write_bytes(b"this is not a zip file" * 10)
  with pytest.raises(VidrlError, match=r"000001\.npz is truncated or corrupt"):
    formats.episodes(str(d), KEYS)
  blob = (d / "000000.npz").read_bytes()
  bad.write_bytes(blob[:len(blob) // 2])                                # a truncated write
  with pytest.raises(VidrlError, match=r"000001\.npz is truncated or corrupt"):
    formats.episodes(str(d), KEYS)
  with pytest.raises(VidrlError, match="does not exist"):
    formats.episodes(str(tmp_path / "nope"), KEYS)
  (tmp_path / "empty").mkdir()
  with pytest.raises(VidrlError, match="holds no .npz episodes"):
    formats.episodes(str(tmp_path / "empty"), KEYS)
  with pytest.raises(VidrlError, match=r"000000\.npz lacks the key\(s\) \['velocity'\]"):
    formats.episodes(str(d), ["velocity"], limit=1)


def test_windows_stay_in_one_trajectory():
  data = _dataset()
  assert data.data.num_runs == 4 and data.data.num_steps == 56 and data.data.action_dim == 3
  assert data.num_windows == 9 + 2 + 27 + 6                               # trajectory 1 (5 rows) has 2 starts
  seen = set()
  for step in range(20):
    b = data.sample(0, step, 32)
    assert b["obs"]["marker"].shape == (32, 4, 1) and b["action"].shape == (32, 4, 3)
    assert b["reward"].shape == (32, 4) and b["is_first"].shape == (32, 4) and b["episode"].shape == (32,)
    assert b["action"].dtype == np.float32 and b["is_first"].dtype == bool and b["episode"].dtype == np.int64
    marker, tstep = b["obs"]["marker"][..., 0], b["obs"]["tstep"][..., 0]
    assert (marker == marker[:, :1]).all()                                # one trajectory per window
    np.testing.assert_array_equal(marker[:, 0], b["episode"])
    assert (np.diff(tstep, axis=1) == 1).all()                            # consecutive rows
    assert (tstep[:, -1] < data.data.run_length[b["episode"]]).all()
    np.testing.assert_array_equal(b["is_first"], tstep == 0)              # is_first only where a trajectory starts
    seen.update(zip(b["episode"].tolist(), tstep[:, 0].astype(int).tolist()))
  assert len(seen) > 30                                                   # covers most of the 44 starts


def test_sampling_is_a_function_of_seed_and_step():
  data = _dataset()
  a = data.sample(0, 17, 16)
  for k in ("action", "reward", "episode"):
    np.testing.assert_array_equal(a[k], _dataset().sample(0, 17, 16)[k])
  assert not np.array_equal(a["action"], data.sample(0, 18, 16)["action"])
  assert not np.array_equal(a["action"], data.sample(1, 17, 16)["action"])
  # the global draw of (seed, step): default_rng([seed, step]).integers(0, num_windows, batch)
  np.testing.assert_array_equal(data.draw(0, 17, 16), np.random.default_rng([0, 17]).integers(0, 44, 16))
  shards = [data.sample(0, 17, 16, process_index=p, process_count=2) for p in range(2)]
  for s in shards:
    assert s["obs"]["marker"].shape == (8, 4, 1) and s["action"].shape == (8, 4, 3)
  np.testing.assert_array_equal(np.concatenate([s["action"] for s in shards]), a["action"])
  with pytest.raises(VidrlError, match="multiple of the process count"):
    data.sample(0, 0, 15, process_index=0, process_count=2)
  with pytest.raises(VidrlError, match=r"process index 2 is not in \[0, 2\)"):
    data.sample(0, 0, 16, process_index=2, process_count=2)


def test_images_stay_uint8_and_window_too_long():
  data = formats.from_episodes([_traj(7, image=True), _traj(9, image=True, seed=1)], ("image",)).windows(5)
  b = data.sample(0, 0, 4)
  assert b["obs"]["image"].shape == (4, 5, 8, 8, 3) and b["obs"]["image"].dtype == np.uint8
  with pytest.raises(VidrlError, match=r"no window of 10 rows fits inside one episode.*longest run has 9 rows"):
    formats.from_episodes([_traj(7), _traj(9)], KEYS).windows(10)
  assert data.num_windows == 3 + 5


def test_split():
  data = _dataset(lengths=(6,) * 10)
  train, val = data.split(0.3, seed=0)
  assert (len(train.runs), len(val.runs)) == (7, 3)
  ids = lambda w: set(w.gather(np.arange(w.num_windows))["obs"]["marker"][:, 0, 0].tolist())
  assert ids(train) | ids(val) == set(range(10)) and not ids(train) & ids(val)
  assert ids(val) == set(np.random.default_rng([0, 7]).permutation(10)[:3].tolist())
  assert ids(val) == ids(data.split(0.3, seed=0)[1])
  assert [len(w.runs) for w in _dataset(lengths=(6, 6)).split(0.01, seed=0)] == [1, 1]
  lone_train, lone_val = _dataset(lengths=(14,)).split(0.3, seed=0)       # one trajectory: split in time
  assert (lone_train.num_windows, lone_val.num_windows) == (8, 3)
  np.testing.assert_array_equal(lone_val.parent_ids(np.arange(3)), [8, 9, 10])
  with pytest.raises(VidrlError, match="strictly between 0 and 1"):
    data.split(1.0, seed=0)
  short = formats.from_episodes([_traj(3), _traj(9, 1)], KEYS).windows(4)   # a part may hold no window ...
  parts = short.split(0.5, seed=0)
  empty = [p for p in parts if p.num_windows == 0]
  assert len(empty) == 1 and sum(p.num_windows for p in parts) == 6
  with pytest.raises(VidrlError, match="holds no window of 4 rows"):    # ... but cannot be sampled
    empty[0].draw(0, 0, 2)


def test_concat_obs():
  obs = {"a": np.zeros((2, 5, 3), np.float64), "b": np.ones((2, 5, 1), np.float32), "image": np.zeros((2, 5, 8, 8, 3))}
  x = tr.concat_obs(obs, ["a", "b"])
  assert isinstance(x, np.ndarray) and x.shape == (2, 5, 4) and x.dtype == np.float32
  y = tr.concat_obs({"a": jnp.zeros((7, 3)), "b": np.ones((7, 2))}, ["b", "a"])
  assert y.shape == (7, 5) and y.dtype == jnp.float32 and float(y[0, 0]) == 1.0
  with pytest.raises(VidrlError, match="vector observation keys only"):
    tr.concat_obs(obs, ["a", "image"])
  with pytest.raises(VidrlError, match=r"lacks the key\(s\) \['c'\]"):
    tr.concat_obs(obs, ["c"])


def test_official_aime_data_serves_as_a_dataset_and_stays_untouched(tmp_path):
  """Released AIME files (np.savez_compressed, official keys, no markers) named by `data.demos`: read, not written."""
  import sys
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"))
  import aime as aime_config
  from vidrl_jax.methods.aime.pipeline import Aime
  official = tmp_path / "released" / "swingup"
  official.mkdir(parents=True)
  trajs = [_traj(n, i, seed=i) for i, n in enumerate([6, 9, 4])]
  for i, t in enumerate(trajs):
    np.savez_compressed(official / f"{i:06d}.npz", **t)
  before = {p.name: p.read_bytes() for p in official.iterdir()}
  config = aime_config.get_config("smoke")
  config.unlock()
  config.data.demos = str(tmp_path / "released" / "{task}")
  config.data.cache_dir = str(tmp_path / "cache")
  a = Aime(config, str(tmp_path / "work"))
  assert a.dataset_dir("demos", "swingup") == str(official)
  assert not a.writable(str(official))
  summary = a.demos("swingup", actor_params=None)                     # no expert needed: nothing is collected
  assert summary["episodes"] == 3
  assert summary["mean_return"] == pytest.approx(np.mean([t["reward"].sum() for t in trajs]), rel=1e-5)
  data = a.load([str(official)], KEYS)
  assert data.num_runs == 3 and data.windows(4).sample(0, 0, 8)["obs"]["marker"].shape == (8, 4, 1)
  assert {p.name: p.read_bytes() for p in official.iterdir()} == before
  own = str(tmp_path / "work" / "data" / "random")                    # our own directories are claimed first
  assert a.writable(own) and ownership.owner(own)["format"] == "aime_episodes"
