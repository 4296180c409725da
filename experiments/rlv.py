"""RLV (Reinforcement Learning with Videos, CoRL 2020): the Acrobot expert and its observation pools, SAC, RLV per
pool quality, BCO(0), the ablations, the domain shift, and Meta-World (--config.groups).

  python experiments/rlv.py --config configs/rlv.py:cpu --workdir runs/rlv_cpu
  python experiments/rlv.py --config configs/rlv.py:smoke --workdir /tmp/rlv_smoke      # seconds
  python experiments/rlv.py --config configs/rlv.py:cpu --config.groups='("main",)' --workdir runs/rlv_main

Writes metrics.jsonl, TensorBoard events, checkpoints, plots, results.json and results.md into --workdir;
rerunning with the same workdir resumes. configs/rlv.py's docstring gives each preset's expected result and time.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidrl_jax import launch  # noqa: E402
from vidrl_jax.methods.rlv.pipeline import train_and_evaluate  # noqa: E402

if __name__ == "__main__":
  launch.run_launcher(train_and_evaluate, "configs/rlv.py:cpu", "RLV")
