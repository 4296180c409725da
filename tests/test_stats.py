"""vidrl_jax.stats against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from vidrl_jax import stats
from vidrl_jax.errors import VidrlError


def test_iqm_hand_values():
  assert stats.iqm([100, 2, 1, 3]) == pytest.approx(2.5)                 # drop 1 each end: (2 + 3) / 2
  assert stats.iqm([4, 100, 1, 3, 2]) == pytest.approx(3.0)              # floor(5/4) = 1 each end: (2+3+4) / 3
  assert stats.iqm([10, 1, 7, 2, 6, 3, 5, -50]) == pytest.approx(4.0)    # (2 + 3 + 5 + 6) / 4
  assert stats.iqm([[1, 100], [2, -100], [3, 4], [5, 6]]) == pytest.approx(3.5)   # all 8 pooled: (2+3+4+5) / 4


def test_mean_and_se():
  assert stats.mean([1, 2, 3, 4]) == 2.5
  assert stats.se([1, 2, 3, 4]) == pytest.approx(np.sqrt(5 / 3) / 2)
  assert stats.se([7.0]) == 0.0
  with pytest.raises(VidrlError):
    stats.se([1.0, np.nan])


def test_bootstrap_ci_contains_mean_and_is_a_point_for_constant_data():
  x = np.random.default_rng(0).normal(3.0, 1.0, 10)
  lo, hi = stats.bootstrap_ci(x)
  assert lo < x.mean() < hi
  assert stats.bootstrap_ci(x, seed=0) == (lo, hi)                       # fixed seed: reproducible
  assert stats.bootstrap_ci(np.full(5, 2.5)) == (2.5, 2.5)
  s = stats.summary([1.0, 1.0, 1.0])
  assert s["mean_ci"] == [1.0, 1.0] and s["iqm_ci"] == [1.0, 1.0] and s["se"] == 0.0 and s["n"] == 3


def test_bootstrap_is_stratified_over_tasks():
  rng = np.random.default_rng(1)
  x = np.stack([rng.uniform(0, 1, 5), rng.uniform(10, 11, 5)], axis=1)   # (runs, tasks)
  # Runs of the two tasks are never mixed: every resample's task-1 column stays above its task-0 column.
  lo, _ = stats.bootstrap_ci(x, lambda s: s[:, 1].min() - s[:, 0].max(), reps=500)
  assert lo > 9.0
  lo, hi = stats.bootstrap_ci(x, lambda s: stats.iqm(s), reps=500)
  assert lo <= stats.iqm(x) <= hi


def test_aggregate_curves_on_common_x():
  curves = [([0, 10, 20], [0.0, 1.0, 2.0]), ([0, 10, 20, 30], [2.0, 3.0, 4.0, 9.0]), ([10, 20], [5.0, 6.0])]
  agg = stats.aggregate_curves(curves, reps=200)
  assert agg["x"] == [10, 20] and agg["n"] == 3
  np.testing.assert_allclose(agg["mean"], [3.0, 4.0])
  np.testing.assert_allclose(agg["se"], [2.0 / np.sqrt(3), 2.0 / np.sqrt(3)])   # std ddof 1 of (1,3,5) is 2
  np.testing.assert_allclose(agg["iqm"], [3.0, 4.0])                            # 3 runs: floor(3/4)=0, the mean
  assert agg["final"] == [2.0, 4.0, 6.0]
  for k in ("mean", "iqm"):
    assert all(lo <= m <= hi for lo, m, hi in zip(agg[f"{k}_ci_low"], agg[k], agg[f"{k}_ci_high"]))


def test_steps_to():
  x, y = [0, 10, 20, 30], [0.0, 1.0, 5.0, 3.0]
  assert stats.steps_to(x, y, 4.0) == 20
  assert stats.steps_to(x, y, 5.0) == 20          # reaching counts
  assert stats.steps_to(x, y, 1.0) == 10
  assert stats.steps_to(x, y, 6.0) is None


def test_steps_ratio():
  xs = [0, 10, 20, 30, 40]
  fast = [(xs, [0, 5, 6, 7, 8]), (xs, [1, 5, 6, 7, 8])]     # both reach 4 at 10
  slow = [(xs, [0, 1, 2, 3, 5]), (xs, [0, 1, 2, 3, 4])]     # mean reaches 4 at 40
  r = stats.steps_ratio(fast, slow, 4.0, reps=300)
  assert (r["steps_a"], r["steps_b"], r["ratio"], r["never"]) == (10, 40, 0.25, 0.0)
  assert r["ratio_ci"] == [0.25, 0.25]
  # A seed of b that ends below 4: resamples drawing it twice never reach 4 (about 1/4 of them).
  slow2 = [(xs, [0, 1, 2, 3, 5]), (xs, [0, 1, 2, 3, 3.5])]  # mean 4.25 at 40
  r = stats.steps_ratio(fast, slow2, 4.0, reps=2000)
  assert r["ratio"] == 0.25 and 0.2 < r["never"] < 0.3 and r["ratio_ci"] == [0.25, 0.25]
  r = stats.steps_ratio(fast, [(xs, [0, 0, 0, 0, 0])], 4.0, reps=50)
  assert r["ratio"] is None and r["never"] == 1.0 and r["ratio_ci"] is None
