"""PNG plots written into the workdir (through `io`: it may be a bucket URL): learning curves, 2-d embeddings
coloured by label, image grids, and the multi-seed statistics of `vidrl_jax.stats` (rliable's performance
profiles, interval estimates)."""

from __future__ import annotations

import io as _bytes
from typing import Mapping, Sequence

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vidrl_jax import io  # noqa: E402

# Colours for binary feature planes (MinAtar): one colour per channel, drawn over black.
_PALETTE = np.array([[255, 215, 0], [220, 20, 60], [30, 144, 255], [50, 205, 50], [238, 130, 238],
                     [255, 140, 0], [0, 206, 209], [255, 255, 255], [139, 69, 19], [128, 128, 128]],
                    np.float32) / 255.0


def to_rgb(frame: np.ndarray) -> np.ndarray:
  """(H, W, C) uint8 or float in [0, 1] -> (H, W, 3) float; C != 3 is drawn as coloured planes."""
  f = frame.astype(np.float32)
  if frame.dtype == np.uint8:
    f = f / 255.0
  f = np.clip(f, 0.0, 1.0)
  if f.shape[-1] == 3:
    return f
  colours = _PALETTE[np.arange(f.shape[-1]) % len(_PALETTE)]
  return np.clip(np.einsum("hwc,cd->hwd", f, colours), 0.0, 1.0)


def curves(path: str, series: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str,
           ylabel: str, title: str, hlines: Mapping[str, float] | None = None,
           spread: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None) -> str:
  """Line plot of {label: (x, y)} plus optional horizontal reference lines {label: y} and shaded bands {label:
  (low, high)} around the series of the same label (e.g. mean +- standard error)."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, (x, y) in series.items():
    line, = ax.plot(x, y, label=label)
    if spread and label in spread:
      ax.fill_between(x, spread[label][0], spread[label][1], color=line.get_color(), alpha=0.2)
  for label, y in (hlines or {}).items():
    ax.axhline(y, ls="--", lw=1, color="gray")
    ax.text(ax.get_xlim()[0], y, f" {label}", va="bottom", fontsize=8, color="gray")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if series:
    ax.legend(fontsize=8)
  return _save(fig, path)


def embedding(path: str, points: np.ndarray, labels: np.ndarray, names: Sequence[str], title: str) -> str:
  """Scatter of 2-d points coloured by integer label (e.g. t-SNE of latent actions by true action)."""
  fig, ax = plt.subplots(figsize=(5, 5))
  cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
  for a, name in enumerate(names):
    m = labels == a
    ax.scatter(points[m, 0], points[m, 1], s=4, color=cmap(a), label=name, alpha=0.7)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title)
  ax.legend(markerscale=3, fontsize=8, loc="best")
  return _save(fig, path)


def image_grid(path: str, rows: Mapping[str, np.ndarray], title: str) -> str:
  """One row per entry of {row label: frames (N, H, W, C)}."""
  names = list(rows)
  n = max(len(v) for v in rows.values())
  fig, axes = plt.subplots(len(names), n, figsize=(1.6 * n, 1.7 * len(names)), squeeze=False)
  for r, name in enumerate(names):
    for i in range(n):
      ax = axes[r, i]
      ax.set_xticks([])
      ax.set_yticks([])
      if i < len(rows[name]):
        ax.imshow(to_rgb(rows[name][i]), interpolation="nearest")
      if i == 0:
        ax.set_ylabel(name, fontsize=8)
  fig.suptitle(title)
  return _save(fig, path)


def performance_profiles(path: str, profiles: Mapping[str, Mapping[str, Sequence[float]]], title: str,
                         xlabel: str = "normalised score (tau)") -> str:
  """rliable's performance-profile plot of `stats.performance_profile`'s output: per method the fraction of its
  (run, task) scores above tau, with the interval as a band."""
  from rliable import plot_utils   # seaborn underneath: imported only where a profile is drawn
  fig, ax = plt.subplots(figsize=(6, 4))
  taus = np.asarray(next(iter(profiles.values()))["tau"])
  plot_utils.plot_performance_profiles(
      {k: np.asarray(v["profile"]) for k, v in profiles.items()}, taus,
      performance_profile_cis={k: (np.asarray(v["ci_low"]), np.asarray(v["ci_high"])) for k, v in profiles.items()},
      ax=ax, xlabel=xlabel, ylabel="fraction of runs with score > tau", labelsize="medium", ticklabelsize="medium")
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=8)
  return _save(fig, path)


def intervals(path: str, estimates: Mapping[str, tuple[float, float, float]], xlabel: str, title: str) -> str:
  """One row per label: the interval [low, high] as a bar and the point estimate as a tick ({label: (point, low,
  high)}), as rliable's interval-estimate plots."""
  fig, ax = plt.subplots(figsize=(6, 0.9 + 0.45 * len(estimates)))
  for i, (label, (point, lo, hi)) in enumerate(estimates.items()):
    ax.barh(i, hi - lo, left=lo, height=0.6, alpha=0.6, color=plt.get_cmap("tab10")(i % 10))
    ax.vlines(point, i - 0.3, i + 0.3, color="k")
  ax.set_yticks(range(len(estimates)), list(estimates))
  ax.invert_yaxis()
  ax.set_xlabel(xlabel)
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3, axis="x")
  return _save(fig, path)


def savefig(fig, path: str, dpi: int = 110) -> str:
  """Renders `fig` as PNG into memory and writes it through `io` (atomic; `path` may be a bucket URL), then closes
  it: matplotlib's own `savefig(path)` only writes local files. Only process 0 writes."""
  if jax.process_index() != 0:   # a multi-process run writes its plots once
    plt.close(fig)
    return path
  buf = _bytes.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi)
  plt.close(fig)
  io.write_bytes(path, buf.getvalue())
  return path


def _save(fig, path: str) -> str:
  fig.tight_layout()
  return savefig(fig, path)
