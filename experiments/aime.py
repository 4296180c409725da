"""AIME launcher.  python experiments/aime.py --config configs/aime.py:cpu --workdir runs/aime_cpu"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidrl_jax import launch  # noqa: E402
from vidrl_jax.methods.aime import train_and_evaluate  # noqa: E402

if __name__ == "__main__":
  launch.run_launcher(train_and_evaluate, "configs/aime.py:cpu", "AIME")
