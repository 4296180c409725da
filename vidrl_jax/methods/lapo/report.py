"""LAPO's headline numbers (over seeds: the IQM with its 95% stratified-bootstrap confidence interval via
`vidrl_jax.stats`/rliable, the mean and the per-seed values; the issue's targets) and its plots."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
from sklearn.manifold import TSNE

from vidrl_jax import io, plots, stats
from vidrl_jax.data import ownership
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.lapo import models
from vidrl_jax.nets import vq as vq_lib
from vidrl_jax.train import write_results

ACTION_NAMES = {"Asterix-MinAtar": ["noop", "left", "up", "right", "down"],
                "Breakout-MinAtar": ["noop", "left", "right"],
                "SpaceInvaders-MinAtar": ["noop", "left", "right", "fire"],
                "Freeway-MinAtar": ["noop", "up", "down"]}
CI_SEED = 0   # the bootstrap's seed: the same per-seed results give the same intervals


def _stats(named: dict[str, list]) -> dict[str, dict]:
  """{metric: per-seed values} -> {metric: {n, per_seed, mean, se, iqm, iqm_ci, mean_ci}} over the seeds with a
  finite value (an ablation runs on fewer seeds: its n says how many), the intervals (`stats.interval_name()`) from
  one stratified bootstrap per set of seeds (`stats.columns`)."""
  groups: dict[tuple, list[str]] = {}
  for name, values in named.items():
    mask = tuple(v is not None and bool(np.isfinite(v)) for v in values)
    if any(mask):
      groups.setdefault(mask, []).append(name)
  out = {}
  for mask, names in groups.items():
    table = np.array([[float(v) for v, m in zip(named[k], mask) if m] for k in names], np.float64).T   # (runs, K)
    c = stats.columns(table, seed=CI_SEED)
    for j, k in enumerate(names):
      out[k] = {"n": c["n"], "per_seed": table[:, j].tolist(), "mean": c["mean"][j], "se": c["se"][j],
                "iqm": c["iqm"][j], "iqm_ci": [c["iqm_ci_low"][j], c["iqm_ci_high"][j]],
                "mean_ci": [c["mean_ci_low"][j], c["mean_ci_high"][j]]}
  return out


def summarise(config, refs: dict, data_info: dict, per_seed: list[dict]) -> dict:
  """results.json's content: every numeric per-seed result as `_stats` over the seeds (IQM with its 95%
  stratified-bootstrap interval, the mean, the per-seed values), the probe ratios, the offline sweeps and the
  issue's targets, checked on the IQM."""
  keys = sorted({k for r in per_seed for k, v in r.items() if isinstance(v, (int, float)) and k != "seed"})
  out = {"method": "lapo", "preset": config.preset, "env": config.env.name,
         "seeds": [r["seed"] for r in per_seed], "references": refs, "data": data_info,
         "interval": stats.interval_name(), "bootstrap_reps": stats.REPS}
  named = {k: [r.get(k) for r in per_seed] for k in keys}
  ratio = lambda a, b: [r[a] / r[b] for r in per_seed]
  named["probe_over_oracle"] = ratio("probe_accuracy", "oracle_accuracy")
  named["probe_over_random_idm"] = ratio("probe_accuracy", "random_idm_accuracy")
  named["balanced_probe_over_oracle"] = ratio("probe_balanced_accuracy", "oracle_balanced_accuracy")
  named["balanced_probe_over_random_idm"] = ratio("probe_balanced_accuracy", "random_idm_balanced_accuracy")
  sweeps = {}
  for tag in ("", "_labels"):
    ran = [r for r in per_seed if f"offline_sweep{tag}" in r]
    sweeps[tag] = sorted(ran[0][f"offline_sweep{tag}"], key=int) if ran else []
    for n in sweeps[tag]:
      named[f"offline_sweep_normalised{tag}/{n}"] = [r[f"offline_sweep{tag}"][n]["normalised"]
                                                     if f"offline_sweep{tag}" in r else None for r in per_seed]
  summaries = _stats(named)
  for tag, sizes in sweeps.items():
    out[f"offline_sweep_normalised{tag}"] = {n: summaries.pop(f"offline_sweep_normalised{tag}/{n}")
                                             for n in sizes if f"offline_sweep_normalised{tag}/{n}" in summaries}
  out.update(summaries)
  out["targets"] = _targets(out)
  return out


