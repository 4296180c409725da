"""vidrl_jax.stats (rliable underneath) against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from rliable import metrics as rly_metrics

from vidrl_jax import stats
from vidrl_jax.errors import VidrlError


def test_iqm_hand_values():
  assert stats.iqm([10, 1, 7, 2, 6, 3, 5, -50]) == pytest.approx(4.0)    # 8 scores: middle 4 (2 + 3 + 5 + 6) / 4
  assert stats.iqm([100, 2, 1, 3]) == pytest.approx(2.5)                 # drop 1 each end: (2 + 3) / 2
  assert stats.iqm([4, 100, 1, 3, 2]) == pytest.approx(3.0)              # floor(5/4) = 1 each end: (2+3+4) / 3
  assert stats.iqm([1, 2, 9]) == pytest.approx(4.0)                      # 3 seeds: nothing trimmed, the mean
  assert stats.iqm([[1, 100], [2, -100], [3, 4], [5, 6]]) == pytest.approx(3.5)   # all 8 pooled: (2+3+4+5) / 4
  np.testing.assert_allclose(stats.iqm([[1, 10], [2, 20], [3, 30], [100, 0]], axis=0), [2.5, 15.0])


def test_mean_se_and_bad_input():
  assert stats.mean([1, 2, 3, 4]) == 2.5
  assert stats.se([1, 2, 3, 4]) == pytest.approx(np.sqrt(5 / 3) / 2)
  assert stats.se([7.0]) == 0.0
  with pytest.raises(VidrlError, match="NaN"):
    stats.summary([1.0, np.nan])
  with pytest.raises(VidrlError, match="non-empty"):
    stats.summary(np.zeros((2, 2, 2)))
  with pytest.raises(VidrlError, match="reps"):
    stats.bootstrap_ci([1.0, 2.0], reps=0)


def test_constant_scores_give_a_point_interval_and_one_seed_too():
  s = stats.summary(np.full(5, 2.5), reps=100)
  assert s["mean_ci"] == [2.5, 2.5] and s["iqm_ci"] == [2.5, 2.5] and s["se"] == 0.0 and s["n"] == 5
  s = stats.summary([[0.3, 0.7]], reps=100)          # one seed of two tasks: nothing to resample
  assert s["n"] == 1 and s["tasks"] == 2 and s["iqm_ci"] == [0.5, 0.5]


def test_interval_contains_the_estimates_and_is_reproducible_under_the_seed():
  x = np.random.default_rng(0).normal(3.0, 1.0, 12)
  s = stats.summary(x, reps=500, seed=3)
  assert s["iqm_ci"][0] < s["iqm"] < s["iqm_ci"][1] and s["mean_ci"][0] < s["mean"] < s["mean_ci"][1]
  assert s["iqm"] == pytest.approx(np.sort(x)[3:9].mean()) and s["mean"] == pytest.approx(x.mean())
  np.random.seed(123)
  before = np.random.get_state()[1].copy()
  assert stats.summary(x, reps=500, seed=3) == s                           # same seed: same interval
  np.testing.assert_array_equal(np.random.get_state()[1], before)          # the caller's global RNG untouched
  assert stats.summary(x, reps=500, seed=4)["iqm_ci"] != s["iqm_ci"]       # another seed: other resamples
  lo, hi = stats.bootstrap_ci(x, reps=500, seed=3)
  assert [lo, hi] == s["mean_ci"]


def test_bootstrap_is_stratified_over_tasks():
  """Each task's runs are resampled within the task: every resample's task-1 scores stay above task 0's."""
  rng = np.random.default_rng(1)
  x = np.stack([rng.uniform(0, 1, 5), rng.uniform(10, 11, 5)], axis=1)   # (runs, tasks)
  lo, _ = stats.bootstrap_ci(x, lambda s: s[:, 1].min() - s[:, 0].max(), reps=300)
  assert lo > 9.0
  # Task means are kept: the mean over tasks of a resample is (mean of task 0's draws + mean of task 1's) / 2,
  # inside [(min0 + min1) / 2, (max0 + max1) / 2].
  lo, hi = stats.bootstrap_ci(x, reps=300)
  assert (x.min(0).sum() / 2) <= lo < x.mean() < hi <= (x.max(0).sum() / 2)


def test_performance_profile_by_hand():
  """Fraction of all (run, task) scores strictly above tau."""
  scores = {"a": [[0.1, 0.5, 0.9], [0.3, 0.6, 1.2]], "b": [[0.0, 0.0, 2.0], [0.0, 0.0, 2.0]]}
  p = stats.performance_profile(scores, [0.0, 0.5, 1.0, 2.0], reps=200)
  assert p["a"]["profile"] == pytest.approx([1.0, 3 / 6, 1 / 6, 0.0])     # > .5: .9, .6, 1.2; > 1: 1.2
  assert p["b"]["profile"] == pytest.approx([2 / 6, 2 / 6, 2 / 6, 0.0])
  assert p["b"]["ci_low"] == pytest.approx(p["b"]["profile"]) == p["b"]["ci_high"]   # equal runs: point intervals
  assert all(lo <= v <= hi for lo, v, hi in zip(p["a"]["ci_low"], p["a"]["profile"], p["a"]["ci_high"]))
  assert p["a"]["ci_low"][1] < 0.5 < p["a"]["ci_high"][1]


