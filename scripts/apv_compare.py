"""APV variants against a baseline from their metric logs, when the runs' configs differ where the aggregator
(`methods.apv.report.aggregate_workdirs`) refuses to mix them (e.g. a longer pre-training against the baseline of
another workdir, which never loads pre-trained weights):

  .venv/bin/python scripts/apv_compare.py --task=reach-v3 --baseline=dreamerv2 \
      --run=apv_pretrain10k:apv:runs/apv_pre10k/metrics.jsonl,runs/apv_pre10k_s12/metrics.jsonl \
      --run=apv_pretrain3k:apv:docs/apv_cpu/metrics_apv_cpu.jsonl \
      --run=dreamerv2:dreamerv2:docs/apv_cpu/metrics_apv_cpu_dv2.jsonl --out=docs/apv_cpu_pre10k/comparison.json

Each `--run=NAME:VARIANT:FILE[,FILE...]` reads the evaluation rows of `finetune/<task>/<VARIANT>/seed<s>` (a
resumed run's last row per env step wins). Per run: the seeds, each seed's final success rate, its success averaged
over the evaluations, the first env step at success 1.0, the IQM with rliable's 95% intervals of both, and rliable's
probability of improvement over `--baseline` (a run's NAME). Writes `--out` (JSON) and prints one line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidrl_jax import stats  # noqa: E402


def curves(paths: list[str], task: str, variant: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
  """{seed: (env steps, success rate)} of the variant's fine-tuning stages in the metric logs."""
  prefix, out = f"finetune/{task}/{variant}/seed", {}
  for path in paths:
    with open(path) as f:
      for line in f:
        row = json.loads(line) if line.strip() else {}
        if row.get("stage", "").startswith(prefix) and "eval/success_rate" in row:
          out.setdefault(int(row["stage"][len(prefix):]), {})[int(row["eval/env_steps"])] = float(
              row["eval/success_rate"])
  return {s: (np.array(sorted(c)), np.array([c[k] for k in sorted(c)])) for s, c in sorted(out.items())}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--task", required=True)
  p.add_argument("--baseline", required=True, help="the NAME of one --run")
  p.add_argument("--run", action="append", required=True, help="NAME:VARIANT:FILE[,FILE...]")
  p.add_argument("--out", required=True)
  args = p.parse_args()
  runs = {}
  for spec in args.run:
    name, variant, files = spec.split(":", 2)
    c = curves(files.split(","), args.task, variant)
    if not c:
      sys.exit(f"error: no evaluation rows of finetune/{args.task}/{variant}/seed* in {files}; check --run={spec}")
    final, averaged = np.array([y[-1] for _, y in c.values()]), np.array([y.mean() for _, y in c.values()])
    runs[name] = dict(variant=variant, files=files.split(","), seeds=list(c), final=final.tolist(),
                      averaged=averaged.tolist(),
                      first_success_1=[int(x[np.argmax(y >= 1.0)]) if (y >= 1.0).any() else None for x, y in c.values()],
                      final_summary=stats.summary(final), averaged_summary=stats.summary(averaged),
                      curves={s: dict(env_steps=x.tolist(), success=y.tolist()) for s, (x, y) in c.items()})
  if args.baseline not in runs:
    sys.exit(f"error: --baseline={args.baseline} names no --run (have {sorted(runs)})")
  base = runs[args.baseline]
  for name, r in runs.items():
    if name != args.baseline:
      r["p_improvement"] = {k: stats.probability_of_improvement(np.array(r[k]), np.array(base[k]))
                            for k in ("final", "averaged")}
  with open(args.out, "w") as f:
    json.dump(dict(task=args.task, baseline=args.baseline, runs=runs), f, indent=1)
  for name, r in runs.items():
    fs, av = r["final_summary"], r["averaged_summary"]
    pi = r.get("p_improvement")
    print(f"{name}: seeds {r['seeds']}, final {r['final']} IQM {fs['iqm']:.2f} [{fs['iqm_ci'][0]:.2f}, "
          f"{fs['iqm_ci'][1]:.2f}], averaged IQM {av['iqm']:.2f} [{av['iqm_ci'][0]:.2f}, {av['iqm_ci'][1]:.2f}], "
          f"first success 1.0 at {r['first_success_1']}"
          + (f", P(> {args.baseline}) final {pi['final']['p']:.2f} / averaged {pi['averaged']['p']:.2f}" if pi else ""))


if __name__ == "__main__":
  main()
