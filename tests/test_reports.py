"""Reports' statistics on hand-made results: LAPO's summary and table, AIME's multi-seed aggregation, RLV's curves."""

from __future__ import annotations

import importlib.util
import json
import os
import re

import ml_collections
import numpy as np
import pytest

from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.aime import report as aime_report
from vidrl_jax.methods.lapo import report as lapo_report
from vidrl_jax.methods.rlv import report as rlv_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lapo_seed(seed: int, probe: float, online: float | None = None) -> dict:
  r = {"seed": seed, "probe_accuracy": probe, "oracle_accuracy": 1.0, "random_idm_accuracy": 0.25,
       "probe_balanced_accuracy": probe, "oracle_balanced_accuracy": 1.0, "random_idm_balanced_accuracy": 0.5,
       "scratch_normalised": 0.3, "offline_sweep": {"256": {"normalised": probe / 2}}}
  if online is not None:
    r["online_normalised"] = online
  return r


def test_lapo_summary_is_iqm_with_intervals_and_counts_seeds():
  per_seed = [_lapo_seed(0, 0.1, 0.4), _lapo_seed(1, 0.5, float("nan")), _lapo_seed(2, 0.6), _lapo_seed(3, 0.9, 0.2)]
  config = ml_collections.ConfigDict({"preset": "test", "env": {"name": "Breakout-MinAtar"}})
  r = lapo_report.summarise(config, None, {}, per_seed)
  p = r["probe_accuracy"]
  assert p["n"] == 4 and p["per_seed"] == [0.1, 0.5, 0.6, 0.9]
  assert p["iqm"] == pytest.approx(0.55) and p["mean"] == pytest.approx(0.525)   # IQM: (0.5 + 0.6) / 2
  assert 0.1 <= p["iqm_ci"][0] < 0.55 < p["iqm_ci"][1] <= 0.9
  assert r["probe_over_random_idm"]["iqm"] == pytest.approx(2.2)                 # per seed probe / 0.25
  assert r["oracle_accuracy"]["iqm_ci"] == [1.0, 1.0]                            # constant: a point
  assert r["online_normalised"]["n"] == 2 and r["online_normalised"]["per_seed"] == [0.4, 0.2]   # NaN dropped
  assert r["offline_sweep_normalised"]["256"]["iqm"] == pytest.approx(0.275)
  assert r["targets"]["probe >= 2 x random IDM"] and not r["targets"]["probe >= 0.9 x oracle"]
  assert "stratified-bootstrap" in r["interval"] and r["bootstrap_reps"] > 0
  again = lapo_report.summarise(config, None, {}, per_seed)
  assert again["probe_accuracy"]["iqm_ci"] == p["iqm_ci"]                       # seeded
  md = lapo_report.markdown(r)
  assert "IQM [95% CI] over 4 seeds [0, 1, 2, 3]" in md
  assert f"| latent probe accuracy, LAPO (VQ) | 0.55 [{p['iqm_ci'][0]:.2f}, {p['iqm_ci'][1]:.2f}] |" in md
  assert "(2 seeds)" in md.split("online decoding (RL + SL)")[1].splitlines()[0]
  assert "95% stratified-bootstrap confidence interval" in md and "4 seeds." in md
  assert np.isfinite(r["scratch_normalised"]["iqm"])


