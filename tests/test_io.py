"""The one file API (`vidrl_jax.io`) on a local directory and on a URL (fsspec's in-memory `memory://`, cleared per
test), atomic writes, the metrics writer, ownership markers and datasets on a URL, and a static check that the
project's file calls go through `io` (an explicit allow-list of the local-only exceptions, and a pending list)."""

import ast
import glob
import json
import os

import fsspec
import numpy as np
import pytest

from vidrl_jax import io, plots
from vidrl_jax.data import collect, formats, ownership
from vidrl_jax.data.replay import ReplayBuffer
from vidrl_jax.errors import VidrlError
from vidrl_jax.train import MetricWriter, checkpoint, write_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def memfs():
  fs = fsspec.filesystem("memory")

  def clear():
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]

  clear()
  yield fs
  clear()


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path, memfs):
  return str(tmp_path / "root") if request.param == "local" else "memory://root"


def test_every_function_round_trips(root):
  assert not io.exists(root) and io.listdir(root) == [] and io.glob(io.join(root, "*.txt")) == []
  io.makedirs(root)
  io.write_bytes(io.join(root, "a.bin"), b"\x00\x01")
  io.write_text(io.join(root, "b.txt"), "hello\n")
  io.write_json(io.join(root, "sub", "c.json"), {"x": np.float32(1.5), "y": np.arange(2), 3: (1, 2)})
  assert io.exists(io.join(root, "a.bin")) and io.isdir(root) and io.isdir(io.join(root, "sub"))
  assert not io.isdir(io.join(root, "a.bin")) and not io.exists(io.join(root, "none"))
  with io.open(io.join(root, "a.bin"), "rb") as f:
    assert f.read() == b"\x00\x01"
  with io.open(io.join(root, "b.txt")) as f:
    assert f.read() == "hello\n"
  assert io.read_json(io.join(root, "sub", "c.json")) == {"x": 1.5, "y": [0, 1], "3": [1, 2]}
  assert io.listdir(root) == ["a.bin", "b.txt", "sub"]
  assert io.glob(io.join(root, "*.txt")) == [io.join(root, "b.txt")]      # spelled as the pattern's directory
  io.append_text(io.join(root, "b.txt"), "more\n")
  io.append_text(io.join(root, "new", "d.txt"), "first\n")
  with io.open(io.join(root, "b.txt")) as f:
    assert f.read() == "hello\nmore\n"
  calls = []
  compute = lambda: calls.append(1) or {"v": 2}
  assert io.cached_json(io.join(root, "r.json"), compute) == {"v": 2}
  assert io.cached_json(io.join(root, "r.json"), compute) == {"v": 2} and calls == [1]   # computed once
  io.remove(io.join(root, "a.bin"))
  assert not io.exists(io.join(root, "a.bin"))
  io.rmtree(io.join(root, "sub"))
  io.rmtree(io.join(root, "sub"))                                        # nothing left: no error
  assert io.listdir(root) == ["b.txt", "new", "r.json"]
  with pytest.raises(ValueError, match="for reading"):
    io.open(io.join(root, "b.txt"), "w")


@pytest.mark.parametrize("compress", [True, False])
def test_npz_round_trip(root, compress):
  arrays = {"image": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "x": np.linspace(0, 1, 5, dtype=np.float32),
            "flag": np.array([True, False])}
  io.write_npz(io.join(root, "a.npz"), arrays, compress=compress)
  back = io.load_npz(io.join(root, "a.npz"))
  assert sorted(back) == sorted(arrays)
  for k, v in arrays.items():
    assert back[k].dtype == v.dtype
    np.testing.assert_array_equal(back[k], v)


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(root, tmp_path, monkeypatch):
  class Boom(Exception):
    pass

  def bad(f):
    f.write(b"half")
    raise Boom

  scratch = tmp_path / "scratch"          # where a URL's write is staged
  scratch.mkdir()
  monkeypatch.setattr(io.tempfile, "tempdir", str(scratch))
  path = io.join(root, "x.json")
  io.write_json(path, {"v": 1})
  with pytest.raises(Boom):
    io._atomic(path, bad)
  assert io.read_json(path) == {"v": 1} and io.listdir(root) == ["x.json"]
  assert os.listdir(scratch) == []


