"""Statistics for every method's reports, computed with `rliable` (Agarwal et al. 2021, "Deep RL at the edge of the
statistical precipice"): the interquartile mean (IQM) and the mean over runs, each with a stratified-bootstrap
confidence interval; performance profiles (the fraction of runs above a score threshold) where there are several
tasks; the probability that one method improves on another; learning curves aggregated over seeds; and the steps a
curve takes to reach a threshold with a bootstrap interval for the ratio of two methods' steps (RLV's "steps to
SAC's final return"). Hand-written mean +- std hides how few seeds there are; an interval says it.

Definitions:
- scores are (runs,) or (runs, tasks); one run per seed. A (runs,) array is one task.
- `iqm`: rliable's `aggregate_iqm`, `scipy.stats.trim_mean(scores, 0.25, axis=None)`: sort the n scores, drop
  floor(n / 4) from each end, average the rest (n=8: the middle 4; n=3: all 3, so IQM = mean for 3 seeds).
- intervals: rliable's `get_interval_estimates` (percentile method): `reps` resamples where the runs of each task
  are drawn with replacement independently of the other tasks (stratified bootstrap; the tasks themselves are kept),
  the statistic of each resample, and the (1 - confidence) / 2 and (1 + confidence) / 2 percentiles. One run gives
  a point interval: a single seed carries no spread.
- determinism: rliable's `StratifiedBootstrap` draws its indices with numpy's global RNG (`np.random.choice`), not
  with arch's `seed`/`random_state`, so every call here seeds the global RNG with `seed` and restores the caller's
  RNG state afterwards (`seeded`): the same scores, reps and seed give the same interval.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.stats
from rliable import library as rly
from rliable import metrics as rly_metrics

from vidrl_jax.errors import VidrlError

Curve = tuple[Sequence[float], Sequence[float]]
REPS = 2000          # bootstrap resamples by default (rliable's performance-profile default); reports may pass more
CONFIDENCE = 0.95


def interval_name(confidence: float = CONFIDENCE) -> str:
  """The words a results table uses for the intervals computed here."""
  return f"{100 * confidence:g}% stratified-bootstrap confidence interval (rliable, percentile method)"


def seeds(n: int) -> str:
  """'1 seed', '3 seeds': how many runs a number stands on, as tables and plot labels say it."""
  return f"{n} seed{'' if n == 1 else 's'}"


def _scores(scores) -> np.ndarray:
  x = np.asarray(scores, np.float64)
  if x.size == 0 or x.ndim not in (1, 2):
    raise VidrlError(f"scores must be a non-empty (runs,) or (runs, tasks) array, got shape {x.shape}; pass one "
                     f"number per seed (and per task)")
  if not np.all(np.isfinite(x)):
    raise VidrlError("scores contain NaN or inf; drop the failed runs before aggregating")
  return x


def _table(scores) -> np.ndarray:
  """(runs, tasks): a (runs,) array is one task."""
  x = _scores(scores)
  return x[:, None] if x.ndim == 1 else x


def _check(reps: int, confidence: float) -> None:
  if not 0 < confidence < 1 or reps < 1:
    raise VidrlError(f"the bootstrap needs 0 < confidence < 1 and reps >= 1, got {confidence} and {reps}")


@contextlib.contextmanager
def seeded(seed: int):
  """numpy's global RNG seeded with `seed` inside the block (rliable draws from it), the caller's state after."""
  state = np.random.get_state()
  np.random.seed(seed)
  try:
    yield
  finally:
    np.random.set_state(state)


def mean(scores) -> float:
  return float(np.mean(_scores(scores)))


def se(scores) -> float:
  """Standard error of the mean over all scores (ddof 1); 0 for a single score."""
  x = _scores(scores).ravel()
  return float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def iqm(scores, axis: int | None = None) -> float | np.ndarray:
  """rliable's interquartile mean: the 25%-trimmed mean over `axis` (None: all scores, `aggregate_iqm` itself)."""
  x = np.asarray(scores, np.float64)
  if axis is None:
    return float(rly_metrics.aggregate_iqm(x))
  return scipy.stats.trim_mean(x, proportiontocut=0.25, axis=axis)