def _targets(out: dict) -> dict[str, bool]:
  """The issue's targets, checked on the IQM over seeds."""
  online = out.get("online_normalised", {}).get("iqm")
  scratch = out.get("scratch_normalised", {}).get("iqm")
  offline256 = out.get("offline_sweep_normalised", {}).get("256", {}).get("iqm")
  targets = {
      "probe >= 0.9 x oracle": out["probe_over_oracle"]["iqm"] >= 0.9,
      "probe >= 2 x random IDM": out["probe_over_random_idm"]["iqm"] >= 2.0,
  }
  if offline256 is not None:
    targets["offline decoding with 256 labels >= 0.6"] = offline256 >= 0.6
  if offline256 is not None and scratch is not None:
    targets["offline decoding with 256 labels >= PPO from scratch"] = offline256 >= scratch
  if online is not None and scratch is not None:
    targets["online decoding >= 0.9"] = online >= 0.9
    targets["online decoding ahead of PPO from scratch"] = online > scratch
  return targets


RESUMMARY_FORMAT = "lapo_resummary"


def resummarise(results: dict) -> dict:
  """A LAPO results.json summarised again from its per-seed values with this version's statistics (`_stats`):
  for results written before the switch to rliable (mean, std, per_seed) or to redraw the intervals. The targets
  are checked again on the IQM; everything that is not a per-seed statistic is kept as it is."""
  if results.get("method") != "lapo" or "seeds" not in results:
    raise VidrlError("this results.json is not a LAPO run's (no 'method': 'lapo' or no 'seeds'); pass the "
                     "results.json of experiments/lapo.py")
  n = len(results["seeds"])
  pad = lambda v: list(v) + [None] * (n - len(v))   # an ablation on fewer seeds: its values, then gaps
  per_seed = lambda v: isinstance(v, dict) and isinstance(v.get("per_seed"), list)
  named = {k: pad(v["per_seed"]) for k, v in results.items() if per_seed(v)}
  sweeps = {k: v for k, v in results.items() if k.startswith("offline_sweep_normalised") and isinstance(v, dict)}
  for k, sweep in sweeps.items():
    named.update({f"{k}/{size}": pad(v["per_seed"]) for size, v in sweep.items() if per_seed(v)})
  summaries = _stats(named)
  out = {k: v for k, v in results.items() if not per_seed(v) and k not in sweeps}
  for k, sweep in sweeps.items():
    out[k] = {size: summaries.pop(f"{k}/{size}") for size in sweep if f"{k}/{size}" in summaries}
  out.update(summaries, interval=stats.interval_name(), bootstrap_reps=stats.REPS)
  out["targets"] = _targets(out)
  return out


def aggregate_run(workdirs: list[str], out: str, reps: int = stats.REPS, seed: int = 0) -> dict:
  """`resummarise` of one finished LAPO workdir (it already holds every seed) into `out`: results.json and
  results.md, `out` claimed as the project's own first (`scripts/aggregate_seeds.py lapo`)."""
  if len(workdirs) != 1:
    raise VidrlError(f"LAPO runs all its seeds in one workdir; pass exactly one, got {len(workdirs)}")
  if reps != stats.REPS or seed != CI_SEED:
    raise VidrlError(f"LAPO's report draws {stats.REPS} resamples with seed {CI_SEED}; drop --reps and --seed")
  path = io.join(workdirs[0], "results.json")
  if not io.exists(path):
    raise VidrlError(f"{path} does not exist; pass a workdir whose LAPO run finished")
  results = resummarise(io.read_json(path))
  ownership.claim_output(out, RESUMMARY_FORMAT, {"workdirs": list(workdirs)})
  write_results(out, results, markdown(results))
  results["plots"] = {}
  return results