def test_paths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert io.abspath("gs://bucket/run") == "gs://bucket/run" and io.abspath("run") == str(tmp_path / "run")
  assert io.is_url("gs://b/x") and io.is_url("memory://x") and not io.is_url("/x") and not io.is_url("file:///x")
  io.write_text("file://" + str(tmp_path / "f.txt"), "local")            # file:// is a local path
  assert (tmp_path / "f.txt").read_text() == "local"
  assert io.join("gs://b", "run", "x.json") == "gs://b/run/x.json"
  with pytest.raises(VidrlError, match="install the filesystem package"):
    io.exists("nosuchprotocol://b/x")
  made = []
  monkeypatch.setattr(checkpoint.ocp, "CheckpointManager", lambda directory, options: made.append(directory))
  checkpoint.Checkpointer("gs://bucket/run/stage/checkpoints")
  checkpoint.Checkpointer("run/checkpoints")
  assert made == ["gs://bucket/run/stage/checkpoints", str(tmp_path / "run" / "checkpoints")]


def test_metric_writer_on_a_url(memfs):
  w = MetricWriter("memory://run", flush_secs=3600)
  w.write("s", 1, {"loss": 1.0})
  w.write("s", 2, {"loss": 0.5, "acc": np.float32(0.25)})
  assert not io.exists("memory://run/metrics.jsonl")       # object stores cannot append: rows are batched
  assert [r["step"] for r in w.rows("s")] == [1, 2]         # reading syncs first
  assert io.exists("memory://run/metrics.jsonl")
  w.write("s", 3, {"loss": 0.25})
  w.write("t", 1, {"loss": 9.0})
  w.truncate("s", 1)
  assert [(r["stage"], r["step"]) for r in w.rows()] == [("s", 1), ("t", 1)]
  w.close()
  events = io.listdir("memory://run/tb")
  assert len(events) == 1 and events[0].startswith("events.out.tfevents")
  with io.open(io.join("memory://run/tb", events[0]), "rb") as f:
    blob = f.read()
  assert b"s/loss" in blob and b"s/acc" in blob and b"t/loss" in blob   # every scalar tag was uploaded
  every = MetricWriter("memory://run2", flush_secs=0)
  every.write("s", 1, {"loss": 1.0})
  with io.open("memory://run2/metrics.jsonl") as f:
    assert json.loads(f.read())["loss"] == 1.0
  every.close()
  write_results("memory://run", {"score": np.float32(2.0)}, "| a |")
  assert io.read_json("memory://run/results.json") == {"score": 2.0}
  with io.open("memory://run/results.md") as f:
    assert f.read() == "| a |\n"


def test_metric_writer_on_a_local_workdir_appends_each_row_at_once(tmp_path):
  w = MetricWriter(str(tmp_path / "run"))
  w.write("s", 1, {"loss": 1.0})
  assert [json.loads(line)["step"] for line in open(tmp_path / "run" / "metrics.jsonl")] == [1]
  w.close()
  assert len(os.listdir(tmp_path / "run" / "tb")) == 1


def test_ownership_markers_on_a_url(memfs):
  d = "memory://data/split"
  assert ownership.state(d) == "absent"
  ownership.claim(d, {"done": "last"})
  assert ownership.owner(d) == {"created_by": "vidrl_jax", "done": "last"} and ownership.state(d) == "partial"
  io.write_npz(io.join(d, "stale.npz"), {"x": np.zeros(2)})
  ownership.claim(d, {"done": "last"})                                   # ours, interrupted: redone
  assert io.listdir(d) == [ownership.OWNER]
  ownership.mark_complete(d, {"frames": 3})
  assert ownership.state(d) == "complete" and ownership.read_complete(d) == {"frames": 3}
  with pytest.raises(VidrlError, match="already holds a finished dataset"):
    ownership.claim(d, {})
  io.write_npz("memory://data/theirs/a.npz", {"x": np.zeros(2)})
  assert ownership.state("memory://data/theirs") == "foreign"
  with pytest.raises(VidrlError, match="never written into"):
    ownership.claim("memory://data/theirs", {})
  with pytest.raises(VidrlError, match="was not claimed"):
    ownership.mark_complete("memory://data/theirs", {})


