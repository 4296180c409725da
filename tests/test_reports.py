"""Reports' statistics on hand-made results: LAPO's summary and table, AIME's multi-seed aggregation."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from vidrl_jax.methods.lapo import report as lapo_report


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
