"""Statistics for every method's reports: mean with standard error over seeds (as the papers report), the
interquartile mean (IQM) with percentile-bootstrap confidence intervals (Agarwal et al. 2021, "Deep RL at the edge
of the statistical precipice", the `rliable` library), learning curves aggregated over seeds, and the steps a curve
takes to reach a threshold with a bootstrap interval for the ratio of two methods' steps (RLV's "steps to SAC's
final return").

Definitions (all in numpy, deterministic given `seed`):
- `se`: sample standard deviation (ddof 1) / sqrt(n); 0 for one run.
- `iqm`: rliable's `aggregate_iqm`, `scipy.stats.trim_mean(scores, 0.25, axis=None)`: sort the n scores, drop
  floor(n / 4) from each end, average the rest (n=5: the middle 3; n=6: the middle 4). rliable does not weight the
  boundary scores fractionally, so neither does this, so our IQMs equal rliable's.
- `bootstrap_ci`: the percentile interval of a statistic over `reps` resamples of the runs with replacement; with
  scores (runs, tasks) the runs of each task are resampled independently (rliable's stratified bootstrap) and the
  statistic sees the whole (runs, tasks) resample. rliable takes the percentiles via `arch`; here they are numpy's
  linear-interpolated quantiles at (1 - confidence) / 2 and (1 + confidence) / 2.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.stats

from vidrl_jax.errors import VidrlError

Curve = tuple[Sequence[float], Sequence[float]]


def _scores(scores) -> np.ndarray:
  x = np.asarray(scores, np.float64)
  if x.size == 0 or x.ndim not in (1, 2):
    raise VidrlError(f"scores must be a non-empty (runs,) or (runs, tasks) array, got shape {x.shape}; pass one "
                     f"number per seed (and per task)")
  if not np.all(np.isfinite(x)):
    raise VidrlError("scores contain NaN or inf; drop the failed runs before aggregating")
  return x


def mean(scores) -> float:
  return float(np.mean(_scores(scores)))


def se(scores) -> float:
  """Standard error of the mean over all scores (ddof 1); 0 for a single score."""
  x = _scores(scores).ravel()
  return float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def iqm(scores, axis: int | None = None) -> float | np.ndarray:
  """rliable's interquartile mean: the 25%-trimmed mean over `axis` (None: all scores)."""
  return scipy.stats.trim_mean(np.asarray(scores, np.float64), proportiontocut=0.25, axis=axis)


def _resample_ids(runs: int, reps: int, rng: np.random.Generator) -> np.ndarray:
  return rng.integers(0, runs, size=(reps, runs))