def plots_for(lapo, labelled, per_seed: list[dict], refs: dict, latents: dict[str, dict]) -> dict:
  """Writes the plots of seed `per_seed[0]` (latent embedding and FDM predictions of its `latents`, the models
  `Lapo.run_seed` returned by variant tag) and of all seeds (curves)."""
  c, seed = lapo.config, per_seed[0]["seed"]
  out = {}
  names = ACTION_NAMES.get(c.env.name, [str(a) for a in range(lapo.num_actions)])
  _, te, _, y_te = lapo.labelled_split(seed, labelled)
  te, y_te = te[:1500], y_te[:1500]
  titles = {"": "LAPO (VQ)" if latents[""]["use_vq"] else "LAPO (no VQ)", "_novq": "no-VQ ablation",
            "_labels": "LAPO + stage-1 labels (LAOM)"}
  for tag, stagesets in latents.items():
    title = titles[tag]
    z = lapo.idm_latents(stagesets["idm"], labelled, te)
    xy = TSNE(2, init="pca", perplexity=30, random_state=0).fit_transform(z)
    out[f"tsne{tag}"] = plots.embedding(lapo.path(f"latent_tsne{tag}.png"), xy, y_te, names,
                                        f"{title}: t-SNE of IDM latents by true action")
    if tag == "":
      out["fdm"] = fdm_predictions(lapo, stagesets, labelled, te[:8])

  losses = {}
  for stage, key in [("stage1", "loss/recon"), ("stage1_novq", "loss/recon"), ("stage1_labels", "loss/recon"),
                     ("stage2", "loss/latent_mse")]:
    rows = [r for r in lapo.writer.rows(f"seed{seed}/{stage}") if key in r]
    if rows:
      losses[f"{stage} {key}"] = ([r["step"] for r in rows], [r[key] for r in rows])
  out["losses"] = plots.curves(lapo.path("losses.png"), losses, "update step", "loss",
                               f"stages 1-2, seed {seed}")
  if refs is None:   # no expert: no returns to plot
    return out

  def curve(stage: str, ykey: str = "episode_return"):
    """Normalised return against env steps over the seeds that ran `stage` (ablations: fewer), row by row."""
    runs = []
    for r in per_seed:
      rows = [row for row in lapo.writer.rows(f"seed{r['seed']}/{stage}") if ykey in row]
      if rows:
        x = np.array([row.get("env_steps", row["step"]) for row in rows])
        y = np.array([normalised(row[ykey], refs) for row in rows])
        runs.append((x, y))
    if not runs:
      return None
    n = min(len(x) for x, _ in runs)
    return runs[0][0][:n], np.array([y[:n] for _, y in runs])

  series, spread = {}, {}
  for stage, label in [("online", "LAPO online decoding (RL + SL)"), ("online_labels", "LAPO + stage-1 labels"),
                       ("online_rl_no_sl", "RL, no-SL"),
                       ("online_rl_no_sl_no_vq", "RL, no-SL, no-VQ"), ("scratch", "PPO from scratch")]:
    cv = curve(stage)
    if cv is not None:
      _iqm_band(series, spread, f"{label} ({stats.seeds(len(cv[1]))})", cv[0], cv[1])
  out["online_curves"] = plots.curves(lapo.path("online_decoding.png"), series, "environment steps",
                                      "normalised return (training episodes), IQM",
                                      f"{c.env.name}: online decoding, IQM over seeds\n"
                                      f"shaded: 95% stratified-bootstrap CI", {"expert": 1.0, "random": 0.0},
                                      spread=spread)
  sizes = sorted(per_seed[0].get("offline_sweep", {}), key=int)
  if sizes:
    series, spread, x = {}, {}, [int(n) for n in sizes]
    for key, label in [("normalised", "normalised return"), ("probe_accuracy", "decoder accuracy (held out)")]:
      _iqm_band(series, spread, label, x, np.array([[r["offline_sweep"][n][key] for n in sizes] for r in per_seed]))
    out["offline_sweep"] = plots.curves(lapo.path("offline_decoding.png"), series, "action-labelled transitions",
                                        "value, IQM over seeds",
                                        f"{c.env.name}: offline decoding, IQM of {stats.seeds(len(per_seed))}\n"
                                        f"shaded: 95% stratified-bootstrap CI", {"expert": 1.0}, spread=spread)
  return out


def _iqm_band(series: dict, spread: dict, label: str, x, ys: np.ndarray, points: int = 400) -> None:
  """Adds the IQM over seeds of `ys` (seeds, len(x)) and its 95% stratified-bootstrap band under `label`, at most
  `points` evenly spaced x of them (a plot shows no more; the bootstrap costs ~1 ms per point)."""
  keep = np.unique(np.linspace(0, len(x) - 1, min(points, len(x))).round().astype(int))
  c = stats.columns(ys[:, keep], seed=CI_SEED)
  series[label] = (np.asarray(x)[keep], c["iqm"])
  spread[label] = (c["iqm_ci_low"], c["iqm_ci_high"])


def fdm_predictions(lapo, stagesets: dict, data, ids: np.ndarray) -> str:
  """The FDM's next-frame prediction beside the truth (and the last context frame) for a few windows."""
  c = lapo.config
  windows = jnp.asarray(data.obs(ids, "image"))
  idm, fdm = models.idm(c), models.fdm(c, windows.shape[-1])
  z = idm.apply(stagesets["idm"], windows)
  if stagesets["use_vq"]:
    z, _ = vq_lib.vq_quantize(stagesets["vq"], z, c.vq.num_codebooks, c.vq.codes_per_codebook)
  pred = np.asarray(jax.jit(fdm.apply)(stagesets["fdm"], windows[:, :-1], z)) + 0.5
  return plots.image_grid(lapo.path("fdm_predictions.png"),
                          {"o_t": np.asarray(windows[:, -2]), "o_t+1 true": np.asarray(windows[:, -1]),
                           "o_t+1 FDM": np.clip(pred, 0, 1)}, "FDM next-frame predictions (held-out windows)")


