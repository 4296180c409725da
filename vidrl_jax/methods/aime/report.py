"""AIME's results: the paper Fig. 2 table (AIME beside BCO(0)), Fig. 5 ablations, Fig. 8 phase-2 curves."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from vidrl_jax import plots  # noqa: E402


def _norm(cells: dict) -> dict:
  return {k: (v["normalised"] if "normalised" in v else _norm(v)) for k, v in cells.items()}


def summarise(c: ml_collections.ConfigDict, table: dict, demo_returns: dict, random_summary: dict | None) -> dict:
  """Headline numbers: normalised returns per cell and how many cells AIME leads BCO(0) in."""
  out = {"experts": {t: d["mean_return"] for t, d in demo_returns.items()},
         "random_return": None if random_summary is None else random_summary["mean_return"],
         "table": {}, "raw": table, "aime_ahead_of_bco": {}}
  ahead = total = 0
  for setting, cells in table.items():
    norm = {k: _norm(v) for k, v in cells.items()}
    out["table"][setting] = norm
    pairs = [(norm["aime"][r][col], norm["bco"][r][col]) for r in norm["aime"] for col in norm["aime"][r]]
    k = sum(a > b for a, b in pairs)
    out["aime_ahead_of_bco"][setting] = {"ahead": k, "cells": len(pairs)}
    out[f"{setting}/aime_mean"] = float(np.mean([a for a, _ in pairs])) if pairs else None
    out[f"{setting}/bco_mean"] = float(np.mean([b for _, b in pairs])) if pairs else None
    ahead, total = ahead + k, total + len(pairs)
  out["aime_ahead_fraction"] = ahead / total if total else None
  return out


def markdown(results: dict) -> str:
  lines = ["# AIME results (normalised return: 1 = the demonstrating expert)", ""]
  lines.append("Experts (mean demo return): " + ", ".join(f"{t} {r:.1f}" for t, r in results["experts"].items()))
  if results.get("random_return") is not None:
    lines.append(f"Uniform-random policy return: {results['random_return']:.1f}")
  for setting, norm in results["table"].items():
    cols = list(next(iter(norm["aime"].values())).keys()) if norm["aime"] else []
    lines += ["", f"## {setting}: AIME / BCO(0)", "",
              "| embodiment dataset | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in norm["aime"]:
      lines.append(f"| {row} | " + " | ".join(f"{norm['aime'][row][c]:.2f} / {norm['bco'][row][c]:.2f}"
                                              for c in cols) + " |")
    if norm.get("bc"):
      lines.append("| BC, true actions | " + " | ".join(f"{norm['bc'][c]:.2f}" for c in cols) + " |")
    a = results["aime_ahead_of_bco"][setting]
    lines.append(f"\nAIME ahead of BCO(0) in {a['ahead']} of {a['cells']} cells.")
    if norm.get("ablations"):
      lines.append("Ablations (paper Fig. 5 cell): " + ", ".join(f"{k} {v:.2f}" for k, v in norm["ablations"].items()))
  return "\n".join(lines) + "\n"


def plots_for(c: ml_collections.ConfigDict, workdir: str, writer, table: dict) -> dict[str, str]:
  """Fig. 2-style heatmaps per setting and Fig. 8-style phase-2 curves (ELBO, action MSE) for the ablation cell."""
  out = {}
  for setting, cells in table.items():
    norm = {k: _norm(v) for k, v in cells.items() if k in ("aime", "bco")}
    rows = list(norm["aime"])
    if not rows:
      continue
    cols = list(norm["aime"][rows[0]])
    fig, axes = plt.subplots(1, 2, figsize=(2.2 + 1.3 * len(cols) * 2, 1 + 0.6 * len(rows)))
    for ax, method in zip(axes, ("aime", "bco")):
      m = np.array([[norm[method][r][col] for col in cols] for r in rows])
      ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
      ax.set_xticks(range(len(cols)), cols)
      ax.set_yticks(range(len(rows)), rows)
      for i in range(len(rows)):
        for j in range(len(cols)):
          ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", color="w" if m[i, j] < 0.6 else "k")
      ax.set_title(f"{setting}: {'AIME' if method == 'aime' else 'BCO(0)'}")
    fig.tight_layout()
    path = os.path.join(workdir, f"table_{setting}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    out[f"table_{setting}"] = path

    base = f"{setting}/{c.ablations.dataset}/aime_{c.ablations.demo}"
    for metric in ("elbo", "action_mse"):
      series = {}
      for variant in ("",) + tuple(c.ablations.variants):
        rows_ = [r for r in writer.rows(base + (f"_{variant}" if variant else "")) if metric in r]
        if rows_:
          series[variant or "aime"] = ([r["step"] for r in rows_], [r[metric] for r in rows_])
      if series:
        ref = cells["aime"].get(c.ablations.dataset, {}).get(c.ablations.demo, {})
        hl = {"true actions": ref["elbo_true_actions"]} if metric == "elbo" and "elbo_true_actions" in ref else None
        out[f"phase2_{setting}_{metric}"] = plots.curves(
            os.path.join(workdir, f"phase2_{setting}_{metric}.png"), series, "phase-2 step", metric,
            f"{setting}: {c.ablations.dataset} -> {c.ablations.demo}", hlines=hl)
  return out

