"""APV's results table from evaluation rows, without training: curves read from one or several workdirs, the final
and averaged success rates against hand-computed values, the probability of improvement over DreamerV2, and the
aggregation's refusals (another config, a stage run twice, an output directory the project did not write)."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from vidrl_jax import config as config_lib
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.apv import report
from vidrl_jax.train import MetricWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPS = 200


def _config(**overrides):
  spec = importlib.util.spec_from_file_location("apv_config", os.path.join(ROOT, "configs", "apv.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return config_lib.apply_overrides(module.get_config("smoke"), overrides)


def _workdir(path, config, curves: dict) -> str:
  """A workdir as experiments/apv.py leaves it: config.json and, per (variant, seed), evaluation rows."""
  os.makedirs(path)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config.to_dict(), f)
  writer = MetricWriter(str(path))
  for (variant, seed), ys in curves.items():
    for i, y in enumerate(ys):
      writer.write(report.stage("reach-v3", variant, seed), i, {"eval/env_steps": 100 * (i + 1),
                                                                 "eval/success_rate": y})
  writer.close()
  return str(path)


APV = {("apv", 0): [0.0, 0.5, 1.0], ("apv", 1): [0.0, 0.2, 0.6], ("apv", 2): [0.1, 0.4, 0.8]}
DV2 = {("dreamerv2", 0): [0.0, 0.0, 0.2], ("dreamerv2", 1): [0.0, 0.1, 0.0], ("dreamerv2", 2): [0.0, 0.0, 0.4]}


def test_aggregates_variants_run_in_two_workdirs(tmp_path):
  seeds = (0, 1, 2)
  a = _workdir(tmp_path / "a", _config(variants=("apv",), seeds=seeds), APV)
  b = _workdir(tmp_path / "b", _config(variants=("dreamerv2",), seeds=seeds, **{"pretrain.workdir": a}), DV2)
  out = str(tmp_path / "table")
  got = report.aggregate_workdirs([a, b], out, reps=REPS)["results"]
  assert set(got) == {"reach-v3/apv", "reach-v3/dreamerv2"}
  apv, dv2 = got["reach-v3/apv"], got["reach-v3/dreamerv2"]
  # 3 runs: the IQM (25% trimmed on each side) keeps the middle run
  assert apv["final"]["mean"] == pytest.approx(0.8, abs=1e-9) and apv["final"]["iqm"] == pytest.approx(0.8, abs=1e-9)
  assert dv2["final"]["mean"] == pytest.approx(0.2, abs=1e-9)
  assert apv["average"]["mean"] == pytest.approx(np.mean([0.5, 0.8 / 3, 1.3 / 3]), abs=1e-9)
  assert apv["curve"]["x"] == [100, 200, 300] and apv["env_steps"] == 300
  # every APV run beats every DreamerV2 run on both measures
  assert apv["versus_baseline"]["final"]["p"] == pytest.approx(1.0, abs=1e-9)
  assert apv["versus_baseline"]["average"]["p"] == pytest.approx(1.0, abs=1e-9)
  assert dv2["versus_baseline"] is None
  for name in ("results.json", "results.md", "curves_reach-v3.png"):
    assert os.path.exists(os.path.join(out, name)), name
  assert "| reach-v3 | apv | 3 | 0.80" in open(os.path.join(out, "results.md")).read()
  # a second aggregation into the same directory reuses it
  report.aggregate_workdirs([a, b], out, reps=REPS)


def test_aggregation_refuses_bad_input(tmp_path):
  a = _workdir(tmp_path / "a", _config(variants=("apv",)), {("apv", 0): [0.0, 1.0]})
  other = _workdir(tmp_path / "other", _config(variants=("dreamerv2",), **{"bonus.beta": 0.5}),
                   {("dreamerv2", 0): [0.0, 0.0]})
  with pytest.raises(VidrlError, match=r"another config .*bonus\.beta"):
    report.aggregate_workdirs([a, other], str(tmp_path / "t1"), reps=REPS)
  twice = _workdir(tmp_path / "twice", _config(variants=("apv",)), {("apv", 0): [0.0, 0.5]})
  with pytest.raises(VidrlError, match="run in both"):
    report.aggregate_workdirs([a, twice], str(tmp_path / "t2"), reps=REPS)
  with pytest.raises(VidrlError, match="config.json does not exist"):
    report.aggregate_workdirs([a, str(tmp_path / "missing")], str(tmp_path / "t3"), reps=REPS)
  foreign = tmp_path / "mine"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("a user's file")
  with pytest.raises(VidrlError, match="did not write"):
    report.aggregate_workdirs([a], str(foreign), reps=REPS)
  assert sorted(os.listdir(foreign)) == ["notes.txt"]


def test_probe_regression_head_learns_what_the_features_hold():
  """The Fig. 8 regression head: a target that is a function of the features is learnt (held-out error near 0);
  one independent of them is not (error about 1, the variance of the held-out targets)."""
  from vidrl_jax.methods.apv.probe import probe_config, regression_curve
  rng = np.random.default_rng(0)
  x = rng.standard_normal((600, 8)).astype(np.float32)
  w = rng.standard_normal((8, 2)).astype(np.float32)
  c = probe_config(steps=400, eval_every=100, hidden=(32,), lr=3e-3)
  held = regression_curve(x[:400], x[:400] @ w, x[400:], x[400:] @ w, c, seed=0)
  noise = rng.standard_normal((600, 2)).astype(np.float32)
  none = regression_curve(x[:400], noise[:400], x[400:], noise[400:], c, seed=0)
  assert held["steps"] == [0, 100, 200, 300, 400]
  assert held["error"][-1] < 0.05 < held["error"][0], held
  assert none["error"][-1] > 0.9, none


def test_compare_script_reads_metric_logs_against_hand_computed_values(tmp_path):
  """scripts/apv_compare.py: per seed the final and averaged success and the first step at 1.0 (a resumed run's
  last row per step wins), rliable's probability of improvement over the baseline, one sentence for a bad run."""
  import subprocess
  import sys

  def log(name, rows):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps({"stage": f"finetune/reach-v3/{v}/seed{s}", "step": e,
                                          "eval/env_steps": e, "eval/success_rate": r}) for v, s, e, r in rows) + "\n")
    return str(path)

  a = log("a.jsonl", [("apv", 0, 10, 0.0), ("apv", 0, 20, 0.5), ("apv", 0, 20, 1.0), ("apv", 1, 10, 1.0),
                      ("apv", 1, 20, 1.0), ("dreamerv2", 0, 10, 0.0)])
  b = log("b.jsonl", [("dreamerv2", 0, 10, 0.0), ("dreamerv2", 0, 20, 0.0), ("dreamerv2", 1, 10, 0.0),
                      ("dreamerv2", 1, 20, 1.0)])
  out = tmp_path / "cmp.json"
  script = os.path.join(ROOT, "scripts", "apv_compare.py")
  done = subprocess.run([sys.executable, script, "--task=reach-v3", "--baseline=dv2", f"--run=apv:apv:{a}",
                         f"--run=dv2:dreamerv2:{b}", f"--out={out}"], capture_output=True, text=True, cwd=ROOT)
  assert done.returncode == 0, done.stderr
  runs = json.load(open(out))["runs"]
  assert runs["apv"]["final"] == [1.0, 1.0] and runs["apv"]["averaged"] == [0.5, 1.0]
  assert runs["apv"]["first_success_1"] == [20, 10] and runs["dv2"]["first_success_1"] == [None, 20]
  assert runs["dv2"]["final"] == [0.0, 1.0] and runs["dv2"]["averaged"] == [0.0, 0.5]
  # P(apv > dv2) over seed pairs: final (1>0: 1, 1=1: 0.5) x 2 -> 0.75; averaged 0.5>0, 0.5=0.5, 1>0, 1>0.5 -> 0.875
  assert runs["apv"]["p_improvement"]["final"]["p"] == pytest.approx(0.75, abs=1e-12)
  assert runs["apv"]["p_improvement"]["averaged"]["p"] == pytest.approx(0.875, abs=1e-12)
  bad = subprocess.run([sys.executable, script, "--task=reach-v3", "--baseline=dv2", f"--run=dv2:dreamerv3:{b}",
                        f"--out={out}"], capture_output=True, text=True, cwd=ROOT)
  assert bad.returncode == 1 and "no evaluation rows of finetune/reach-v3/dreamerv3/seed*" in bad.stderr
