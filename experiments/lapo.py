"""LAPO launcher.  python experiments/lapo.py --config configs/lapo.py:cpu --workdir runs/lapo_cpu"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidrl_jax import launch  # noqa: E402
from vidrl_jax.methods.lapo import train_and_evaluate  # noqa: E402

if __name__ == "__main__":
  launch.run_launcher(train_and_evaluate, "configs/lapo.py:cpu", "LAPO")
