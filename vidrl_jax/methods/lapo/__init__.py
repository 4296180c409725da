"""LAPO: Learning to Act without Actions (Schmidt & Jiang, ICLR 2024)."""

from vidrl_jax.methods.lapo.pipeline import train_and_evaluate

__all__ = ["train_and_evaluate"]
