"""LAPO (Learning to Act without Actions, ICLR 2024) on MinAtar Breakout: the PPO expert and its observation-only
data, latent IDM + FDM, latent BC, offline and online decoding, the baselines and ablations.

  python experiments/lapo.py --config configs/lapo.py:cpu --workdir runs/lapo_cpu
  python experiments/lapo.py --config configs/lapo.py:smoke --workdir /tmp/lapo_smoke      # seconds
  python experiments/lapo.py --config configs/lapo.py:cpu --config.stage1.steps=12000 --workdir runs/lapo_12k

Writes metrics.jsonl, TensorBoard events, checkpoints, plots, results.json and results.md into --workdir;
rerunning with the same workdir resumes. configs/lapo.py's docstring gives each preset's expected result and time.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidrl_jax import launch  # noqa: E402
from vidrl_jax.methods.lapo import train_and_evaluate  # noqa: E402

if __name__ == "__main__":
  launch.run_launcher(train_and_evaluate, "configs/lapo.py:cpu", "LAPO")