def _chunks():
  rng = np.random.default_rng(0)
  for _ in range(2):
    done = np.zeros((6, 2), bool)
    done[2, 0] = True
    yield {"obs": rng.integers(0, 255, (6, 2, 3, 3, 1)).astype(np.uint8), "action": np.ones((6, 2), np.int32),
           "reward": np.ones((6, 2), np.float32), "done": done, "episode_return": np.full((6, 2), 3.0)}


def test_a_dataset_in_a_bucket_reads_as_the_same_dataset_on_disk(memfs, tmp_path):
  """Collected into memory:// and on disk from the same chunks; read back through local copies (memory maps
  need local files), the windows are equal; a rewritten object is fetched anew."""
  url, local, cache = "memory://data/train", str(tmp_path / "train"), str(tmp_path / "cache")
  assert collect.collect(_chunks, url, {"env": "x"}) == collect.collect(_chunks, local, {"env": "x"})
  from_url = formats.lapo_chunks(url, cache_dir=cache)
  from_disk = formats.lapo_chunks(local, cache_dir=cache)
  assert from_url.run_length.tolist() == from_disk.run_length.tolist() == [3, 3, 6] * 2
  a, b = from_url.windows(3), from_disk.windows(3)
  ids = np.arange(a.num_windows)
  for k, v in b.gather(ids).items():
    if k != "obs":
      np.testing.assert_array_equal(a.gather(ids)[k], v)
  np.testing.assert_array_equal(a.gather(ids)["obs"]["image"], b.gather(ids)["obs"]["image"])
  shards = io.glob(io.join(url, "*.npz"))
  copies = sorted(os.listdir(os.path.join(cache, "remote")))
  assert len(copies) == len(shards) == 4
  assert io.local_copy(shards[0], cache) == io.local_copy(shards[0], cache)   # downloaded once
  io.write_npz(shards[0], {"obs": np.zeros((2, 3, 3, 1), np.uint8), "done": np.zeros(2, bool)}, compress=False)
  fresh = io.local_copy(shards[0], cache)
  assert len(os.listdir(os.path.join(cache, "remote"))) == 5 and np.load(fresh)["obs"].shape == (2, 3, 3, 1)
  assert io.local_copy(local, cache) == local                            # a local path is used in place
  episodes = {"image": np.zeros((3, 2, 2, 3), np.uint8), "pre_action": np.zeros((3, 1), np.float32),
              "reward": np.arange(3, dtype=np.float32), "is_first": np.array([1, 0, 0], bool)}
  io.write_npz("memory://eps/000000.npz", episodes, compress=False)
  eps = formats.episodes("memory://eps", cache_dir=cache)
  np.testing.assert_array_equal(eps.windows(3).gather(np.arange(1))["reward"][0], [0, 1, 2])
  with pytest.raises(VidrlError, match="does not exist"):
    formats.episodes("memory://none", cache_dir=cache)


def test_replay_and_plots_on_a_url(memfs):
  buf = ReplayBuffer(capacity=6, obs_spec={"state": ((2,), np.float32)}, action_dim=1)
  n = 4
  buf.add_episode({"obs": {"state": np.arange(2 * n, dtype=np.float32).reshape(n, 2)},
                   "action": np.ones((n, 1), np.float32), "reward": np.arange(n, dtype=np.float32)})
  buf.save("memory://run/replay.npz", counter=np.int64(7))
  again = ReplayBuffer(capacity=6, obs_spec={"state": ((2,), np.float32)}, action_dim=1)
  assert again.load("memory://run/replay.npz") == {"counter": np.int64(7)}
  for k, v in buf.state_dict().items():
    np.testing.assert_array_equal(again.state_dict()[k], v)
  path = plots.curves("memory://run/plots/c.png", {"a": ([0, 1], [1, 2])}, "x", "y", "t")
  with io.open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ---- every file call of the project goes through io -----------------------------------------------------------

