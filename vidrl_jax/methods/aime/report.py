"""AIME's results: the paper Fig. 2 table (AIME beside BCO(0)), Fig. 5 ablations, Fig. 8 phase-2 curves; and over
several seeds (`aggregate_seeds`: one finished workdir per seed), rliable's IQMs with stratified-bootstrap
intervals per cell and over all cells, the probability that AIME improves on BCO(0) and performance profiles."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from vidrl_jax import config as config_lib  # noqa: E402
from vidrl_jax import io, plots, stats  # noqa: E402
from vidrl_jax.data import ownership  # noqa: E402
from vidrl_jax.errors import VidrlError  # noqa: E402
from vidrl_jax.train import write_results  # noqa: E402


def _norm(cells: dict) -> dict:
  return {k: (v["normalised"] if "normalised" in v else _norm(v)) for k, v in cells.items()}


def summarise(c: ml_collections.ConfigDict, table: dict, demo_returns: dict, random_summary: dict | None) -> dict:
  """Headline numbers: normalised returns per cell and how many cells AIME leads BCO(0) in."""
  out = {"experts": {t: d["mean_return"] for t, d in demo_returns.items()},
         "random_return": None if random_summary is None else random_summary["mean_return"],
         "table": {}, "raw": table, "aime_ahead_of_bco": {}, "seed": c.get("seed")}
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
  seed = "" if results.get("seed") is None else f" (seed {results['seed']})"
  lines.append(f"One seed{seed}, so no interval: run the config with other --config.seed values and aggregate the "
               f"workdirs with scripts/aggregate_seeds.py for IQMs with 95% intervals over seeds.")
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
    out[f"table_{setting}"] = plots.savefig(fig, path, dpi=100)

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


# ---------------------------------------------------------------------------------------------------------------
# Several seeds: `aggregate_seeds(workdirs, out)` (scripts/aggregate_seeds.py aime ...)

AGGREGATE_FORMAT = "aime_seeds"
METHODS = {"aime": "AIME", "bco": "BCO(0)", "bc": "BC (true actions)"}


def _read_run(workdir: str) -> tuple[dict, dict]:
  """(results.json, config.json) of one finished AIME workdir; one sentence when either is missing or corrupt."""
  out = []
  for name in ("results.json", "config.json"):
    path = os.path.join(workdir, name)
    if not io.exists(path):
      raise VidrlError(f"{path} does not exist; aggregate only workdirs whose AIME run finished (the launcher writes "
                       f"config.json, the run writes results.json at its end)")
    try:
      out.append(io.read_json(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise VidrlError(f"{path} is not valid JSON ({e}); rerun that workdir's experiment to rewrite it") from None
  if "table" not in out[0]:
    raise VidrlError(f"{workdir}/results.json has no 'table'; it is not an AIME run's results")
  return out[0], out[1]


def _cells(norm: dict, order: tuple = ((), ())) -> tuple[list[str], list[str]]:
  """(embodiment datasets, demo tasks) of a setting's table, in `order` (the config's) where it names them."""
  rank = lambda names, pref: [n for n in pref if n in names] + sorted(n for n in names if n not in pref)
  rows = rank(list(norm["aime"]), order[0])
  return rows, rank(list(norm["aime"][rows[0]]), order[1]) if rows else []


def _check_same_runs(workdirs: list[str], runs: list[tuple[dict, dict]]) -> list[int]:
  """The seeds of the runs, after checking that their configs differ in the seed only and their tables match."""
  (res0, cfg0), seeds = runs[0], []
  for workdir, (res, cfg) in zip(workdirs, runs):
    diff = config_lib.differing_keys(cfg0, cfg, ignore=("seed",))
    if diff:
      raise VidrlError(f"{workdir} ran another config than {workdirs[0]} (keys {diff[:5]} differ, not only the "
                       f"seed); aggregate only seeds of one config")
    if cfg.get("seed") in seeds:
      raise VidrlError(f"{workdir} ran seed {cfg.get('seed')} like an earlier workdir; pass each seed's workdir once")
    seeds.append(cfg.get("seed"))
    if {s: _cells(t) for s, t in res["table"].items()} != {s: _cells(t) for s, t in res0["table"].items()}:
      raise VidrlError(f"{workdir}/results.json has other settings or cells than {workdirs[0]}'s; aggregate only "
                       f"finished runs of one config")
  return seeds


def _iqm_columns(x: np.ndarray, names: list[str], reps: int, seed: int) -> dict[str, dict]:
  """{name: {iqm, iqm_ci, per_seed}} of the columns of a (seeds, columns) array (`stats.columns`)."""
  per = stats.columns(x, reps, seed=seed)
  return {k: {"iqm": per["iqm"][j], "iqm_ci": [per["iqm_ci_low"][j], per["iqm_ci_high"][j]],
              "per_seed": x[:, j].tolist()} for j, k in enumerate(names)}


def seed_statistics(tables: list[dict], reps: int = stats.REPS, seed: int = 0, order: tuple = ((), ())) -> dict:
  """Per setting over the seeds' normalised tables (`results["table"]`): per cell the IQM of AIME and BCO(0) with
  intervals over seeds; the IQM over (seeds x cells) of AIME, BCO(0) and BC, cells as tasks of a stratified
  bootstrap; P(AIME > BCO(0)) (rliable's probability of improvement) and the count of cells where AIME's mean
  over seeds is ahead of BCO(0)'s, each with an interval; the ablations; performance profiles. Rows and columns
  in `order` ((datasets, demos) of the config) where it names them."""
  out = {}
  for setting, norm0 in tables[0].items():
    rows, cols = _cells(norm0, order)
    if not rows:
      continue
    cells = [f"{r}/{c}" for r in rows for c in cols]
    scores = {m: np.array([[t[setting][m][r][c] for r in rows for c in cols] for t in tables]) for m in ("aime", "bco")}
    if all(t[setting].get("bc") for t in tables):
      scores["bc"] = np.array([[t[setting]["bc"][c] for c in cols] for t in tables])
    s = {"cells": cells, "overall": {}, "per_cell": {}}
    for m, x in scores.items():
      s["overall"][m] = stats.summary(x, reps, seed=seed)
      s["per_cell"][m] = _iqm_columns(x, cells if m != "bc" else cols, reps, seed)
    a, b = scores["aime"], scores["bco"]
    s["p_aime_over_bco"] = stats.probability_of_improvement(a, b, reps, seed=seed)
    point, ci = stats.interval_estimates({"k": [a, b]}, lambda x, y: np.array([np.sum(x.mean(0) > y.mean(0))]),
                                         reps, seed=seed)
    s["aime_ahead_of_bco"] = {"cells_ahead_of_seed_means": int(point["k"][0]), "ci": ci["k"][:, 0].tolist(),
                              "cells": len(cells), "per_seed": np.sum(a > b, axis=1).tolist()}
    variants = sorted(set.intersection(*[set(t[setting].get("ablations", {})) for t in tables]))
    if variants:
      x = np.array([[t[setting]["ablations"][v] for v in variants] for t in tables])
      s["ablations"] = _iqm_columns(x, variants, reps, seed)
    top = max(1.0, max(float(x.max()) for x in scores.values()))
    s["profiles"] = stats.performance_profile({METHODS[m]: x for m, x in scores.items()},
                                              np.linspace(0.0, top, 41), reps, seed=seed)
    out[setting] = s
  return out


def aggregate_seeds(workdirs: list[str], out: str, reps: int = stats.REPS, seed: int = 0) -> dict:
  """Reads each finished AIME workdir (one seed each, one config), writes `out`/{results.json, results.md,
  profile_<setting>.png, iqm_<setting>.png} and returns results.json's content (`seed_statistics` plus the runs)."""
  if len(workdirs) < 1:
    raise VidrlError("no workdirs to aggregate; pass one finished AIME workdir per seed")
  runs = [_read_run(w) for w in workdirs]
  seeds = _check_same_runs(workdirs, runs)
  ownership.claim_output(out, AGGREGATE_FORMAT, {"workdirs": list(workdirs)})
  results = {"method": "aime", "workdirs": list(workdirs), "seeds": seeds, "n_seeds": len(seeds),
             "interval": stats.interval_name(), "bootstrap_reps": int(reps), "bootstrap_seed": int(seed),
             "experts": [r["experts"] for r, _ in runs],
             "settings": seed_statistics([r["table"] for r, _ in runs], reps, seed,
                                         (runs[0][1].get("datasets", ()), runs[0][1].get("demos", ()))), "plots": {}}
  for setting, s in results["settings"].items():
    n = len(seeds)
    bc = f" (BC: x {len(s['per_cell']['bc'])} demo tasks)" if "bc" in s["per_cell"] else ""
    results["plots"][f"profile_{setting}"] = plots.performance_profiles(
        os.path.join(out, f"profile_{setting}.png"), s["profiles"],
        f"{setting}: {stats.seeds(n)} x {len(s['cells'])} cells{bc}\nshaded: 95% stratified-bootstrap CI")
    results["plots"][f"iqm_{setting}"] = plots.intervals(
        os.path.join(out, f"iqm_{setting}.png"),
        {METHODS[m]: (v["iqm"], *v["iqm_ci"]) for m, v in s["overall"].items()},
        "IQM of normalised return [95% CI]", f"{setting}: IQM over {stats.seeds(n)} x {len(s['cells'])} cells{bc}")
  write_results(out, results, seeds_markdown(results))
  return results


def seeds_markdown(results: dict) -> str:
  """results.md of `aggregate_seeds`: per setting the per-cell IQMs, the overall IQMs, P(AIME > BCO(0)) and the
  cells AIME leads, each with its interval, and what the intervals are."""
  n = results["n_seeds"]
  iv = lambda v: f"{v['iqm']:.2f} [{v['iqm_ci'][0]:.2f}, {v['iqm_ci'][1]:.2f}]"
  lines = [f"# AIME over {stats.seeds(n)} {results['seeds']} (normalised return: 1 = the demonstrating expert)", "",
           f"Every number: the interquartile mean (IQM) over the {stats.seeds(n)} [its {results['interval']}, "
           f"{results['bootstrap_reps']} resamples]. With fewer than 4 seeds the IQM trims nothing (it is the mean), "
           f"and a bootstrap never reaches beyond the seeds' range, so per-cell intervals over {stats.seeds(n)} are "
           f"rough.",
           "", "Workdirs: " + ", ".join(results["workdirs"])]
  for setting, s in results["settings"].items():
    rows = list(dict.fromkeys(c.split("/")[0] for c in s["cells"]))
    cols = list(dict.fromkeys(c.split("/")[1] for c in s["cells"]))
    cell = s["per_cell"]
    lines += ["", f"## {setting}: AIME / BCO(0), per cell", "",
              "| embodiment dataset | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += [f"| {r} | " + " | ".join(f"{iv(cell['aime'][f'{r}/{c}'])} / {iv(cell['bco'][f'{r}/{c}'])}"
                                      for c in cols) + " |" for r in rows]
    if "bc" in cell:
      lines.append("| BC, true actions | " + " | ".join(iv(cell["bc"][c]) for c in cols) + " |")
    lines += ["", f"Over all cells ({stats.seeds(n)} x {len(s['cells'])} cells, cells as the strata of the bootstrap): "
              + "; ".join(f"{METHODS[m]} {iv(v)}" for m, v in s["overall"].items()) + "."]
    p, k = s["p_aime_over_bco"], s["aime_ahead_of_bco"]
    lines.append(f"P(AIME > BCO(0)) (rliable's probability of improvement, averaged over cells): {p['p']:.2f} "
                 f"[{p['ci'][0]:.2f}, {p['ci'][1]:.2f}].")
    lines.append(f"AIME ahead of BCO(0) on the mean over seeds in {k['cells_ahead_of_seed_means']} of {k['cells']} "
                 f"cells [{k['ci'][0]:.0f}, {k['ci'][1]:.0f}]; per seed: {k['per_seed']}.")
    if s.get("ablations"):
      lines.append("Ablations (paper Fig. 5 cell): " + ", ".join(f"{v} {iv(a)}" for v, a in s["ablations"].items()))
    lines.append(f"Plots: profile_{setting}.png (performance profiles), iqm_{setting}.png (IQMs with intervals).")
  return "\n".join(lines) + "\n"
