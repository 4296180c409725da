"""AIME: Action Inference by Maximising Evidence (Zhang et al., NeurIPS 2023)."""


def train_and_evaluate(config, workdir: str) -> dict:
  """The whole pipeline (`pipeline.train_and_evaluate`), imported on call so the model modules stay light."""
  from vidrl_jax.methods.aime.pipeline import train_and_evaluate as run
  return run(config, workdir)


__all__ = ["train_and_evaluate"]