def normalised(ret: float, refs: dict) -> float:
  """Return scaled so that a uniform-random policy is 0 and the data-generating expert is 1."""
  return (ret - refs["random_return"]) / max(refs["expert_return"] - refs["random_return"], 1e-8)


def _cell(r: dict | None, digits: int = 2) -> str:
  """IQM [95% CI] (n seeds where fewer than the table's)."""
  if r is None:
    return "—"
  return f"{r['iqm']:.{digits}f} [{r['iqm_ci'][0]:.{digits}f}, {r['iqm_ci'][1]:.{digits}f}]"


def markdown(results: dict) -> str:
  """The README's LAPO results table, from results.json: per metric the IQM over seeds and its 95%
  stratified-bootstrap confidence interval, the seeds counted in the header (and in a row run on fewer)."""
  n = len(results["seeds"])

  def f(key):
    r = results.get(key)
    return _cell(r) + ("" if r is None or r["n"] == n else f" ({stats.seeds(r['n'])})")

  refs = results.get("references") or {}
  rows = [
      ("latent probe accuracy, LAPO (VQ)", f("probe_accuracy"), "—"),
      ("latent probe accuracy, supervised IDM (upper bound)", f("oracle_accuracy"), "—"),
      ("latent probe accuracy, random IDM", f("random_idm_accuracy"), "—"),
      ("LAPO / supervised IDM (target ≥ 0.9)", f("probe_over_oracle"), "—"),
      ("LAPO / random IDM (target ≥ 2)", f("probe_over_random_idm"), "—"),
      ("balanced accuracy: LAPO / random IDM (chance 1/A)", f("balanced_probe_over_random_idm"), "—"),
      ("latent probe accuracy, no-VQ ablation", f("probe_accuracy_novq"), "—"),
      ("offline decoding, 256 labels, normalised return (target ≥ 0.6)", _sweep(results, "256"),
       "≈ PPO at 4M steps (≈0.44)"),
      ("online decoding (RL + SL), normalised return (target ≥ 0.9)", f("online_normalised"), "≈ 1.0 at 4M frames"),
      ("PPO from scratch, same env steps", f("scratch_normalised"), "0.44 at 4M frames"),
      ("ablation: RL, no-SL", f("online_rl_no_sl_normalised"), "below RL + SL"),
      ("ablation: RL, no-SL, no-VQ", f("online_rl_no_sl_no_vq_normalised"), "below RL, no-SL"),
      ("why: share of the IDM latent's variance the true action explains", f("latent_action_share"), "—"),
      ("why: latent policy's R² against the IDM latent", f("latent_policy_r2"), "—"),
      ("why: decoder(π(o_t)) picks the expert's action", f("decoded_policy_agreement"), "—"),
      ("beyond the paper (LAOM), stage-1 labels: latent probe accuracy", f("probe_accuracy_labels"), "—"),
      ("… action share of the latent's variance", f("latent_action_share_labels"), "—"),
      ("… offline decoding, 256 labels", _sweep(results, "256", "_labels"), "—"),
      ("… online decoding (RL + SL)", f("online_labels_normalised"), "—"),
  ]
  lines = [f"| metric | ours: IQM [95% CI] over {stats.seeds(n)} {results['seeds']} | paper (Procgen, 16 games) |",
           "|---|---|---|"]
  lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
  sweeps = {label: results.get(f"offline_sweep_normalised{tag}", {}) for tag, label in
            [("", "offline decoding, normalised return"), ("_labels", "… with stage-1 labels (LAOM)")]}
  sizes = sorted(sweeps["offline decoding, normalised return"], key=int)
  if sizes:
    lines += ["", "| labelled transitions | " + " | ".join(sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(_cell(sweep.get(k)) for k in sizes) + " |"
              for label, sweep in sweeps.items() if sweep]
  interval = results.get("interval", stats.interval_name())
  reps = results.get("bootstrap_reps", stats.REPS)
  lines += ["", f"{stats.seeds(n)}. IQM: the interquartile mean over seeds (the middle half of the sorted values; with "
                f"fewer than 4 seeds nothing is trimmed and it is the mean); [a, b]: its {interval}, {reps} "
                f"resamples of the seeds (a bootstrap never reaches beyond the seeds' range, so with this few seeds "
                f"it is a rough interval). Means and per-seed values are in results.json."]
  if refs:
    lines += ["", f"Returns are normalised with the uniform-random policy ({refs['random_return']:.1f}) at 0 and "
                  f"the data-generating expert ({refs['expert_return']:.1f}) at 1, {refs['episodes']} episodes each."]
  return "\n".join(lines)


def _sweep(results: dict, n: str, tag: str = "") -> str:
  return _cell(results.get(f"offline_sweep_normalised{tag}", {}).get(n))
