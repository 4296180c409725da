"""AIME (Action Inference by Maximising Evidence, NeurIPS 2023): SAC experts and their datasets, phase 1 (the world
model), phase 2 (the policy through the frozen model), BCO(0) and BC, per observation setting.

  python experiments/aime.py --config configs/aime.py:cpu --workdir runs/aime_cpu
  python experiments/aime.py --config configs/aime.py:smoke --workdir /tmp/aime_smoke      # seconds
  python experiments/aime.py --config configs/aime.py:cpu --config.seed=1 --workdir runs/aime_cpu_seed1

Writes metrics.jsonl, TensorBoard events, checkpoints, plots, results.json and results.md into --workdir;
rerunning with the same workdir resumes. configs/aime.py's docstring gives each preset's expected result and time.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidrl_jax import launch  # noqa: E402
from vidrl_jax.methods.aime import train_and_evaluate  # noqa: E402

if __name__ == "__main__":
  launch.run_launcher(train_and_evaluate, "configs/aime.py:cpu", "AIME")
