"""The sequence dataset: official formats, both `done` conventions, memory, sampling, mixing, foreign directories."""

import hashlib
import os
import tracemalloc

import numpy as np
import pytest

from vidrl_jax import io
from vidrl_jax.data import collect, formats, ownership, store
from vidrl_jax.data.mix import Sampler
from vidrl_jax.data.replay import ReplayBuffer
from vidrl_jax.errors import VidrlError


def _chunk(path, episode_of, h=4, c=2, seed=0, compress=True, done_convention="last"):
  """A LAPO chunk whose frames remember their episode and index; `done` written in the given convention."""
  rng = np.random.default_rng(seed)
  episode_of = np.asarray(episode_of)
  n = len(episode_of)
  new = np.concatenate([[False], episode_of[1:] != episode_of[:-1]])       # frame t starts an episode
  done = new if done_convention == "first" else np.concatenate([new[1:], [False]])
  obs = np.zeros((n, h, h, c), np.uint8)
  obs[:, 0, 0, 0] = episode_of
  obs[:, 0, 1, 0] = np.arange(n)
  arrays = {"obs": obs, "ta": rng.integers(0, 15, n), "done": done, "rewards": rng.normal(size=n).astype(np.float32),
            "ep_returns": np.zeros(n, np.float32), "values": rng.normal(size=n).astype(np.float32)}
  (np.savez_compressed if compress else np.savez)(path, **arrays)
  return arrays


def _tree_digest(directory) -> dict:
  return {name: hashlib.sha256(open(os.path.join(directory, name), "rb").read()).hexdigest()
          for name in sorted(os.listdir(directory))}


@pytest.mark.parametrize("convention", ["last", "first"])
def test_windows_never_straddle_episodes_in_either_done_convention(tmp_path, convention):
  d = tmp_path / convention
  d.mkdir()
  _chunk(d / "a.npz", [0, 0, 0, 1, 1, 1, 1, 2], done_convention=convention)
  _chunk(d / "b.npz", [5] * 6 + [6] * 9, done_convention=convention, seed=1)
  data = formats.lapo_chunks(str(d), done=convention, cache_dir=str(tmp_path / "cache"))
  # by hand: runs are the episodes inside each file
  assert data.run_begin.tolist() == [0, 3, 7, 0, 6] and data.run_length.tolist() == [3, 4, 1, 6, 9]
  w = data.windows(3)
  assert w.num_windows == 1 + 2 + 0 + 4 + 7
  b = w.gather(np.arange(w.num_windows))
  episode, index = b["obs"]["image"][:, :, 0, 0, 0], b["obs"]["image"][:, :, 0, 1, 0].astype(int)
  assert (episode == episode[:, :1]).all() and (np.diff(index, axis=1) == 1).all()
  assert index[:, 0].tolist() == [0, 3, 4, 0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12]
  # read in the other convention, the same file's windows do cross episodes: the convention matters
  other = formats.lapo_chunks(str(d), done="first" if convention == "last" else "last",
                              cache_dir=str(tmp_path / "cache")).windows(3)
  e = other.gather(np.arange(other.num_windows))["obs"]["image"][:, :, 0, 0, 0]
  assert not (e == e[:, :1]).all()


