"""RLV launcher.  python experiments/rlv.py --config configs/rlv.py:cpu --workdir runs/rlv_cpu"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vidrl_jax import launch  # noqa: E402
from vidrl_jax.methods.rlv.pipeline import train_and_evaluate  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/rlv.py:cpu", "RLV config and preset.")
_WORKDIR = launch.workdir_flag()


def main(argv):
  del argv
  launch.main(train_and_evaluate, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=launch.parse_flags)
