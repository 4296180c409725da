"""RLV's learning pieces (Schmeckpeper et al., CoRL 2020, Algorithm 1) as one `sac.Aux` on SAC's shared encoder.

Each update draws n interaction transitions (SAC's replay) and m action-free observation transitions (an extra pool
of `offpolicy.sac_task`, named `config.source`). `relabel` (stop-gradient encoder) gives the observation half
actions from the inverse model on its features (h, h') (Algorithm 1 line 13) and rewards from Eq. 2 (line 14), and
returns ONE SAC batch, the interaction half first (rows [:n]) and the observation half after it (rows [n:]), so SAC
trains on both (line 15). `loss` holds the terms of Eq. 4 besides SAC's own (line 16):

- `inverse` (weight c1): Eq. 1, ||a_int - f_inv(h_int, h'_int)||^2 on the interaction half; trains the inverse
  model and the encoder.
- `discriminator` (weight 1; its own learning rate `discriminator_lr`): the discriminator's side of Eq. 3, the
  cross-entropy of telling interaction features (label 1: Eq. 3's log f_discr(h_int)) from observation features
  (label 0), each domain's mean, on stop-gradient features: it trains the discriminator only.
- `adversarial` (weight c3, the official "generator weight" 1e-3): the encoder's side, the same cross-entropy with
  the labels flipped (the non-saturating form of minimising Eq. 3), through a stop-gradient discriminator: it trains
  the encoder only. `official_stop_gradient=True` also stops the features, as the released code does (its
  discriminator input is built with stop-gradient), so the term then reaches nothing.

Ablations (paper Fig. 8): `obs_actions` "inverse" | "true" | "zeros" and `obs_rewards` "eq2" | "true" | "zeros"
("true" reads the pool's `action` / `reward`), `adversarial=False` drops the discriminator and both its terms. The
inverse model is trained under every switch (it shapes the encoder as in RLV). Vector observations have an encoder
only with SAC's `state_encoder_hidden` set (else `encode` is the identity and the adversarial term has nothing to
train but the discriminator): set it for the state-based domain shift.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.inverse import InverseModel
from vidrl_jax.nets.mlp import MLP
from vidrl_jax.rl import sac

OBS_ACTIONS = ("inverse", "true", "zeros")
OBS_REWARDS = ("eq2", "true", "zeros")
INTERACTION_ACTION = "interaction_action"   # the relabelled batch's copy of a_int, (n, A): Eq. 1's target
DOMAIN = "domain"                           # the relabelled batch's rows: 0 interaction, 1 observation


def rlv_config(**overrides) -> ml_collections.ConfigDict:
  """RLV's settings (paper Tables 2-5): Eq. 2's `c_large`/`c_small` (Acrobot 10 / -1; MuJoCo 10 / 0), Eq. 4's
  weights `c1` (inverse model, 1) and `c3` (adversarial, 0.001; c2, SAC's, is 1), `discriminator_weight` (1; the
  discriminator's own loss, which touches only its params), inverse-model and discriminator MLPs [64, 64, 64],
  Adam at `inverse_lr` 3e-4 (Table 1) and `discriminator_lr` 3e-8 (Table 5). `obs_last_is_terminal`: the
  observation half's discount is 0 on a trajectory's last step (the official code marks the last video frame
  terminal). `source`: the name of the observation pool in `sac_task`'s `extra_sources`. Switches: see the module
  docstring."""
  c = ml_collections.ConfigDict(dict(
      c_large=10.0, c_small=-1.0, c1=1.0, c3=1e-3, discriminator_weight=1.0, inverse_hidden=(64, 64, 64),
      discriminator_hidden=(64, 64, 64), inverse_lr=3e-4, discriminator_lr=3e-8, obs_actions="inverse",
      obs_rewards="eq2", adversarial=True, official_stop_gradient=False, obs_last_is_terminal=True,
      source="observation"))
  c.update(overrides)
  return c


def reward_labels(is_last: jax.Array, c_large: float, c_small: float) -> jax.Array:
  """Eq. 2: c_large where s' ends its observed trajectory, c_small elsewhere (float32, the shape of is_last)."""
  return jnp.where(jnp.asarray(is_last, bool), jnp.float32(c_large), jnp.float32(c_small))


def inverse_module(config: ml_collections.ConfigDict, action_dim: int) -> InverseModel:
  """f_inv(h, h'): an MLP (relu, `inverse_hidden`) on the concatenated features, linear output of width A."""
  return InverseModel(MLP(tuple(config.inverse_hidden), out=int(action_dim)))


def discriminator_module(config: ml_collections.ConfigDict) -> MLP:
  """f_discr(h): an MLP (relu, `discriminator_hidden`) giving one logit of "h is from interaction data"."""
  return MLP(tuple(config.discriminator_hidden), out=1)


def check_config(config: ml_collections.ConfigDict) -> None:
  if config.obs_actions not in OBS_ACTIONS or config.obs_rewards not in OBS_REWARDS:
    raise VidrlError(f"RLV's obs_actions must be one of {OBS_ACTIONS} and obs_rewards one of {OBS_REWARDS}, got "
                     f"{config.obs_actions!r} and {config.obs_rewards!r}; fix the rlv config")
  if min(config.c1, config.c3, config.discriminator_weight, config.inverse_lr, config.discriminator_lr) < 0:
    raise VidrlError("RLV's loss weights and learning rates must be non-negative; fix the rlv config")


def _optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam per aux part: the inverse model at `inverse_lr`, the discriminator at `discriminator_lr`
  (`optax.multi_transform` on the top-level keys of the aux params)."""
  lrs = {"inverse": config.inverse_lr, "discriminator": config.discriminator_lr}
  return optax.multi_transform({k: optax.adam(lr) for k, lr in lrs.items()},
                               lambda params: {k: jax.tree.map(lambda _: k, v) for k, v in params.items()})


def _rows(tree: Any, rows: slice) -> Any:
  return jax.tree.map(lambda x: x[rows], tree)


def _join(a: Any, b: Any) -> Any:
  return jax.tree.map(lambda x, y: jnp.concatenate([x, y.astype(x.dtype)], axis=0), a, b)


def domain_cross_entropy(logits: jax.Array, domain: jax.Array, flip: bool = False) -> jax.Array:
  """-(mean over interaction rows of log sigma(l) + mean over observation rows of log(1 - sigma(l))) = -Eq. 3
  for logits (N,) and domain (N,) (0 interaction, 1 observation); `flip` swaps the labels (the encoder's loss)."""
  target = domain if flip else 1.0 - domain
  ce = optax.sigmoid_binary_cross_entropy(logits, target)
  obs = domain.astype(jnp.float32)
  return jnp.sum(ce * (1 - obs)) / jnp.maximum(jnp.sum(1 - obs), 1) + jnp.sum(ce * obs) / jnp.maximum(jnp.sum(obs), 1)


def make_aux(config: ml_collections.ConfigDict, action_dim: int) -> sac.Aux:
  """RLV as `sac.Aux` for `sac.init/update` or `offpolicy.sac_task(..., aux=aux, extra_sources={config.source:
  (pool, m)})`. The pool's draws need `obs`, `next_obs`, `discount`, `is_last`, plus `action` for
  obs_actions="true" and `reward` for obs_rewards="true". Aux params: {"inverse"[, "discriminator"]}."""
  check_config(config)
  action_dim = int(action_dim)
  inverse, discriminator = inverse_module(config, action_dim), discriminator_module(config)
  source, adversarial, official = str(config.source), bool(config.adversarial), bool(config.official_stop_gradient)
  c_large, c_small = float(config.c_large), float(config.c_small)
  obs_actions, obs_rewards, last_terminal = str(config.obs_actions), str(config.obs_rewards), bool(
      config.obs_last_is_terminal)

  def init(rng: jax.Array, feat: jax.Array, sac_action_dim: int) -> dict:
    if int(sac_action_dim) != action_dim:
      raise VidrlError(f"RLV's aux was made for {action_dim}-D actions but SAC has {sac_action_dim}; pass SAC's "
                       f"action size to make_aux")
    rng_inv, rng_disc = jax.random.split(rng)
    params = {"inverse": inverse.init(rng_inv, feat, feat)}
    if adversarial:
      params["discriminator"] = discriminator.init(rng_disc, feat)
    return params

  def relabel(params: dict, encode, batch: dict, rng: jax.Array) -> dict:
    if source not in batch:
      raise VidrlError(f"RLV's batch lacks the observation pool {source!r} (has {sorted(batch)}); pass "
                       f"extra_sources={{{source!r}: (pool, share)}} to sac_task or set the rlv config's source")
    half = batch[source]
    need = {"obs", "next_obs", "discount", "is_last"} | ({"action"} if obs_actions == "true" else set()) | (
        {"reward"} if obs_rewards == "true" else set())
    if need - set(half):
      raise VidrlError(f"RLV's observation pool draws lack {sorted(need - set(half))}; store them in the pool or "
                       f"use obs_actions='inverse' / obs_rewards='eq2'")
    n, m = batch["action"].shape[0], half["discount"].shape[0]
    if obs_actions == "inverse":   # line 13, clipped to SAC's action box
      action = jnp.clip(inverse.apply(params["inverse"], encode(half["obs"]), encode(half["next_obs"])), -1, 1)
    elif obs_actions == "true":
      action = jnp.asarray(half["action"], jnp.float32).reshape(m, action_dim)
    else:
      action = jnp.zeros((m, action_dim), jnp.float32)
    if obs_rewards == "eq2":       # line 14
      reward = reward_labels(half["is_last"], c_large, c_small)
    else:
      reward = jnp.asarray(half["reward"], jnp.float32) if obs_rewards == "true" else jnp.zeros((m,), jnp.float32)
    discount = jnp.asarray(half["discount"], jnp.float32)
    if last_terminal:
      discount = discount * (1.0 - jnp.asarray(half["is_last"], jnp.float32))
    return {"obs": _join(batch["obs"], half["obs"]), "next_obs": _join(batch["next_obs"], half["next_obs"]),
            "action": _join(batch["action"], jax.lax.stop_gradient(action)),
            "reward": _join(batch["reward"], reward), "discount": _join(batch["discount"], discount),
            INTERACTION_ACTION: batch["action"],
            DOMAIN: jnp.concatenate([jnp.zeros((n,), jnp.float32), jnp.ones((m,), jnp.float32)])}

  def loss(params: dict, encode, batch: dict, rng: jax.Array) -> tuple[dict, dict]:
    if INTERACTION_ACTION not in batch:
      raise VidrlError("RLV's loss needs the batch its relabel returns; build the Aux with make_aux, not by hand")
    target, domain = batch[INTERACTION_ACTION], batch[DOMAIN]
    n = target.shape[0]
    h = encode(batch["obs"] if adversarial else _rows(batch["obs"], slice(0, n)))   # no discriminator: n rows
    predicted = inverse.apply(params["inverse"], h[:n], encode(_rows(batch["next_obs"], slice(0, n))))
    sq_err = jnp.sum(jnp.square(predicted - target), axis=-1)   # Eq. 1
    terms = {"inverse": jnp.mean(sq_err)}
    metrics = {"inverse_abs_err": jnp.mean(jnp.abs(predicted - target))}
    if adversarial:
      frozen_h = jax.lax.stop_gradient(h)
      logits = discriminator.apply(params["discriminator"], frozen_h)[:, 0]
      terms["discriminator"] = domain_cross_entropy(logits, domain)
      gen_logits = discriminator.apply(jax.lax.stop_gradient(params["discriminator"]), frozen_h if official else h)
      terms["adversarial"] = domain_cross_entropy(gen_logits[:, 0], domain, flip=True)
      metrics["discriminator_accuracy"] = jnp.mean((logits > 0) == (domain < 0.5))
    return terms, metrics

  weights = {"inverse": float(config.c1)}
  if adversarial:
    weights.update(discriminator=float(config.discriminator_weight), adversarial=float(config.c3))
  return sac.Aux(init=init, loss=loss, weights=weights, optimizer=_optimizer(config), relabel=relabel)