def test_lapo_resummary_of_an_older_results_json(tmp_path):
  """A results.json written before rliable (mean, std, per_seed) summarised again: IQM = mean for 3 seeds, the
  interval inside the seeds' range, an ablation run on fewer seeds counted as such, the targets checked again, and
  the output directory claimed (a foreign one refused)."""
  old = {"method": "lapo", "preset": "cpu", "env": "Breakout-MinAtar", "seeds": [0, 1, 2], "references": {},
         "probe_over_oracle": {"mean": 0.9, "std": 0.1, "per_seed": [0.8, 0.9, 1.0]},
         "probe_over_random_idm": {"mean": 1.0, "std": 0.0, "per_seed": [1.0, 1.0, 1.0]},
         "scratch_normalised": {"mean": 0.2, "std": 0.0, "per_seed": [0.2, 0.2, 0.2]},
         "online_normalised": {"mean": 0.1, "std": 0.1, "per_seed": [0.0, 0.1, 0.2]},
         "online_rl_no_sl_normalised": {"mean": 0.5, "std": 0.1, "per_seed": [0.4, 0.6]},
         "offline_sweep_normalised": {"256": {"mean": 0.3, "std": 0.1, "per_seed": [0.2, 0.3, 0.4]}},
         "targets": {"stale": True}}
  r = lapo_report.resummarise(old)
  assert r["probe_over_oracle"]["iqm"] == pytest.approx(0.9) and "std" not in r["probe_over_oracle"]
  lo, hi = r["probe_over_oracle"]["iqm_ci"]
  assert 0.8 <= lo < 0.9 < hi <= 1.0
  assert r["online_rl_no_sl_normalised"]["n"] == 2 and r["online_rl_no_sl_normalised"]["iqm"] == pytest.approx(0.5)
  assert r["offline_sweep_normalised"]["256"]["iqm"] == pytest.approx(0.3)
  assert r["targets"] == {"probe >= 0.9 x oracle": True, "probe >= 2 x random IDM": False,
                          "offline decoding with 256 labels >= 0.6": False,
                          "offline decoding with 256 labels >= PPO from scratch": True,
                          "online decoding >= 0.9": False, "online decoding ahead of PPO from scratch": False}
  run = tmp_path / "run"
  run.mkdir()
  (run / "results.json").write_text(json.dumps(old))
  lapo_report.aggregate_run([str(run)], str(tmp_path / "out"))
  assert json.loads((tmp_path / "out" / "results.json").read_text())["probe_over_oracle"]["iqm_ci"] == [lo, hi]
  assert "IQM [95% CI] over 3 seeds" in (tmp_path / "out" / "results.md").read_text()
  (tmp_path / "theirs").mkdir()
  (tmp_path / "theirs" / "notes.txt").write_text("mine")
  with pytest.raises(VidrlError, match="did not write"):
    lapo_report.aggregate_run([str(run)], str(tmp_path / "theirs"))
  assert (tmp_path / "theirs" / "notes.txt").read_text() == "mine"
  with pytest.raises(VidrlError, match="not a LAPO run"):
    lapo_report.resummarise({"method": "aime"})


def _aime_workdir(root, name: str, seed: int, aime: list[list[float]], bco: list[list[float]], bc: list[float],
                  **config) -> str:
  """A finished AIME workdir of 2 datasets (a, b) x 2 demo tasks (x, y): config.json and results.json."""
  rows, cols = ["a", "b"], ["x", "y"]
  table = {"mdp": {"aime": {r: dict(zip(cols, v)) for r, v in zip(rows, aime)},
                   "bco": {r: dict(zip(cols, v)) for r, v in zip(rows, bco)},
                   "bc": dict(zip(cols, bc)), "ablations": {"idm": aime[0][0] / 2}}}
  d = root / name
  d.mkdir()
  (d / "config.json").write_text(json.dumps({"seed": seed, "datasets": rows, "demos": cols, "lr": 1e-3, **config}))
  (d / "results.json").write_text(json.dumps({"table": table, "experts": {"x": 10.0, "y": 20.0}}))
  return str(d)


def _two_seeds(tmp_path):
  s0 = _aime_workdir(tmp_path, "s0", 0, [[0.5, 0.7], [0.1, 0.9]], [[0.2, 0.3], [0.3, 0.4]], [0.6, 0.8])
  s1 = _aime_workdir(tmp_path, "s1", 1, [[0.7, 0.5], [0.25, 0.6]], [[0.4, 0.1], [0.1, 0.2]], [1.0, 0.8])
  return [s0, s1]