def test_official_lapo_chunks_load_unchanged_and_stay_untouched(tmp_path):
  """Official keys, np.savez_compressed, 64x64x3, done = first frame of a new episode (lapo/ppo.py)."""
  root = tmp_path / "bigfish"
  (root / "test").mkdir(parents=True)
  arrays = _chunk(root / "test" / "chunk_0.npz", [0] * 5 + [1] * 7 + [2] * 4, h=64, c=3, done_convention="first")
  before = _tree_digest(root / "test")
  cache = tmp_path / "cache"
  assert ownership.state(str(root / "test")) == "foreign" and formats.detect_done(str(root / "test")) == "first"
  data = formats.lapo_chunks(str(root / "test"), obs_shape=(64, 64, 3), cache_dir=str(cache))
  assert data.run_begin.tolist() == [0, 5, 12] and data.run_first.tolist() == [False, True, True]
  assert set(data.extras) == {"ep_returns", "values"} and data.spec("image") == ((64, 64, 3), np.uint8)
  w = data.windows(3)
  b = w.gather(np.arange(w.num_windows))
  start = b["obs"]["image"][:, 0, 0, 1, 0].astype(int)
  # action[t] = ta[t-1] (the action that led to row t), zero on an episode's (and the chunk's) first row
  for i, s in enumerate(start):
    for r in range(3):
      t = s + r
      first = t == 0 or t in (5, 12)
      assert b["action"][i, r] == (0 if first else arrays["ta"][t - 1])
      np.testing.assert_allclose(b["reward"][i, r], 0 if first else arrays["rewards"][t - 1])
    np.testing.assert_allclose(b["values"][i], arrays["values"][s:s + 3])
  assert b["action"].dtype == np.int32 and b["reward"].dtype == np.float32
  assert data.resident_keys == {"obs", "ta", "rewards", "ep_returns", "values"}
  mapped = formats.lapo_chunks(str(root / "test"), cache_dir=str(cache), resident_bytes=0)   # read through maps
  assert mapped.resident_keys == set()
  for k, v in mapped.windows(3).gather(np.arange(w.num_windows)).items():  # the same values either way
    for got, want in zip(*(list(x.values()) if k == "obs" else [x] for x in (v, b[k]))):
      np.testing.assert_array_equal(got, want)
  assert len(os.listdir(cache)) == len(["obs", "ta", "rewards", "ep_returns", "values"])   # cache: ours only
  assert _tree_digest(root / "test") == before                         # the user's files: byte for byte
  with pytest.raises(VidrlError, match="never written into"):          # a collector pointed at it stops
    collect.collect(lambda: iter(()), str(root / "test"))
  with pytest.raises(VidrlError, match="never written into"):
    ownership.claim(str(root), {})
  assert _tree_digest(root / "test") == before and sorted(os.listdir(root)) == ["test"]


def test_lapo_pipeline_reads_a_foreign_root_without_writing(tmp_path):
  import sys
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"))
  import lapo as lapo_config
  from vidrl_jax.methods.lapo.pipeline import Lapo
  config = lapo_config.get_config("smoke")
  root = tmp_path / "official"
  config.unlock()
  config.data.dir, config.data.cache_dir = str(root), str(tmp_path / "cache")
  lapo = Lapo(config, str(tmp_path / "work"))
  h, _, c = lapo.env.obs_shape
  for split in ("train", "test"):
    (root / split).mkdir(parents=True)
    _chunk(root / split / "c.npz", [0] * 20 + [1] * 12, h=h, c=c, done_convention="first")
  before = {s: _tree_digest(root / s) for s in ("train", "test")}
  with pytest.raises(VidrlError, match="has no split 'labelled'"):
    lapo.datasets(None, None)
  config.data.labelled_split = "test"
  train, labelled, info = lapo.datasets(None, None)
  assert train.num_windows == labelled.num_windows == (20 - 2) + (12 - 2)
  assert info["labelled"] == {"source": str(root / "test"), "frames": 32}
  assert sorted(os.listdir(root)) == ["test", "train"]
  assert {s: _tree_digest(root / s) for s in ("train", "test")} == before


def test_collector_claims_first_marks_last_and_redoes_only_its_own(tmp_path):
  rng = np.random.default_rng(0)

  def chunks():
    for _ in range(2):
      done = np.zeros((6, 2), bool)
      done[2, 0] = True
      yield {"obs": rng.integers(0, 255, (6, 2, 3, 3, 1)).astype(np.uint8), "action": np.ones((6, 2), np.int32),
             "reward": np.ones((6, 2), np.float32), "done": done, "episode_return": np.full((6, 2), 3.0)}

  d = str(tmp_path / "data")
  summary = collect.collect(chunks, d, {"env": "x"})
  assert summary["frames"] == 24 and summary["episodes"] == 2 and summary["mean_return"] == 3.0
  assert ownership.owner(d)["done"] == "last" and ownership.state(d) == "complete"
  data = formats.lapo_chunks(d, cache_dir=str(tmp_path / "cache"))        # 'last' from the owner marker
  assert data.run_length.tolist() == [3, 3, 6] * 2
  assert not os.path.exists(tmp_path / "cache")                          # uncompressed shards: mapped in place
  assert collect.collect(lambda: pytest.fail("collected again"), d) == summary
  os.remove(os.path.join(d, ownership.MARKER))                           # ours, interrupted: redone
  io.write_npz(os.path.join(d, "shard_9999_0000.npz"), {"obs": np.zeros((1, 3, 3, 1), np.uint8)})
  collect.collect(chunks, d)
  assert "shard_9999_0000.npz" not in os.listdir(d) and ownership.state(d) == "complete"


