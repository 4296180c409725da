"""APV's world models and objectives (Seo et al., ICML 2022; paper Sec. 3, App. B; official apv_pretraining and
apv_finetuning `WorldModel`), on the shared shell (`nets.world_model`) with DreamerV2's cell and conv nets.

- `video_model`: the action-free latent video prediction model of pre-training (Eq. 2 / Eq. 12): encoder ->
  action-free RSSM (actions of width 0, padded to `action_pad` like every RSSM here) -> image decoder;
  `pretrain_loss` is its negative ELBO, image log loss + `kl` x KL (balanced, free nats averaged, DreamerV2's
  means over batch and time).
- `FineTuneModel`, kind "stacked" (APV, Eq. 3-6, Fig. 3a): encoder -> action-free RSSM z_t -> the
  action-conditional RSSM s_t, whose observation input is z_t's features (with the CNN embedding beside them when
  `concat_embed`, the official DMC setting); decoder and reward head read s_t. Kind "single" (DreamerV2): encoder ->
  the action-conditional RSSM. `finetune_loss` is Eq. 6: image and reward log losses, the action-conditional KL
  and the action-free KL at weight `af_kl` (0 in the paper), the reward target plus beta times the video bonus
  (`bonus.py`, Eq. 5) when beta > 0.
- `filter_frame`: one step of the agent's recurrent policy's filter (the new frame through the stack);
  `open_loop_actions`: the fine-tuned model's open-loop predictions from given actions, `open_loop` the video
  model's (the plots).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from vidrl_jax.errors import VidrlError
from vidrl_jax.losses import kl_loss, weighted_sum
from vidrl_jax.methods.apv import bonus as bonus_lib
from vidrl_jax.nets import world_model
from vidrl_jax.nets.rssm import RSSM, RSSMState, features, imagine, observe
from vidrl_jax.nets.world_model import WorldModel, world_model_config

KINDS = ("stacked", "single")


def model_config(**overrides) -> ml_collections.ConfigDict:
  """APV's official model (configs.yaml: 1024-wide RSSMs of 32 x 32 categoricals, DreamerV2's cell and 48-deep CNNs,
  a 4 x 400 reward head, no discount head, KL balance 0.8)."""
  c = world_model_config(
      deter=1024, stoch=32, classes=32, hidden=1024, layers=1, latent="categorical", min_std=0.1,
      img_in=True, gru="layernorm", action_pad=50, cnn_width=48, cnn_style="dreamerv2",
      reward_hidden=(400,) * 4, discount_hidden=(),
      kind="stacked", concat_embed=False,
      kl_balance=0.8, free_nats=0.0,
      loss_weights=ml_collections.ConfigDict(dict(image=1.0, reward=1.0, discount=1.0, kl=1.0, af_kl=0.0)))
  c.update(overrides)
  return c


def _time_major(x):
  return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), x)


def video_model(config: ml_collections.ConfigDict) -> WorldModel:
  """The action-free model (pre-training; the lower half of the stacked model): image only, no heads."""
  shell = {k: v for k, v in config.items() if k in world_model_config()}
  return world_model.make_world_model({}, ("image",), 0,
                                      world_model_config(**{**shell, "reward_hidden": (), "discount_hidden": ()}))


def image_nll(wm: WorldModel, params: dict, feat: jax.Array, obs: dict) -> jax.Array:
  """-log p(o_t | s_t) summed over pixels, (T, B): the unit-variance Gaussian of the image decoder."""
  dist = wm.decode(params, feat)["image"]
  return -jnp.sum(dist.log_prob(wm.targets(obs)["image"]), axis=(-3, -2, -1))


def _kl(post, prior, config) -> tuple[jax.Array, jax.Array]:
  return kl_loss(post, prior, balance=config.kl_balance, free_nats=config.free_nats, free_avg=True)


def pretrain_loss(wm: WorldModel, params: dict, batch: dict, rng: jax.Array, config: ml_collections.ConfigDict
                  ) -> tuple[jax.Array, dict]:
  """Eq. 2 / Eq. 12 on (B, T) video windows {'obs': {'image'}, 'is_first'}."""
  obs, is_first = _time_major(batch["obs"]), _time_major(batch["is_first"])
  T, B = is_first.shape
  filt = observe(wm.rssm, params["rssm"], wm.embed(params, obs), rng, actions=jnp.zeros((T, B, 0)),
                 is_first=is_first)
  kl_term, kl = _kl(filt.posterior, filt.prior, config)
  losses = {"image": jnp.mean(image_nll(wm, params, features(filt.states), obs)), "kl": kl_term}
  w = config.loss_weights
  total, logged = weighted_sum(losses, {"image": w.image, "kl": w.kl})
  return total, {**logged, "kl_value": jnp.mean(kl)}


@dataclasses.dataclass(frozen=True)
class FineTuneModel:
  """The agent's world model: `upper` (encoder, action-conditional RSSM, decoder, reward head) and, for kind
  "stacked", `lower` (the action-free RSSM; its encoder is `upper`'s). Params: the shell's dict plus "af_rssm"."""
  upper: WorldModel
  lower: WorldModel | None

  @property
  def config(self) -> ml_collections.FrozenConfigDict:
    return self.upper.config

  def init(self, rng: jax.Array) -> dict:
    params = self.upper.init(rng)
    if self.lower is not None:
      params["af_rssm"] = self.lower.init(jax.random.fold_in(rng, 7))["rssm"]
    return params

  def upper_input(self, embed: jax.Array, af_feat: jax.Array | None) -> jax.Array:
    if af_feat is None:
      return embed
    return jnp.concatenate([embed, af_feat], -1) if self.config.concat_embed else af_feat


def finetune_model(action_dim: int, config: ml_collections.ConfigDict) -> FineTuneModel:
  if config.kind not in KINDS:
    raise VidrlError(f"model.kind {config.kind!r}: use 'stacked' (APV) or 'single' (DreamerV2)")
  if config.kind == "single":
    return FineTuneModel(world_model.make_world_model({}, ("image",), action_dim, config), None)
  lower = video_model(config)
  width = lower.feature_dim + (lower.embed_dim if config.concat_embed else 0)
  upper = world_model.make_world_model({}, ("image",), action_dim, config, rssm_input=width)
  return FineTuneModel(upper, lower)


def observe_stack(model: FineTuneModel, params: dict, obs: dict, action: jax.Array, is_first: jax.Array,
                  rng: jax.Array) -> tuple[Any, Any]:
  """Filters time-major (T, B) frames through the model: (upper `Filtered`, lower `Filtered` or None)."""
  r_low, r_up = jax.random.split(rng)
  embed = model.upper.embed(params, obs)
  low, af_feat = None, None
  if model.lower is not None:
    T, B = is_first.shape
    low = observe(model.lower.rssm, params["af_rssm"], embed, r_low, actions=jnp.zeros((T, B, 0)),
                  is_first=is_first)
    af_feat = features(low.states)
  up = observe(model.upper.rssm, params["rssm"], model.upper_input(embed, af_feat), r_up, actions=action,
               is_first=is_first)
  return up, low


def open_loop_actions(model: FineTuneModel, params: dict, images: jax.Array, actions: jax.Array, context: int,
                      rng: jax.Array) -> jax.Array:
  """The action-conditional open-loop prediction of (B, T) frames given the actions (B, T, A) that preceded them
  (the replay's: actions[:, t] = a_{t-1}): the first `context` frames filtered through the stack (`observe_stack`)
  and reconstructed from their posteriors, the rest decoded from Eq. 3's transition p(s_t | s_{t-1}, a_{t-1}) rolled
  forward on actions[:, context:] without observations (the official apv_finetuning `video_pred`); (B, T, H, W, 3)
  in [0, 1]."""
  B, T = images.shape[:2]
  if not 0 < context < T:
    raise VidrlError(f"open-loop prediction with {context} context frames of {T}: use 1 to {T - 1}")
  image, action = jnp.swapaxes(images, 0, 1), jnp.swapaxes(actions, 0, 1)
  r_obs, r_img = jax.random.split(rng)
  first = jnp.zeros((context, B), bool).at[0].set(True)
  up, _ = observe_stack(model, params, {"image": image[:context]}, action[:context], first, r_obs)
  start = jax.tree.map(lambda x: x[-1], up.states)
  rolled = imagine(model.upper.rssm, params["rssm"], start, r_img, actions=action[context:])
  feat = jnp.concatenate([features(up.states), features(rolled.states)], 0)
  frames = model.upper.decode(params, feat)["image"].mean - model.upper.pixel_offset
  return jnp.clip(jnp.swapaxes(frames, 0, 1), 0.0, 1.0)


def open_loop(wm: WorldModel, params: dict, images: jax.Array, context: int, rng: jax.Array) -> jax.Array:
  """The video model's open-loop prediction of (B, T) frames (Eq. 1's transition p(z_t | z_{t-1})):
  `open_loop_actions` with no actions."""
  return open_loop_actions(FineTuneModel(wm, None), params, images, jnp.zeros((*images.shape[:2], 0)), context, rng)


def finetune_loss(model: FineTuneModel, params: dict, bonus_state: bonus_lib.BonusState | None, batch: dict,
                  rng: jax.Array, bonus_config: ml_collections.ConfigDict) -> tuple[jax.Array, tuple]:
  """Eq. 6 on (B, T) replay windows {'obs': {'image'}, 'action', 'reward', 'is_first'}; returns (total, (new bonus
  state, the posterior states (T, B), metrics)). The bonus needs the stacked model's action-free features."""
  c = model.config
  obs, action = _time_major(batch["obs"]), _time_major(batch["action"])
  reward, is_first = _time_major(batch["reward"]), _time_major(batch["is_first"])
  up, low = observe_stack(model, params, obs, action, is_first, rng)
  feat = features(up.states)
  losses, metrics = {}, {}
  losses["kl"], kl = _kl(up.posterior, up.prior, c)
  metrics["kl_value"] = jnp.mean(kl)
  if low is not None:
    losses["af_kl"], af_kl = _kl(low.posterior, low.prior, c)
    metrics["af_kl_value"] = jnp.mean(af_kl)
  losses["image"] = jnp.mean(image_nll(model.upper, params, feat, obs))
  target, pred_feat = reward, feat
  if bonus_config.beta > 0:
    if low is None:
      raise VidrlError("the video bonus reads the action-free model's features: use model.kind='stacked' or "
                       "bonus.beta=0")
    bonus_state, bonus, bonus_metrics = bonus_lib.video_bonus(bonus_state, _time_major(features(low.states)),
                                                              bonus_config)
    Tw = bonus.shape[1]
    target = reward[:Tw] + bonus_config.beta * _time_major(bonus)     # (T', B): the windows that fit
    pred_feat = feat[:Tw]
    metrics.update(bonus_metrics)
  reward_dist = model.upper.reward(params, pred_feat)
  losses["reward"] = -jnp.mean(reward_dist.log_prob(target))
  w = c.loss_weights
  total, logged = weighted_sum(losses, {k: w[k] for k in losses})
  metrics["reward_mse"] = jnp.mean(jnp.square(reward_dist.mean - target))
  return total, (bonus_state, jax.tree.map(jax.lax.stop_gradient, up.states), {**logged, **metrics})


def reward_mean(model: FineTuneModel, params: dict, feat: jax.Array) -> jax.Array:
  return model.upper.reward(params, feat).mean


def initial_carry(model: FineTuneModel, batch: int, action_dim: int) -> tuple:
  """(action-free state, state, previous action), all zero (DreamerV2's `policy` with state None)."""
  zero = lambda m: RSSMState(jnp.zeros((batch, m.config.deter)), jnp.zeros((batch, m.rssm.stoch_dim)))
  low = zero(model.lower) if model.lower is not None else None
  return (low, zero(model.upper), jnp.zeros((batch, action_dim)))


def filter_frame(model: FineTuneModel, params: dict, carry: tuple, obs: dict, is_first: jax.Array,
                 rng: jax.Array, sample: bool = True) -> tuple[RSSMState | None, RSSMState]:
  """One step of the stack on batched frames (B, ...): (new action-free state, new state); `is_first` resets."""
  low, state, action = carry
  r_low, r_up = jax.random.split(rng)
  embed = model.upper.embed(params, obs)
  af_feat = None
  if model.lower is not None:
    low, _, _ = model.lower.rssm.apply(params["af_rssm"], low, jnp.zeros((embed.shape[0], 0)), embed,
                                       r_low if sample else None, is_first, method=RSSM.obs_step)
    af_feat = features(low)
  state, _, _ = model.upper.rssm.apply(params["rssm"], state, action, model.upper_input(embed, af_feat),
                                       r_up if sample else None, is_first, method=RSSM.obs_step)
  return low, state


__all__ = ["FineTuneModel", "KINDS", "filter_frame", "finetune_loss", "finetune_model", "image_nll",
           "initial_carry", "model_config", "observe_stack", "open_loop", "open_loop_actions", "pretrain_loss",
           "reward_mean", "video_model"]
