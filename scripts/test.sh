#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite on the CPU:  bash scripts/test.sh [pytest args]
#
# One pytest-xdist worker per core (at most 4; VIDRL_TEST_WORKERS overrides, 0 runs in this process; the scheduling
# is in tests/conftest.py): most of the suite's time is XLA compiling small programs on one thread, so a second
# worker uses the second core. XLA's backend stays at its default: at -O0 (--xla_backend_optimization_level=0) the
# suite took 10:52 instead of 17:41 but LAPO's U-Net gradients came out NaN (seen 2026-12-08), so the tests run
# what the launchers run. A line per test with the progress count, the 25 slowest tests at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=cpu MUJOCO_GL=egl
workers="${VIDRL_TEST_WORKERS:-$(.venv/bin/python -c 'import os; print(max(1, min(4, len(os.sched_getaffinity(0)))))')}"
exec .venv/bin/python -m pytest -n "$workers" -v --durations=25 "$@" tests