# Calls that touch files directly: builtin open, os/glob/shutil/tempfile file functions, numpy's file readers and
# writers, and `<x>.savefig` / pathlib-style methods on anything but the `io` and `plots` modules.
FILE_CALLS = {"open", "os.makedirs", "os.mkdir", "os.remove", "os.unlink", "os.rmdir", "os.replace", "os.rename",
              "os.listdir", "os.scandir", "os.walk", "os.path.exists", "os.path.isdir", "os.path.isfile",
              "glob.glob", "shutil.rmtree", "shutil.copy", "shutil.copyfile", "shutil.move", "tempfile.mkstemp",
              "os.stat", "os.path.getsize", "os.path.getmtime", "zipfile.ZipFile", "np.load", "np.save", "np.savez",
              "np.savez_compressed", "np.memmap", "np.lib.format.open_memmap"}
METHODS = {"savefig", "write_text", "read_text", "write_bytes", "read_bytes", "mkdir", "unlink"}

# Local on purpose, with the reason: {file: {call: why}}.
LOCAL_ONLY = {
    "vidrl_jax/data/store.py": dict.fromkeys(
        ["open", "np.load", "os.path.exists", "os.makedirs", "tempfile.mkstemp", "np.lib.format.open_memmap",
         "os.replace", "os.remove", "np.memmap", "os.stat", "zipfile.ZipFile"],
        "the uncompressed dataset cache under ~/.cache is memory-mapped, and a dataset file is read from its local "
        "copy (io.local_copy)"),
    "vidrl_jax/plots.py": {"savefig": "plots.savefig renders into a BytesIO, then writes through io"},
}

# Files of other parts of the work that still call the OS directly; their owners switch them to io and empty
# this list (the test fails when an entry here no longer occurs, so the list shrinks as they are fixed).
PENDING = {
}


def _dotted(node) -> str | None:
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if isinstance(node, ast.Name):
    return ".".join([node.id, *reversed(parts)])
  return None


def _file_calls(path: str) -> list[tuple[int, str]]:
  out = []
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if not isinstance(node, ast.Call):
      continue
    name = _dotted(node.func)
    if name in FILE_CALLS:
      out.append((node.lineno, name))
    elif isinstance(node.func, ast.Attribute) and node.func.attr in METHODS:
      owner = _dotted(node.func.value)
      if owner not in ("io", "plots"):
        out.append((node.lineno, node.func.attr))
  return out


def test_every_file_call_goes_through_io():
  files = sorted(glob.glob(os.path.join(REPO, "vidrl_jax", "**", "*.py"), recursive=True)
                 + glob.glob(os.path.join(REPO, "experiments", "*.py")))
  assert len(files) > 50
  bad, pending_seen = [], {}
  for path in files:
    rel = os.path.relpath(path, REPO)
    if rel == "vidrl_jax/io.py":
      continue
    for line, call in _file_calls(path):
      if call in LOCAL_ONLY.get(rel, {}):
        continue
      if call in PENDING.get(rel, set()):
        pending_seen.setdefault(rel, set()).add(call)
        continue
      bad.append(f"{rel}:{line}: {call}")
  assert not bad, "file calls outside vidrl_jax.io (use io.*, or allow-list a local-only one): " + "; ".join(bad)
  gone = {rel: sorted(calls - pending_seen.get(rel, set())) for rel, calls in PENDING.items()}
  assert not any(gone.values()), f"switched to io already: drop them from PENDING: {gone}"


def test_the_static_check_sees_each_kind_of_call(tmp_path):
  src = tmp_path / "m.py"
  src.write_text("import os, glob, numpy as np\nopen('x')\nos.makedirs('d')\nos.path.exists('x')\nglob.glob('*')\n"
                 "np.load('x')\nnp.savez_compressed('x')\nfig.savefig('x')\nio.open('x')\nplots.savefig(f, 'x')\n"
                 "zf.open('x')\n")
  assert _file_calls(str(src)) == [(2, "open"), (3, "os.makedirs"), (4, "os.path.exists"), (5, "glob.glob"),
                                   (6, "np.load"), (7, "np.savez_compressed"), (8, "savefig")]
