"""vidrl_jax: learning to act from video and observation-only data, in JAX/Flax."""

from vidrl_jax.errors import VidrlError

__all__ = ["VidrlError"]
