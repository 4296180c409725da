"""Aggregates finished runs of one config over seeds (one workdir per seed) with rliable's statistics.

  .venv/bin/python scripts/aggregate_seeds.py aime runs/aime_mdp_s0 runs/aime_mdp_s1 runs/aime_mdp_s2 \
      --out docs/aime_cpu_mdp_3seeds [--reps 2000] [--seed 0]

Every workdir must hold the run's config.json and results.json and differ from the others in the seed only.
`--out` is created (or reused if an earlier aggregation wrote it); a directory the project did not write is never
written into. It gets results.json, results.md and the PNGs (`vidrl_jax.methods.aime.report.aggregate_seeds`).
LAPO runs all its seeds in one workdir and its report aggregates them; `lapo WORKDIR --out DIR` summarises a
finished run's per-seed values again with this version's statistics (e.g. a results.json written before rliable):

  .venv/bin/python scripts/aggregate_seeds.py lapo docs/lapo_cpu --out docs/lapo_cpu/rliable

APV's workdirs may instead differ in the variants and seeds they ran (e.g. APV in one, DreamerV2 beside it in
another: `--config.variants='("dreamerv2",)'`); `apv A B --out DIR` writes their one table and curves:

  .venv/bin/python scripts/aggregate_seeds.py apv runs/apv_cpu runs/apv_cpu_dv2 --out docs/apv_cpu
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidrl_jax import io, stats  # noqa: E402
from vidrl_jax.errors import VidrlError  # noqa: E402
from vidrl_jax.methods.aime import report as aime_report  # noqa: E402
from vidrl_jax.methods.apv import report as apv_report  # noqa: E402
from vidrl_jax.methods.lapo import report as lapo_report  # noqa: E402

AGGREGATORS = {"aime": aime_report.aggregate_seeds, "apv": apv_report.aggregate_workdirs,
               "lapo": lapo_report.aggregate_run}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("method", choices=sorted(AGGREGATORS))
  parser.add_argument("workdirs", nargs="+", help="one finished workdir per seed (APV: per variant or seed)")
  parser.add_argument("--out", required=True, help="directory for results.json, results.md and the PNGs")
  parser.add_argument("--reps", type=int, default=stats.REPS, help="bootstrap resamples")
  parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
  args = parser.parse_args(argv)
  try:
    results = AGGREGATORS[args.method](args.workdirs, args.out, reps=args.reps, seed=args.seed)
  except VidrlError as e:
    sys.exit(f"error: {e}")
  with io.open(io.join(args.out, "results.md")) as f:
    print(f.read())
  print("wrote results.json, results.md", *sorted(os.path.basename(p) for p in results["plots"].values()),
        "to", args.out)


if __name__ == "__main__":
  main()