def test_dreamerv2_and_apv_episodes(tmp_path):
  """DreamerV2 (driver.py): action[t] led to obs t, row 0 zeros; APV videos: no actions or rewards."""
  d = tmp_path / "episodes"
  d.mkdir()
  rng = np.random.default_rng(0)
  eps = []
  for i, n in enumerate([7, 5]):
    action = rng.normal(size=(n, 2)).astype(np.float32)
    action[0] = 0
    ep = {"image": rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8), "action": action,
          "reward": np.arange(n, dtype=np.float32), "is_first": np.arange(n) == 0,
          "is_last": np.arange(n) == n - 1, "is_terminal": np.zeros(n, bool), "discount": np.ones(n, np.float32)}
    np.savez_compressed(d / f"20220101T000000-{i:032x}-{n - 1}.npz", **ep)
    eps.append(ep)
  data = formats.episodes(str(d), cache_dir=str(tmp_path / "cache"))
  assert data.obs_keys == ("image",) and data.action_dim == 2 and set(data.extras) == {"is_last", "is_terminal"}
  b = data.windows(5).gather(np.array([0, 3]))
  np.testing.assert_array_equal(b["obs"]["image"][1], eps[1]["image"])
  np.testing.assert_array_equal(b["action"][0], eps[0]["action"][:5])
  np.testing.assert_array_equal(b["is_last"][1], eps[1]["is_last"])

  video = tmp_path / "video"
  video.mkdir()
  for i, ep in enumerate(eps):
    np.savez_compressed(video / f"{i}.npz", **{k: ep[k] for k in ("image", "is_first", "is_last", "is_terminal")})
  free = formats.episodes(str(video), cache_dir=str(tmp_path / "cache"))
  assert not free.has_actions and free.reward is None
  b = free.windows(3).sample(0, 0, 4)
  assert set(b) == {"obs", "is_first", "episode", "is_last", "is_terminal"} and b["obs"]["image"].shape == (4, 3, 8, 8, 3)
  with pytest.raises(VidrlError, match="has no actions"):
    free.action_dim
  from vidrl_jax.rl import bco
  with pytest.raises(VidrlError, match="BCO needs the actions"):
    bco.stacked_frames(free, 5)
  np.savez_compressed(video / "2.npz", **eps[0])                         # mixing labelled into action-free
  with pytest.raises(VidrlError, match="keep action-labelled and action-free episodes in separate datasets"):
    formats.episodes(str(video), cache_dir=str(tmp_path / "cache"))


def test_mixed_sampler_shares_and_determinism(tmp_path):
  labelled = formats.from_episodes([{"x": np.full((9, 1), 1.0), "pre_action": np.ones((9, 2), np.float32)}]
                                   * 3).windows(4)
  free = formats.from_episodes([{"x": np.full((12, 1), 2.0)}] * 2).windows(4)
  mix = Sampler({"labelled": (labelled, 9), "video": (free, 3)}, seed=1)                 # POI: 9 + 3
  assert mix.batch_size == 12
  b = mix.sample(5)
  assert b["labelled"]["obs"]["x"].shape == (9, 4, 1) and (b["labelled"]["obs"]["x"] == 1).all()
  assert b["video"]["obs"]["x"].shape == (3, 4, 1) and (b["video"]["obs"]["x"] == 2).all()
  assert "action" in b["labelled"] and "action" not in b["video"]
  again = mix.sample(5)
  for part in ("labelled", "video"):
    np.testing.assert_array_equal(b[part]["episode"], again[part]["episode"])
  np.testing.assert_array_equal(labelled.draw(1, 5, 9), np.random.default_rng([1, 5, 0]).integers(0, 18, 9))
  np.testing.assert_array_equal(free.draw(1, 5, 3, stream=1), np.random.default_rng([1, 5, 1]).integers(0, 18, 3))
  np.testing.assert_array_equal(b["video"]["episode"], free.gather(free.draw(1, 5, 3, stream=1))["episode"])
  rlv = lambda p, n: Sampler({"interaction": (labelled, 256), "observation": (free, 256)}, 0, p, n)  # RLV: 256 + 256
  halves = [rlv(p, 2).sample(3) for p in range(2)]
  whole = rlv(0, 1).sample(3)
  for part in ("interaction", "observation"):
    assert halves[0][part]["obs"]["x"].shape == (128, 4, 1)
    np.testing.assert_array_equal(np.concatenate([h[part]["episode"] for h in halves]), whole[part]["episode"])
  with pytest.raises(VidrlError, match="share >= 1"):
    Sampler({"a": (labelled, 0)}, seed=0)