def interval_estimates(score_dict: Mapping[str, np.ndarray], func: Callable[..., np.ndarray], reps: int = REPS,
                       confidence: float = CONFIDENCE, seed: int = 0) -> tuple[dict, dict]:
  """rliable's `get_interval_estimates` (stratified bootstrap, percentile method) under `seeded(seed)`:
  ({key: func(scores)}, {key: (2, len(func(scores))) lower and upper bounds}). A value of `score_dict` may be a list
  of arrays (resampled independently; `func` gets them as arguments)."""
  _check(reps, confidence)
  with seeded(seed):
    return rly.get_interval_estimates(dict(score_dict), func, reps=reps, confidence_interval_size=confidence)


def bootstrap_ci(scores, statistic: Callable[[np.ndarray], float] = rly_metrics.aggregate_mean, reps: int = REPS,
                 confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
  """The stratified-bootstrap interval of `statistic` of a (runs,) or (runs, tasks) array (it sees (runs, tasks))."""
  _, ci = interval_estimates({"x": _table(scores)}, lambda s: np.array([statistic(s)]), reps, confidence, seed)
  return float(ci["x"][0, 0]), float(ci["x"][1, 0])


def summary(scores, reps: int = REPS, confidence: float = CONFIDENCE, seed: int = 0) -> dict:
  """{n (runs), tasks, mean, se, iqm, mean_ci, iqm_ci, reps, confidence} of a (runs,) or (runs, tasks) array; the
  intervals are one stratified bootstrap (the same resamples for both)."""
  x = _table(scores)
  point, ci = interval_estimates({"x": x}, lambda s: np.array([rly_metrics.aggregate_mean(s),
                                                                rly_metrics.aggregate_iqm(s)]), reps, confidence, seed)
  lo, hi = ci["x"]
  return dict(n=int(x.shape[0]), tasks=int(x.shape[1]), mean=float(point["x"][0]), se=se(x),
              iqm=float(point["x"][1]), mean_ci=[float(lo[0]), float(hi[0])], iqm_ci=[float(lo[1]), float(hi[1])],
              reps=int(reps), confidence=float(confidence))


def improvement(scores_x, scores_y) -> float:
  """rliable's `metrics.probability_of_improvement` P(X > Y), vectorised (rliable runs scipy's Mann-Whitney test per
  task: 27 s for 2000 resamples of 3 runs x 15 tasks on the 2-core CPU, 0.2 s here): per task the share of (run of
  X, run of Y) pairs that X wins, a tie counting 1/2 (= U / (n_x n_y)), averaged over tasks."""
  d = np.asarray(scores_x, np.float64)[:, None, :] - np.asarray(scores_y, np.float64)[None, :, :]
  return float(np.mean((d > 0) + 0.5 * (d == 0)))


def probability_of_improvement(scores_x, scores_y, reps: int = REPS, confidence: float = CONFIDENCE,
                               seed: int = 0) -> dict:
  """P(X > Y) (`improvement`) with its interval, X's and Y's runs resampled independently within each task
  (rliable's `StratifiedIndependentBootstrap`)."""
  x, y = _table(scores_x), _table(scores_y)
  if x.shape[1] != y.shape[1]:
    raise VidrlError(f"probability of improvement needs the same tasks for both methods, got {x.shape[1]} and "
                     f"{y.shape[1]} columns; pass (runs, tasks) arrays with the tasks in the same order")
  point, ci = interval_estimates({"p": [x, y]}, lambda a, b: np.array([improvement(a, b)]), reps, confidence, seed)
  return dict(p=float(point["p"][0]), ci=[float(ci["p"][0, 0]), float(ci["p"][1, 0])], reps=int(reps),
              confidence=float(confidence))


def performance_profile(score_dict: Mapping[str, np.ndarray], taus: Sequence[float], reps: int = REPS,
                        confidence: float = CONFIDENCE, seed: int = 0) -> dict:
  """rliable's score distributions: per method and threshold tau, the fraction of all its (run, task) scores above
  tau, with stratified-bootstrap intervals -> {method: {tau, profile, ci_low, ci_high}} (lists)."""
  _check(reps, confidence)
  scores = {k: _table(v) for k, v in score_dict.items()}
  taus = np.asarray(taus, np.float64)
  with seeded(seed):
    profiles, cis = rly.create_performance_profile(scores, taus, reps=reps, confidence_interval_size=confidence)
  return {k: dict(tau=taus.tolist(), profile=np.asarray(profiles[k]).tolist(), ci_low=cis[k][0].tolist(),
                  ci_high=cis[k][1].tolist()) for k in scores}


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


def columns(ys, reps: int = REPS, confidence: float = CONFIDENCE, seed: int = 0) -> dict:
  """Per column of a (runs, columns) array (an env step of a curve, a metric of a report): mean, se, IQM and their
  stratified-bootstrap intervals (each column a stratum: its runs resampled with replacement), as lists; one
  bootstrap for all columns, so a report with many metrics pays for one."""
  ys = _scores(ys)
  if ys.ndim != 2:
    raise VidrlError(f"columns needs a (runs, columns) array, got shape {ys.shape}; stack the seeds' values as rows")
  n, k = ys.shape
  point, ci = interval_estimates({"c": ys}, lambda s: np.concatenate([s.mean(0), iqm(s, 0)]), reps, confidence, seed)
  se_ = ys.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(k)
  lo, hi = ci["c"]
  return dict(n=n, reps=int(reps), confidence=float(confidence), mean=point["c"][:k].tolist(), se=se_.tolist(),
              iqm=point["c"][k:].tolist(), mean_ci_low=lo[:k].tolist(), mean_ci_high=hi[:k].tolist(),
              iqm_ci_low=lo[k:].tolist(), iqm_ci_high=hi[k:].tolist())


def aggregate_curves(curves: Sequence[Curve], reps: int = REPS, confidence: float = CONFIDENCE, seed: int = 0) -> dict:
  """`columns` of the seeds' curves at their common x (`align`), with `x` and `final` (the seeds' last values)."""
  x, ys = align(curves)
  out = dict(x=x.tolist(), final=ys[:, -1].tolist() if ys.shape[1] else [])
  if not ys.shape[1]:
    keys = ("mean", "se", "iqm", "mean_ci_low", "mean_ci_high", "iqm_ci_low", "iqm_ci_high")
    return dict(out, n=len(ys), reps=int(reps), confidence=float(confidence), **{key: [] for key in keys})
  return dict(out, **columns(ys, reps, confidence, seed))


def steps_to(curve_x, curve_y, threshold: float) -> float | None:
  """The first x from which the curve's y stays at or above `threshold` to its end, None if its last y is below
  (a curve that touches the threshold and falls back has not reached it)."""
  x, y = np.asarray(curve_x), np.asarray(curve_y, np.float64)
  if x.shape != y.shape:
    raise VidrlError(f"steps_to needs x and y of one shape, got {x.shape} and {y.shape}")
  below = np.nonzero(y < threshold)[0]
  if not len(y) or (len(below) and below[-1] == len(y) - 1):
    return None
  return x[below[-1] + 1 if len(below) else 0].item()


def steps_ratio(curves_a: Sequence[Curve], curves_b: Sequence[Curve], threshold: float, reps: int = REPS,
                confidence: float = CONFIDENCE, seed: int = 0) -> dict:
  """steps_a / steps_b for the seeds' mean curves of two methods (a: RLV, b: SAC) to reach `threshold`, and its
  bootstrap interval: each resample (rliable's `StratifiedIndependentBootstrap` of the two methods' seed ids, so a
  seed's whole curve is kept) redraws the seeds of each method with replacement, averages them into a mean curve
  and takes its steps. `never` is the fraction of resamples where either mean curve never reaches the threshold, or
  b reaches it at x = 0 (they are left out of the interval; None when all are)."""
  _check(reps, confidence)
  xa, ya = align(curves_a)
  xb, yb = align(curves_b)
  a, b = steps_to(xa, ya.mean(0), threshold), steps_to(xb, yb.mean(0), threshold)
  ratios = []
  with seeded(seed):
    boot = rly.StratifiedIndependentBootstrap(np.arange(len(ya))[:, None], np.arange(len(yb))[:, None])
    for (ia, ib), _ in boot.bootstrap(reps):
      sa, sb = steps_to(xa, ya[ia[:, 0]].mean(0), threshold), steps_to(xb, yb[ib[:, 0]].mean(0), threshold)
      if sa is not None and sb is not None and sb > 0:
        ratios.append(sa / sb)
  q = [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2]
  return dict(threshold=float(threshold), steps_a=a, steps_b=b,
              ratio=None if a is None or b is None or b == 0 else a / b,
              ratio_ci=np.percentile(ratios, q).tolist() if ratios else None,
              never=1.0 - len(ratios) / reps, reps=int(reps))
