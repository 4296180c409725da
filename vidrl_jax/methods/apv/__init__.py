"""APV: Reinforcement Learning with Action-Free Pre-Training from Videos (Seo, Lee, James, Abbeel; ICML 2022).

`videos`: the action-free pre-training videos (Meta-World scripted experts on tasks other than the targets, from
several cameras and visual domains) and the loader of APV/DreamerV2 episode directories; `model`: the video model,
the stacked and single world models and their objectives; `bonus`: the video-based intrinsic bonus; `agent`: the
pre-training and fine-tuning stages; `pipeline`: the whole experiment.
"""


def train_and_evaluate(config, workdir: str) -> dict:
  """The whole pipeline (`pipeline.train_and_evaluate`), imported on call so the model modules stay light."""
  from vidrl_jax.methods.apv.pipeline import train_and_evaluate as run
  return run(config, workdir)


__all__ = ["train_and_evaluate"]