def bootstrap_ci(scores, statistic: Callable[[np.ndarray], float] = np.mean, reps: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
  """Percentile bootstrap interval of `statistic` (of a (runs,) or (runs, tasks) array), stratified over tasks."""
  x = _scores(scores)
  if not 0 < confidence < 1 or reps < 1:
    raise VidrlError(f"the bootstrap needs 0 < confidence < 1 and reps >= 1, got {confidence} and {reps}")
  rng = np.random.default_rng(seed)
  if x.ndim == 1:
    samples = x[_resample_ids(len(x), reps, rng)]                              # (reps, runs)
  else:
    cols = [x[_resample_ids(len(x), reps, rng), j] for j in range(x.shape[1])]   # each (reps, runs)
    samples = np.stack(cols, axis=-1)                                           # (reps, runs, tasks)
  values = np.array([statistic(s) for s in samples])
  lo, hi = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
  return float(lo), float(hi)


def summary(scores, reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
  """{n, mean, se, iqm, mean_ci, iqm_ci} of the scores (a (runs,) or stratified (runs, tasks) array)."""
  x = _scores(scores)
  ci = lambda f: list(bootstrap_ci(x, f, reps, confidence, seed))
  return dict(n=int(x.shape[0]), mean=mean(x), se=se(x), iqm=float(iqm(x)), mean_ci=ci(np.mean),
              iqm_ci=ci(lambda s: iqm(s)))


def align(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray]:
  """(x, ys): the x every curve has, ascending, and the curves' y there, (runs, len(x)). A curve's repeated x keeps
  its last y (a resumed run rewrites its rows)."""
  if not curves:
    raise VidrlError("no curves to aggregate; pass one (x, y) per seed")
  maps = []
  for x, y in curves:
    if len(x) != len(y):
      raise VidrlError(f"a curve has {len(x)} x values but {len(y)} y values; pass matching (x, y) arrays")
    maps.append(dict(zip(np.asarray(x).tolist(), np.asarray(y, np.float64).tolist())))
  common = sorted(set.intersection(*[set(m) for m in maps]))
  return np.asarray(common), np.array([[m[s] for s in common] for m in maps], np.float64).reshape(len(maps), -1)


def aggregate_curves(curves: Sequence[Curve], reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
  """Per common x over the seeds' curves: mean, se, iqm and the bootstrap intervals of mean and IQM (lists)."""
  x, ys = align(curves)
  n = len(ys)
  ids = _resample_ids(n, reps, np.random.default_rng(seed))
  boot = ys[ids]                                                   # (reps, runs, X)
  q = [(1 - confidence) / 2, (1 + confidence) / 2]
  mean_ci = np.quantile(boot.mean(axis=1), q, axis=0)
  iqm_ci = np.quantile(iqm(boot, axis=1), q, axis=0)
  se_ = ys.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(ys.shape[1])
  return dict(x=x.tolist(), n=n, mean=ys.mean(0).tolist(), se=se_.tolist(), iqm=np.atleast_1d(iqm(ys, 0)).tolist(),
              mean_ci_low=mean_ci[0].tolist(), mean_ci_high=mean_ci[1].tolist(), iqm_ci_low=iqm_ci[0].tolist(),
              iqm_ci_high=iqm_ci[1].tolist(), final=ys[:, -1].tolist() if ys.shape[1] else [])


def steps_to(curve_x, curve_y, threshold: float) -> float | None:
  """The first x at which the curve's y reaches `threshold` (y >= threshold), None if it never does."""
  x, y = np.asarray(curve_x), np.asarray(curve_y, np.float64)
  if x.shape != y.shape:
    raise VidrlError(f"steps_to needs x and y of one shape, got {x.shape} and {y.shape}")
  hit = np.nonzero(y >= threshold)[0]
  return x[hit[0]].item() if len(hit) else None


def steps_ratio(curves_a: Sequence[Curve], curves_b: Sequence[Curve], threshold: float, reps: int = 2000,
                confidence: float = 0.95, seed: int = 0) -> dict:
  """steps_a / steps_b for the seeds' mean curves of two methods (a: RLV, b: SAC) to reach `threshold`, and its
  bootstrap interval: each resample redraws the seeds of each method with replacement, averages them into a mean
  curve and takes its steps. `never` is the fraction of resamples where either mean curve never reaches the
  threshold, or b reaches it at x = 0 (they are left out of the interval; None when all are)."""
  xa, ya = align(curves_a)
  xb, yb = align(curves_b)
  a, b = steps_to(xa, ya.mean(0), threshold), steps_to(xb, yb.mean(0), threshold)
  rng = np.random.default_rng(seed)
  means_a = ya[_resample_ids(len(ya), reps, rng)].mean(1)          # (reps, X)
  means_b = yb[_resample_ids(len(yb), reps, rng)].mean(1)
  ratios = []
  for ma, mb in zip(means_a, means_b):
    sa, sb = steps_to(xa, ma, threshold), steps_to(xb, mb, threshold)
    if sa is not None and sb is not None and sb > 0:
      ratios.append(sa / sb)
  ci = (np.quantile(ratios, [(1 - confidence) / 2, (1 + confidence) / 2]).tolist() if ratios else None)
  return dict(threshold=float(threshold), steps_a=a, steps_b=b,
              ratio=None if a is None or b is None or b == 0 else a / b, ratio_ci=ci,
              never=1.0 - len(ratios) / reps, reps=int(reps))
