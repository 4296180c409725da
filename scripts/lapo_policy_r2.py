"""How well the stage-2 latent policy predicts the IDM's latent on held-out frames (R^2), for one LAPO run.

  .venv/bin/python scripts/lapo_policy_r2.py --workdir runs/lapo_cpu [--preset cpu] [--seed 0]

Loads the run's stage-1/2 checkpoints (nothing is trained) and compares pi(o_t) with IDM(o_{t-1}, o_t, o_{t+1})
on up to 4,000 held-out windows of the action-labelled set.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "configs"))

import lapo as lapo_config  # noqa: E402

from vidrl_jax.data import formats  # noqa: E402
from vidrl_jax.methods.lapo import decode, models  # noqa: E402
from vidrl_jax.methods.lapo.pipeline import Lapo  # noqa: E402


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--preset", default="cpu")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  config = lapo_config.get_config(args.preset)
  config.unlock()
  config.loop.progress = False
  lapo = Lapo(config, args.workdir)
  root = config.data.dir or os.path.join(args.workdir, "data")
  window = config.model.context + 2
  train = formats.lapo_chunks(os.path.join(root, config.data.train_split)).windows(window)
  labelled = formats.lapo_chunks(os.path.join(root, config.data.labelled_split)).windows(window)
  stages = lapo.latent_stages(args.seed, train, config.vq.enabled, "")
  _, held_out, _, _ = lapo.labelled_split(args.seed, labelled)
  held_out = held_out[:4000]
  z = lapo.idm_latents(stages["idm"], labelled, held_out)
  policy = models.policy(config)
  z_pi = decode.embed(lambda o: policy.apply(stages["policy"], o),
                      labelled.obs(held_out, "image")[:, config.model.context])
  r2 = 1 - ((z - z_pi) ** 2).sum() / ((z - z.mean(0)) ** 2).sum()
  print(f"seed {args.seed}: latent-policy R^2 on {len(held_out)} held-out frames = {r2:.3f}")


if __name__ == "__main__":
  main()
