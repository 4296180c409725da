#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite on the CPU:  bash scripts/test.sh [pytest args]
#
# One pytest-xdist worker per core (at most 4; VIDRL_TEST_WORKERS overrides, 0 runs in this process; the scheduling
# is in tests/conftest.py): most of the suite's time is XLA compiling small programs on one thread, so a second
# worker uses the second core, and XLA's backend runs at -O0 (below). A line per test with the progress count, the
# 25 slowest tests at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export JAX_PLATFORMS=cpu MUJOCO_GL=egl
# XLA's LLVM backend without its optimisation passes (-O0: the same HLO and fusions; floats may differ in the last
# bit where LLVM would contract a multiply-add, within every test's tolerance): the suite's programs are tiny and
# mostly compiled, not run, so this saves about a fifth of their time (measured: test_fused + test_rlv_manipulation
# 110 -> 91 s, RLV's ablation smoke 27 -> 21 s, empty cache). Launchers and benchmarks keep XLA's default; the flag
# is part of the compilation cache's key, so nothing is shared with them.
export XLA_FLAGS="--xla_backend_optimization_level=0${XLA_FLAGS:+ $XLA_FLAGS}"
workers="${VIDRL_TEST_WORKERS:-$(.venv/bin/python -c 'import os; print(max(1, min(4, len(os.sched_getaffinity(0)))))')}"
exec .venv/bin/python -m pytest -n "$workers" -v --durations=25 "$@" tests
