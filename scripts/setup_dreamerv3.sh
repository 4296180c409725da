#!/usr/bin/env bash
# The environment of the official DreamerV3 JAX code (its requirements.txt, CPU jax), for the reference column of
# benchmarks/apv_steps.py; separate from .venv, as DreamerV3 pins jax 0.4.33 and numpy<2:
#   git clone https://github.com/danijar/dreamerv3 /path/to/dreamerv3     # timed at commit e3f0224
#   bash scripts/setup_dreamerv3.sh
#   .venv/bin/python benchmarks/apv_steps.py --dreamerv3=/path/to/dreamerv3
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-dreamerv3/bin/python ] || python3 -m venv .venv-dreamerv3
.venv-dreamerv3/bin/python -m pip install -q "jax[cpu]==0.4.33" "ninjax>=3.5.1" "elements>=3.19.1" \
  "portal>=3.5.0" "granular>=0.20.3" "scope>=0.4.4" chex einops jaxtyping optax "numpy<2" tqdm ruamel.yaml
