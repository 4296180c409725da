#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite on the CPU:  bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=cpu MUJOCO_GL=egl
exec .venv/bin/python -m pytest --durations=25 "$@" tests
