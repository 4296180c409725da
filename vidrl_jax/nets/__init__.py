"""Shared Flax Linen networks and the EMA vector quantiser."""

from vidrl_jax.nets.encoder import ObsEncoder, PixelEncoder, obs_features
from vidrl_jax.nets.heads import GaussianMLP, TanhGaussianPolicy
from vidrl_jax.nets.impala import ImpalaCNN, ImpalaResidualBlock, impala_channels, torch_default_init
from vidrl_jax.nets.inverse import InverseModel, stack_frames
from vidrl_jax.nets.mlp import MLP
from vidrl_jax.nets.unet import ResidualLayer, UNet
from vidrl_jax.nets.vq import VQState, vq_ema_update, vq_init, vq_lookup, vq_quantize

__all__ = [
    "GaussianMLP",
    "ImpalaCNN",
    "ImpalaResidualBlock",
    "InverseModel",
    "MLP",
    "ObsEncoder",
    "PixelEncoder",
    "ResidualLayer",
    "TanhGaussianPolicy",
    "UNet",
    "VQState",
    "impala_channels",
    "obs_features",
    "stack_frames",
    "torch_default_init",
    "vq_ema_update",
    "vq_init",
    "vq_lookup",
    "vq_quantize",
]