def test_aime_seed_aggregation_by_hand(tmp_path):
  out = str(tmp_path / "agg")
  r = aime_report.aggregate_seeds(_two_seeds(tmp_path), out, reps=100)
  s = r["settings"]["mdp"]
  assert r["seeds"] == [0, 1] and r["n_seeds"] == 2 and s["cells"] == ["a/x", "a/y", "b/x", "b/y"]
  assert s["per_cell"]["aime"]["a/x"]["iqm"] == pytest.approx(0.6)            # 2 seeds: the mean of 0.5 and 0.7
  assert s["per_cell"]["aime"]["a/x"]["per_seed"] == [0.5, 0.7]
  assert s["per_cell"]["aime"]["a/x"]["iqm_ci"] == pytest.approx([0.5, 0.7])   # resamples (.5,.5) .. (.7,.7)
  # AIME's 8 scores sorted .1 .25 .5 .5 .6 .7 .7 .9: IQM = mean(.5 .5 .6 .7); BCO(0): .1 .1 .2 .2 .3 .3 .4 .4
  assert s["overall"]["aime"]["iqm"] == pytest.approx(0.575) and s["overall"]["bco"]["iqm"] == pytest.approx(0.25)
  assert s["overall"]["aime"]["n"] == 2 and s["overall"]["aime"]["tasks"] == 4
  lo, hi = s["overall"]["aime"]["iqm_ci"]
  assert 0.1 <= lo <= 0.575 <= hi <= 0.9
  # Pairs per cell (AIME run vs BCO(0) run): a/x 4 of 4; a/y 4/4; b/x (.1, .25 vs .3, .1): 1 + a tie = 1.5/4; b/y 4/4.
  assert s["p_aime_over_bco"]["p"] == pytest.approx((1 + 1 + 1.5 / 4 + 1) / 4)
  # Seed means: AIME .6 .6 .175 .75 vs BCO(0) .3 .2 .2 .3: ahead in 3 cells; per seed 3 (b/x .1 < .3) and 4.
  assert s["aime_ahead_of_bco"]["cells_ahead_of_seed_means"] == 3 and s["aime_ahead_of_bco"]["per_seed"] == [3, 4]
  assert s["per_cell"]["bc"]["x"]["iqm"] == pytest.approx(0.8) and s["ablations"]["idm"]["iqm"] == pytest.approx(0.3)
  prof = s["profiles"]
  tau = prof["AIME"]["tau"]
  assert tau[20] == pytest.approx(0.5)
  assert prof["AIME"]["profile"][20] == pytest.approx(4 / 8) and prof["BCO(0)"]["profile"][20] == 0.0   # > 0.5
  assert prof["BC (true actions)"]["profile"][20] == 1.0
  for name in ("results.json", "results.md", "profile_mdp.png", "iqm_mdp.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0
  md = open(os.path.join(out, "results.md")).read()
  assert "# AIME over 2 seeds [0, 1]" in md and "95% stratified-bootstrap confidence interval" in md
  assert "| a | 0.60 [0.50, 0.70] / 0.30 [0.20, 0.40] |" in md and "in 3 of 4 cells" in md
  first = json.load(open(os.path.join(out, "results.json")))
  again = aime_report.aggregate_seeds([str(tmp_path / "s0"), str(tmp_path / "s1")], out, reps=100)   # rerun: same
  assert json.loads(json.dumps(again["settings"])) == first["settings"]


def test_aime_seed_aggregation_refuses_bad_inputs(tmp_path):
  s0, s1 = _two_seeds(tmp_path)
  out = tmp_path / "agg"
  bad = _aime_workdir(tmp_path, "lr", 2, [[0, 0], [0, 0]], [[0, 0], [0, 0]], [0, 0], lr=3e-4)
  with pytest.raises(VidrlError, match=r"keys \['lr'\] differ"):
    aime_report.aggregate_seeds([s0, bad], str(out), reps=10)
  with pytest.raises(VidrlError, match="seed 0 like an earlier"):
    aime_report.aggregate_seeds([s0, s0], str(out), reps=10)
  (tmp_path / "s1" / "results.json").write_text("{not json")
  with pytest.raises(VidrlError, match="s1/results.json is not valid JSON"):
    aime_report.aggregate_seeds([s0, s1], str(out), reps=10)
  os.remove(tmp_path / "s1" / "results.json")
  with pytest.raises(VidrlError, match="s1/results.json does not exist"):
    aime_report.aggregate_seeds([s0, s1], str(out), reps=10)
  assert not out.exists()                                         # nothing written before the inputs are checked
  with pytest.raises(VidrlError, match="did not write"):          # never into a directory the project did not write
    aime_report.aggregate_seeds([s0], s0, reps=10)
  assert sorted(os.listdir(s0)) == ["config.json", "results.json"]


def test_rlv_curves_are_iqm_with_intervals_by_hand(tmp_path):
  """4 seeds per condition: IQM per env step is the mean of the middle two; the table and plots say so."""
  x = np.array([100, 200])
  sac = [(x, np.array([v, 2 * v])) for v in (-100.0, -80.0, -60.0, 0.0)]         # IQM -70 then -140
  rlv = [(x, np.array([v, v / 2])) for v in (-90.0, -50.0, -40.0, -30.0)]        # IQM -45 then -22.5
  config = ml_collections.ConfigDict({"seeds": [0, 1, 2, 3], "ablation_quality": "medium"})
  pools = {"medium": {"mean_return": -20.0, "episodes": 3}}
  r = rlv_report.summarise(config, pools, {"sac": sac, "rlv/medium": rlv}, {"total": 1.0})
  c = r["curves"]["rlv/medium"]
  assert c["n"] == 4 and c["env_steps"] == [100, 200] and c["iqm"] == pytest.approx([-45.0, -22.5])
  assert c["mean"] == pytest.approx([-52.5, -26.25])
  assert all(lo < m < hi for lo, m, hi in zip(c["iqm_ci_low"], c["iqm"], c["iqm_ci_high"]))
  assert r["final"]["sac"]["iqm"] == pytest.approx(-140.0) and r["final"]["sac"]["n"] == 4
  md = rlv_report.markdown(r)
  assert "| rlv/medium | 4 | 200 |" in md and "95% stratified-bootstrap confidence interval" in md
  paths = rlv_report.plots_of(str(tmp_path), r, pools)
  assert [os.path.basename(p) for p in paths] == ["returns_medium.png", "ablations.png"]   # sac + rlv/medium each
  assert all(os.path.getsize(p) > 0 for p in paths)
  series, spread, what = rlv_report.iqm_bands(r["curves"])
  assert list(series) == ["rlv/medium (4 seeds)", "sac (4 seeds)"] and "IQM" in what
  assert series["sac (4 seeds)"][1] == pytest.approx([-70.0, -140.0]) and spread["sac (4 seeds)"][0][0] <= -70.0


def test_aggregate_seeds_script(tmp_path, capsys):
  spec = importlib.util.spec_from_file_location("aggregate_seeds", os.path.join(ROOT, "scripts", "aggregate_seeds.py"))
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  s0, s1 = _two_seeds(tmp_path)
  script.main(["aime", s0, s1, "--out", str(tmp_path / "agg"), "--reps", "50"])
  assert "# AIME over 2 seeds [0, 1]" in capsys.readouterr().out
  assert json.load(open(tmp_path / "agg" / "results.json"))["bootstrap_reps"] == 50
  with pytest.raises(SystemExit, match=r"^error: .*missing/results.json does not exist; ") as e:
    script.main(["aime", s0, str(tmp_path / "missing"), "--out", str(tmp_path / "agg")])
  assert not re.search(r"[.;]\s+[A-Z]", str(e.value))   # one sentence