def test_probability_of_improvement_by_hand():
  """Task 0: X (1, 3) vs Y (0, 1): 1>0, 1=1 (1/2), 3>0, 3>1 -> 3.5/4; task 1: X (2, 4) vs Y (2, 5): 1/2 + 1 -> 1.5/4."""
  r = stats.probability_of_improvement([[1, 2], [3, 4]], [[0, 2], [1, 5]], reps=300)
  assert r["p"] == pytest.approx((3.5 / 4 + 1.5 / 4) / 2)
  assert 0.0 <= r["ci"][0] <= r["p"] <= r["ci"][1] <= 1.0
  always = stats.probability_of_improvement([[2, 3], [4, 5]], [[0, 0], [1, 1]], reps=100)
  assert always["p"] == 1.0 and always["ci"] == [1.0, 1.0]
  rng = np.random.default_rng(2)   # with ties and unequal run counts: rliable's own (scipy's Mann-Whitney U)
  x, y = rng.integers(0, 4, (5, 3)).astype(float), rng.integers(0, 4, (3, 3)).astype(float)
  assert stats.improvement(x, y) == pytest.approx(rly_metrics.probability_of_improvement(x, y))
  assert stats.improvement(x, x) == 0.5
  with pytest.raises(VidrlError, match="same tasks"):
    stats.probability_of_improvement([[1, 2]], [[1, 2, 3]])


def test_aggregate_curves_on_common_x():
  curves = [([0, 10, 20], [0.0, 1.0, 2.0]), ([0, 10, 20, 30], [2.0, 3.0, 4.0, 9.0]), ([10, 20], [5.0, 6.0])]
  agg = stats.aggregate_curves(curves, reps=200)
  assert agg["x"] == [10, 20] and agg["n"] == 3 and agg["reps"] == 200
  np.testing.assert_allclose(agg["mean"], [3.0, 4.0])
  np.testing.assert_allclose(agg["se"], [2.0 / np.sqrt(3), 2.0 / np.sqrt(3)])   # std ddof 1 of (1,3,5) is 2
  np.testing.assert_allclose(agg["iqm"], [3.0, 4.0])                            # 3 runs: floor(3/4)=0, the mean
  assert agg["final"] == [2.0, 4.0, 6.0]
  for k in ("mean", "iqm"):   # interval inside the range of the seeds at that x, around the estimate
    assert all(lo_ <= lo <= m <= hi <= hi_ for lo, m, hi, lo_, hi_ in
               zip(agg[f"{k}_ci_low"], agg[k], agg[f"{k}_ci_high"], [1.0, 2.0], [5.0, 6.0]))
    assert agg[f"{k}_ci_low"][0] < 3.0 < agg[f"{k}_ci_high"][0]
  flat = stats.aggregate_curves([([0, 1], [2.0, 3.0]), ([0, 1], [2.0, 3.0])], reps=50)
  assert flat["iqm_ci_low"] == flat["iqm_ci_high"] == [2.0, 3.0]


def test_steps_to():
  x, y = [0, 10, 20, 30], [0.0, 1.0, 5.0, 5.0]
  assert stats.steps_to(x, y, 4.0) == 20
  assert stats.steps_to(x, y, 5.0) == 20          # reaching counts
  assert stats.steps_to(x, y, 1.0) == 10
  assert stats.steps_to(x, y, 0.0) == 0
  assert stats.steps_to(x, y, 6.0) is None
  # A curve that touches the threshold and falls back has not reached it (issue #20: rlv/low at -100 throughout
  # but for one evaluation counted as reaching SAC's final return): it counts from where it stays above.
  touch = [0.0, 5.0, 1.0, 5.0, 6.0]
  assert stats.steps_to([0, 10, 20, 30, 40], touch, 4.0) == 30
  assert stats.steps_to([0, 10, 20], touch[:3], 4.0) is None
  assert stats.steps_to([], [], 4.0) is None


def test_steps_ratio():
  xs = [0, 10, 20, 30, 40]
  fast = [(xs, [0, 5, 6, 7, 8]), (xs, [1, 5, 6, 7, 8])]     # both reach 4 at 10
  slow = [(xs, [0, 1, 2, 3, 5]), (xs, [0, 1, 2, 3, 4])]     # mean reaches 4 at 40
  r = stats.steps_ratio(fast, slow, 4.0, reps=300)
  assert (r["steps_a"], r["steps_b"], r["ratio"], r["never"]) == (10, 40, 0.25, 0.0)
  assert r["ratio_ci"] == [0.25, 0.25]
  # A seed of b that ends below 4: resamples drawing it twice never reach 4 (1/4 of them: whole curves resampled).
  slow2 = [(xs, [0, 1, 2, 3, 5]), (xs, [0, 1, 2, 3, 3.5])]  # mean 4.25 at 40
  r = stats.steps_ratio(fast, slow2, 4.0, reps=2000)
  assert r["ratio"] == 0.25 and 0.2 < r["never"] < 0.3 and r["ratio_ci"] == [0.25, 0.25]
  assert stats.steps_ratio(fast, slow2, 4.0, reps=2000) == r               # seeded
  r = stats.steps_ratio(fast, [(xs, [0, 0, 0, 0, 0])], 4.0, reps=50)
  assert r["ratio"] is None and r["never"] == 1.0 and r["ratio_ci"] is None