def _leaves(tree, prefix=""):
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _leaves(sub, f"{prefix}{key}/").items()}
  return {prefix[:-1]: tree}


def test_dataset_transitions_equal_replay_transitions(tmp_path):
  """RLV's observation pool may be a replay filled from episodes or the episode files read as transitions
  (`windows(2)`): the same ids give the same fields, dtypes and values, and either is a pool of the one sampler."""
  rng = np.random.default_rng(0)
  eps = []
  for n, terminal in ((6, False), (4, True)):
    ep = {"image": rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8),
          "state": rng.normal(size=(n, 3)).astype(np.float32),
          "action": rng.normal(size=(n, 2)).astype(np.float32) * (np.arange(n) > 0)[:, None],
          "reward": rng.normal(size=n).astype(np.float32) * (np.arange(n) > 0),
          "is_first": np.arange(n) == 0, "is_last": np.arange(n) == n - 1,
          "is_terminal": (np.arange(n) == n - 1) & terminal}
    eps.append(ep)
  (tmp_path / "eps").mkdir()
  for i, ep in enumerate(eps):
    np.savez_compressed(tmp_path / "eps" / f"{i}.npz", **ep)
  data = formats.episodes(str(tmp_path / "eps"), cache_dir=str(tmp_path / "cache")).transitions()
  replay = ReplayBuffer(20, {"image": ((8, 8, 3), np.uint8), "state": ((3,), np.float32)}, action_dim=2)
  for ep in eps:
    replay.add_episode({"obs": {k: ep[k] for k in ("image", "state")},
                        **{k: ep[k] for k in ("action", "reward", "is_first", "is_last", "is_terminal")}})
  assert data.population() == replay.population() == 8
  ids = np.arange(8)
  got, want = _leaves(data.gather(ids)), _leaves(replay.gather(ids))
  assert set(got) == set(want) == {"obs/image", "obs/state", "next_obs/image", "next_obs/state", "action", "reward",
                                   "discount", "is_last"}
  for k in want:
    assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  np.testing.assert_array_equal(want["discount"], [1, 1, 1, 1, 1, 1, 1, 0])       # only into the terminal row
  np.testing.assert_array_equal(want["is_last"], [0, 0, 0, 0, 1, 0, 0, 1])
  a, b = (Sampler({"observation": (pool, 8)}, seed=2).sample(4, (3,)) for pool in (data, replay))
  for k, v in _leaves(b).items():
    np.testing.assert_array_equal(_leaves(a)[k], v)
  # Action-free video and data without an is_last key: no action or reward; is_last at the end of a run.
  free = formats.from_episodes([{"x": np.arange(4.0)[:, None]}, {"x": np.arange(3.0)[:, None]}]).transitions()
  t = free.gather(np.arange(5))
  assert set(t) == {"obs", "next_obs", "discount", "is_last"} and (t["discount"] == 1).all()
  np.testing.assert_array_equal(t["is_last"], [0, 0, 1, 0, 1])
  np.testing.assert_array_equal(t["next_obs"]["x"][:, 0], t["obs"]["x"][:, 0] + 1)
  with pytest.raises(VidrlError, match="windows of 2 rows"):
    type(free)(formats.from_episodes([{"x": np.zeros((5, 1))}]).windows(3))


def test_a_dataset_larger_than_the_memory_budget(tmp_path):
  """60 MB of frames (stored and compressed files), a 4 MB budget: opening and sampling allocate a fraction."""
  d = tmp_path / "big"
  d.mkdir()
  n, frame = 1600, (64, 64, 3)                                   # 1600 * 12 KiB = 19.7 MB per file
  rng = np.random.default_rng(0)
  for i in range(3):
    obs = rng.integers(0, 255, (n, *frame), dtype=np.uint8)
    done = np.zeros(n, bool)
    done[::100] = True
    (np.savez if i < 2 else np.savez_compressed)(d / f"c{i}.npz", obs=obs, done=done, ta=np.zeros(n, np.int32))
    del obs
  size = sum(os.path.getsize(d / f) for f in os.listdir(d))
  assert size > 55e6
  tracemalloc.start()
  budget = 4 << 20                                               # a memory budget far below the data
  data = formats.lapo_chunks(str(d), done="first", cache_dir=str(tmp_path / "cache"), max_open=2,
                             resident_bytes=budget)
  assert data.resident_keys == {"ta"}                            # 19 KB of actions fit, 59 MB of frames do not
  w = data.windows(8)
  for step in range(20):
    b = w.sample(0, step, 16)
    assert (b["action"] == 0).all()
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  assert b["obs"]["image"].shape == (16, 8, *frame)
  assert peak < 0.2 * size, (peak, size)
  assert len(data.files) <= 2                                    # the LRU of open maps
  row = w.locate(w.draw(0, 19, 16)[:1])
  assert b["obs"]["image"][0, 0, 0, 0, 0] == np.asarray(data.array(int(data.run_source[row[0][0]]), "obs"))[row[1][0], 0, 0, 0]


