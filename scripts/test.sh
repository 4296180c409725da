#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite on the CPU:  bash scripts/test.sh [pytest args]
#
# One pytest-xdist worker per core (at most 4; VIDRL_TEST_WORKERS overrides, 0 runs in this process; the scheduling
# is in tests/conftest.py): most of the suite's time is XLA compiling small programs on one thread, so a second
# worker uses the second core. A line per test with the progress count, the 25 slowest tests at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=cpu MUJOCO_GL=egl
workers="${VIDRL_TEST_WORKERS:-$(.venv/bin/python -c 'import os; print(max(1, min(4, len(os.sched_getaffinity(0)))))')}"
exec .venv/bin/python -m pytest -n "$workers" -v --durations=25 "$@" tests
