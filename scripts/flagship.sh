#!/usr/bin/env bash
# Set up (idempotent) and run the flagship experiment: LAPO, cpu preset, on MinAtar Breakout through gymnax.
#   bash scripts/flagship.sh [--config.key=value ...]
# Results land in runs/lapo_cpu (results.json, metrics.jsonl, plots, TensorBoard events); rerunning resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
exec .venv/bin/python experiments/lapo.py --config configs/lapo.py:cpu --workdir runs/lapo_cpu "$@"
