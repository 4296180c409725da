"""The world-model shell shared by AIME, APV and DreamerV2: an encoder, the RSSM, decoders and reward / discount
heads, built from one config and held together by `WorldModel` (parameters are a plain dict).

  wm = make_world_model(obs_spec, ("image",), action_dim, world_model_config(image_size=32, ...))
  params = wm.init(rng)              # {"rssm", "encoder", "decoders", ["reward"], ["discount"]}
  embeds = wm.embed(params, obs)     # f(o), any leading dims
  decoded = wm.decode(params, feat)  # key -> Normal over the reconstruction target (`wm.targets(obs)`)

- Encoder f(o): the concatenated vector keys (identity) and, for `image`, the conv encoder (`nets.conv`) of
  `image_size` pixels with `enc_kernels`. `cnn_style` "ha" is AIME's (ReLU, pixels in [0, 1], sigmoid decoder);
  "dreamerv2" DreamerV2's (ELU after every layer, pixels in [-0.5, 0.5], linear decoder).
- Decoders: a unit-variance Gaussian over the image (deconvolutions `dec_kernels`, checked to end at
  `image_size`), a Gaussian MLP per vector key (learned or unit std).
- Heads (optional, empty `*_hidden` = none): the reward as a unit-variance Gaussian (DreamerV2's "mse" head) and
  the discount as a Bernoulli's logit, ELU MLPs on the features [h, s].
- The RSSM (`nets.rssm.RSSM`): every cell switch in the config. `rssm_input` widens its observation input beyond
  the encoder's (APV's upper model reads the action-free model's features, `methods/apv/model.py`).

The objectives are the methods' (AIME's ELBO in `methods/aime/model.py`, DreamerV2's and APV's in
`methods/apv/model.py`), built on `losses.py` from these pieces.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vidrl_jax.data.trajectories import concat_obs
from vidrl_jax.distributions import Normal
from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.conv import ConvDecoder, ConvEncoder, decoder_size
from vidrl_jax.nets.heads import GaussianMLP
from vidrl_jax.nets.mlp import MLP
from vidrl_jax.nets.pixels import image_to_float
from vidrl_jax.nets.rssm import RSSM, zeros_state

ACTIVATIONS = {"elu": nn.elu, "relu": nn.relu, "silu": nn.silu}
CNN_STYLES = ("ha", "dreamerv2")


def world_model_config(**overrides) -> ml_collections.ConfigDict:
  """The shell's settings (defaults: AIME's walker model, paper App. B)."""
  c = ml_collections.ConfigDict(dict(
      deter=512, stoch=128, hidden=128, layers=2, layer_norm=False, min_std=1e-6, activation="elu",
      latent="gaussian", classes=32, initial="zeros", img_in=False, gru="torch", action_pad=0,   # nets.rssm.RSSM
      image_size=64, cnn_width=32, cnn_style="ha", enc_kernels=(4, 4, 4, 4), dec_kernels=(5, 5, 6, 6),
      learn_std=True,            # vector decoders: learned std, or unit std
      reward_hidden=(), discount_hidden=(),   # () = no such head
  ))
  c.update(overrides)
  return c


@dataclasses.dataclass(frozen=True)
class WorldModel:
  """Encoder + RSSM + decoders (+ reward and discount heads) for the observation keys `obs_keys` (vectors and/or
  'image')."""
  obs_keys: tuple[str, ...]
  obs_dims: tuple[int, ...]          # per key: vector width (image: 0)
  action_dim: int
  config: ml_collections.FrozenConfigDict   # frozen: a WorldModel is hashable, equal when its settings are
  rssm_input: int = 0                # the RSSM's observation width; 0: the encoder's

  def __post_init__(self):
    c = self.config
    if c.cnn_style not in CNN_STYLES or c.activation not in ACTIVATIONS:
      raise VidrlError(f"model cnn_style {c.cnn_style!r} / activation {c.activation!r}: use one of {CNN_STYLES} "
                       f"and one of {sorted(ACTIVATIONS)}")
    if self.image and decoder_size(tuple(c.dec_kernels)) != c.image_size:
      raise VidrlError(f"the decoder kernels {tuple(c.dec_kernels)} make {decoder_size(tuple(c.dec_kernels))}-pixel "
                       f"images but image_size is {c.image_size}; set model.dec_kernels (e.g. (5, 5, 6, 6) for 64, "
                       f"(6, 5, 4) for 32)")

  @property
  def image(self) -> bool:
    return "image" in self.obs_keys

  @property
  def vector_keys(self) -> tuple[str, ...]:
    return tuple(k for k in self.obs_keys if k != "image")

  @property
  def rssm(self) -> RSSM:
    c = self.config
    return RSSM(deter=c.deter, stoch=c.stoch, hidden=c.hidden, layers=c.layers, layer_norm=c.layer_norm,
                min_std=c.min_std, activation=ACTIVATIONS[c.activation], latent=c.latent, classes=c.classes,
                initial=c.initial, img_in=c.img_in, gru=c.gru, action_pad=c.action_pad)

  def encoder(self) -> ConvEncoder:
    c = self.config
    if c.cnn_style == "ha":
      return ConvEncoder(width=c.cnn_width, kernels=tuple(c.enc_kernels))
    return ConvEncoder(width=c.cnn_width, kernels=tuple(c.enc_kernels), activation=nn.elu, last_activation=True,
                       pixel_offset=-0.5)

  def decoder(self, key: str, dim: int) -> nn.Module:
    c = self.config
    if key == "image":
      if c.cnn_style == "ha":
        return ConvDecoder(width=c.cnn_width, kernels=tuple(c.dec_kernels))
      return ConvDecoder(width=c.cnn_width, kernels=tuple(c.dec_kernels), activation=nn.elu, output="linear")
    return GaussianMLP(dim, (c.hidden,) * c.layers, layer_norm=c.layer_norm, learn_std=c.learn_std,
                       min_std=c.min_std)

  def _head(self, hidden: Sequence[int]) -> MLP:
    return MLP(hidden=tuple(hidden), out=1, activation=nn.elu)

  @property
  def pixel_offset(self) -> float:
    return 0.0 if self.config.cnn_style == "ha" else -0.5

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.config.image_size, self.config.image_size, 3)

  @property
  def embed_dim(self) -> int:
    """The encoder's output width f(o)."""
    width = sum(self.obs_dims)
    if self.image:
      out = jax.eval_shape(self.encoder().init_with_output, jax.random.key(0),
                           jax.ShapeDtypeStruct((1, *self.image_shape), jnp.uint8))[0]
      width += math.prod(out.shape[1:])
    return width

  @property
  def feature_dim(self) -> int:
    return self.config.deter + self.rssm.stoch_dim

  def init(self, rng: jax.Array) -> dict:
    """Parameters of every part. The rng layout is AIME's (its checkpoints and results do not move): split into
    4 + keys: 0-1 the RSSM, 2 the encoder, 3 free for a method's extra head, 4.. the decoders; heads by fold_in."""
    r = jax.random.split(rng, 4 + len(self.obs_keys))
    feat = jnp.zeros((1, self.feature_dim))
    params = {"rssm": self.rssm.init(r[0], zeros_state(self.rssm, (1,)), jnp.zeros((1, self.action_dim)),
                                     jnp.zeros((1, self.rssm_input or self.embed_dim)), r[1])}
    if self.image:
      params["encoder"] = self.encoder().init(r[2], jnp.zeros((1, *self.image_shape), jnp.uint8))
    params["decoders"] = {k: self.decoder(k, d).init(r[4 + i], feat)
                          for i, (k, d) in enumerate(zip(self.obs_keys, self.obs_dims))}
    for i, name in enumerate(("reward", "discount")):
      if self.config[f"{name}_hidden"]:
        params[name] = self._head(self.config[f"{name}_hidden"]).init(jax.random.fold_in(rng, 1000 + i), feat)
    return params

  def embed(self, params: dict, obs: dict) -> jax.Array:
    """f(o): concatenated vector keys (identity encoder) and/or conv features; any leading dims."""
    parts = []
    if self.vector_keys:
      parts.append(concat_obs(obs, self.vector_keys))
    if self.image:
      image = obs["image"]
      if tuple(image.shape[-3:]) != self.image_shape:
        raise VidrlError(f"the images are {tuple(image.shape[-3:])} but the model takes {self.image_shape}; set "
                         f"the config's image size to the data's")
      parts.append(self.encoder().apply(params["encoder"], image))
    return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]

  def decode(self, params: dict, feat: jax.Array) -> dict[str, Normal]:
    out = {}
    for k, d in zip(self.obs_keys, self.obs_dims):
      y = self.decoder(k, d).apply(params["decoders"][k], feat)
      out[k] = Normal(y, jnp.ones_like(y)) if k == "image" else y
    return out

  def targets(self, obs: dict) -> dict[str, jax.Array]:
    """What the decoders reconstruct: vectors as float32 (d,), images as the encoder sees them."""
    return {k: image_to_float(obs[k]) + self.pixel_offset if k == "image" else concat_obs(obs, [k])
            for k in self.obs_keys}

  def reward(self, params: dict, feat: jax.Array) -> Normal:
    """p(r_t | s_t), unit variance (`reward_hidden` must be set)."""
    mean = self._head(self.config.reward_hidden).apply(params["reward"], feat)[..., 0]
    return Normal(mean, jnp.ones_like(mean))

  def discount_logit(self, params: dict, feat: jax.Array) -> jax.Array:
    """The logit of p(continue | s_t) (`discount_hidden` must be set)."""
    return self._head(self.config.discount_hidden).apply(params["discount"], feat)[..., 0]


def make_world_model(obs_spec: dict, obs_keys: Sequence[str], action_dim: int, config: ml_collections.ConfigDict,
                     cls: type = WorldModel, **fields) -> WorldModel:
  """`obs_spec`: key -> (shape, dtype) of one observation (env.obs_spec or a dataset's first frame); `cls` a
  method's subclass (AIME's adds its inverse model)."""
  dims = tuple(0 if k == "image" else math.prod(obs_spec[k][0]) for k in obs_keys)
  return cls(tuple(obs_keys), dims, action_dim, ml_collections.FrozenConfigDict(config), **fields)