def test_bad_input_is_one_sentence(tmp_path):
  with pytest.raises(VidrlError, match="does not exist"):
    formats.lapo_chunks(str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(VidrlError, match="holds no .npz shards"):
    formats.lapo_chunks(str(tmp_path / "empty"))
  d = tmp_path / "d"
  d.mkdir()
  _chunk(d / "a.npz", [0] * 64)
  blob = open(d / "a.npz", "rb").read()
  (d / "a.npz").write_bytes(blob[: len(blob) // 2])
  with pytest.raises(VidrlError, match="truncated or corrupt"):
    formats.lapo_chunks(str(d), cache_dir=str(tmp_path / "cache"))
  np.savez(d / "a.npz", obs=np.zeros((8, 4, 4, 2), np.uint8))
  with pytest.raises(VidrlError, match=r"lacks the key\(s\) \['done'\]"):
    formats.lapo_chunks(str(d))
  np.savez(d / "a.npz", obs=np.zeros((8, 4, 4, 2), np.uint8), done=np.zeros(7, bool))
  with pytest.raises(VidrlError, match="different lengths"):
    formats.lapo_chunks(str(d))
  np.savez(d / "a.npz", obs=np.zeros((8, 4, 4, 2), np.float32), done=np.zeros(8, bool))
  with pytest.raises(VidrlError, match="frames must be uint8"):
    formats.lapo_chunks(str(d))
  _chunk(d / "a.npz", [0] * 16)
  with pytest.raises(VidrlError, match="config expects"):
    formats.lapo_chunks(str(d), obs_shape=(64, 64, 3), cache_dir=str(tmp_path / "cache"))
  _chunk(d / "b.npz", [0] * 16, h=5)
  with pytest.raises(VidrlError, match="all files of a dataset must come from one environment"):
    formats.lapo_chunks(str(d), cache_dir=str(tmp_path / "cache"))
  with pytest.raises(VidrlError, match="unknown done convention"):
    formats.lapo_chunks(str(d), done="end")
  np.savez(d / "b.npz", obs=np.zeros((4, 4, 4, 2), np.uint8), done=np.array([object()] * 4, dtype=object))
  with pytest.raises(VidrlError, match="Python objects"):
    formats.lapo_chunks(str(d), cache_dir=str(tmp_path / "cache"))


def test_returns_per_frame():
  done = np.array([0, 0, 1, 0, 1, 0], bool)
  ep = np.array([0, 0, 5.0, 0, 2.0, 0], np.float32)
  out = collect.returns_per_frame(done, ep)
  np.testing.assert_array_equal(out[:5], [5, 5, 5, 2, 2])
  assert np.isnan(out[5])


def test_cache_is_reused_and_keyed_by_the_file(tmp_path):
  np.savez_compressed(tmp_path / "a.npz", x=np.arange(10))
  m = store.members(str(tmp_path / "a.npz"))["x"]
  assert m.compressed and m.shape == (10,)
  p = store.ensure_cached(m, str(tmp_path / "cache"))
  assert store.ensure_cached(m, str(tmp_path / "cache")) == p
  np.testing.assert_array_equal(store.open_member(m, str(tmp_path / "cache")), np.arange(10))
  np.savez(tmp_path / "b.npz", x=np.arange(10, 20))
  stored = store.members(str(tmp_path / "b.npz"))["x"]
  assert not stored.compressed
  np.testing.assert_array_equal(store.open_member(stored, str(tmp_path / "nocache")), np.arange(10, 20))
  assert not os.path.exists(tmp_path / "nocache")


def test_atomic_write_leaves_no_partial_file(tmp_path):
  class Boom(Exception):
    pass

  def bad(f):
    f.write(b"half")
    raise Boom

  with pytest.raises(Boom):
    io._atomic(str(tmp_path / "x.json"), bad)
  assert os.listdir(tmp_path) == []
