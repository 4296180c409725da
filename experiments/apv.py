"""APV (Reinforcement Learning with Action-Free Pre-Training from Videos, ICML 2022): videos, action-free
pre-training, then online fine-tuning of APV and its baselines on image Meta-World tasks.

  python experiments/apv.py --config configs/apv.py:cpu --workdir runs/apv_cpu
  python experiments/apv.py --config configs/apv.py:smoke --workdir /tmp/apv_smoke      # seconds
  python experiments/apv.py --config configs/apv.py:cpu --config.variants='("dreamerv2",)' --workdir runs/apv_cpu

Writes metrics.jsonl, TensorBoard events, checkpoints, plots, results.json and results.md into --workdir;
rerunning with the same workdir resumes. configs/apv.py's docstring gives each preset's expected result and time.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidrl_jax import launch  # noqa: E402
from vidrl_jax.methods.apv import train_and_evaluate  # noqa: E402

if __name__ == "__main__":
  launch.run_launcher(train_and_evaluate, "configs/apv.py:cpu", "APV")
