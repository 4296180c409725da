"""AIME's world model and its two objectives (Zhang et al., NeurIPS 2023; paper Sec. 3, App. B, App. C).

The world model is the shared shell (`nets.world_model`: encoder f(o), identity for vector observations and conv
for 64x64 images, the RSSM, one decoder per observation key, Gaussian MLP for vectors and unit-variance deconv for
images) and, for the IDM variant, an inverse model q(a_{t-1} | s_{t-1}, f(o_t)).

- `model_loss`: phase 1, the negative ELBO of an embodiment window with its recorded actions (Eq. 1-4).
- `policy_loss`: phase 2, the same negative ELBO of a demonstration window whose actions are sampled from the
  policy inside the filter (Eq. 8, Algorithm 1); or, with the IDM, actions from the inverse model plus
  KL[q_idm || pi] (App. C). Only the policy's parameters are differentiated.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections

from vidrl_jax.distributions import TanhNormal, kl_tanh_normal
from vidrl_jax.losses import elbo_losses, weighted_sum
from vidrl_jax.nets import world_model
from vidrl_jax.nets.heads import TanhGaussianPolicy
from vidrl_jax.nets.inverse import InverseModel
from vidrl_jax.nets.rssm import RSSMState, features, observe
from vidrl_jax.nets.world_model import world_model_config


def model_config(**overrides) -> ml_collections.ConfigDict:
  """World-model settings (paper App. B defaults: walker): the shared shell's (`nets.world_model`) plus AIME's."""
  c = world_model_config(
      nll_reweight="dim_wise", free_nats=0.0, kl_balance=None,
      idm=False,                 # train an inverse model head too (App. C); needed by phase2.use_idm
      loss_weights=ml_collections.ConfigDict(dict(rec=1.0, kl=1.0, idm=1.0)),   # kl = the KL scale
  )
  c.update(overrides)
  return c


@dataclasses.dataclass(frozen=True)
class WorldModel(world_model.WorldModel):
  """The shared shell plus, for the IDM variant (`config.idm`), q(a_{t-1} | s_{t-1}, f(o_t))."""

  def _idm(self) -> InverseModel:
    """q(a | s, f(o')): identity encoder on (s_{t-1}, f(o_t)), a tanh-Gaussian head at the top of the params."""
    head = TanhGaussianPolicy(self.action_dim, (self.config.hidden,) * self.config.layers)
    return InverseModel(head_net=head, scopes=("encoder", None))

  def init(self, rng: jax.Array) -> dict:
    params = super().init(rng)
    if self.config.idm:   # the shell leaves split 3 of its rng layout to this head
      params["idm"] = self._idm().init(jax.random.split(rng, 4 + len(self.obs_keys))[3],
                                       jnp.zeros((1, self.feature_dim)), jnp.zeros((1, self.embed_dim)))
    return params

  def idm(self, params: dict, feat: jax.Array, embed: jax.Array) -> TanhNormal:
    """q(a_{t-1} | s_{t-1}, f(o_t)) (App. C, Eq. 10)."""
    return self._idm().apply(params["idm"], feat, embed)


def make_world_model(obs_spec: dict, obs_keys: Sequence[str], action_dim: int,
                     config: ml_collections.ConfigDict) -> WorldModel:
  """`obs_spec`: key -> (shape, dtype) of one observation (env.obs_spec or a dataset's first frame)."""
  return world_model.make_world_model(obs_spec, obs_keys, action_dim, config, cls=WorldModel)


def time_major(x):
  return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), x)


def _weights(wm: WorldModel, w: ml_collections.ConfigDict, extra: dict[str, float]) -> dict[str, float]:
  out = {f"rec/{k}": w.rec for k in wm.obs_keys}
  out["kl"] = w.kl
  out.update(extra)
  return out


def model_loss(wm: WorldModel, params: dict, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
  """Phase 1: -ELBO of (B, T) embodiment windows with their recorded actions (+ the IDM likelihood, App. C)."""
  c = wm.config
  obs, actions = time_major(batch["obs"]), time_major(batch["action"])
  embeds = wm.embed(params, obs)
  filt = observe(wm.rssm, params["rssm"], embeds, rng, actions=actions)
  feat = features(filt.states)
  losses, metrics = elbo_losses(wm.targets(obs), wm.decode(params, feat), filt.posterior, filt.prior,
                                free_nats=c.free_nats, kl_balance=c.kl_balance, nll_reweight=c.nll_reweight)
  extra = {}
  if c.idm:
    # IDM as a decoder of a_t from (s_t, f(o_{t+1})), inputs detached (App. C, "detach" mode).
    inputs = jax.lax.stop_gradient((feat[:-1], embeds[1:]))
    dist = wm.idm(params, *inputs)
    losses["idm"] = -jnp.sum(dist.log_prob(actions[1:]), axis=0)
    metrics["idm_mse"] = jnp.mean(jnp.square(dist.mode() - actions[1:]))
    extra["idm"] = c.loss_weights.idm
  total, logged = weighted_sum(losses, _weights(wm, c.loss_weights, extra))
  return total, {**logged, **metrics}


def phase2_config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(
      hidden=(128, 128),
      use_idm=False,             # App. C variant: actions from the IDM, policy trained by KL[q_idm || pi]
      loss_weights=ml_collections.ConfigDict(dict(rec=1.0, kl=1.0, action_kl=1.0)),  # rec=0: kl-only; kl=0: rec-only
  ))
  c.update(overrides)
  return c


def policy_module(action_dim: int, config: ml_collections.ConfigDict) -> TanhGaussianPolicy:
  return TanhGaussianPolicy(action_dim, tuple(config.hidden))


def policy_loss(wm: WorldModel, wm_params: dict, policy: TanhGaussianPolicy, policy_params, batch: dict,
                rng: jax.Array, config: ml_collections.ConfigDict) -> tuple[jax.Array, dict]:
  """Phase 2 (Eq. 8): -ELBO of observation-only demo windows, a_{t-1} ~ pi(a | s_{t-1}) inside the filter.

  The true ELBO is used (no free nats, no balancing: App. B, "it is better to optimise the policy with the true
  ELBO"); beta-NLL reweighting follows the world model's setting. `batch['action']` (the demos' true actions)
  is only used for the action-MSE metric (paper Fig. 8).
  """
  mc = wm.config
  obs = time_major(batch["obs"])
  embeds = wm.embed(wm_params, obs)

  def act(state: RSSMState, embed: jax.Array, r: jax.Array):
    pi = policy.apply(policy_params, features(state))
    if not config.use_idm:
      return pi.sample(r), {}
    q = wm.idm(wm_params, features(state), embed)
    return q.sample(r), {"action_kl": kl_tanh_normal(q, pi)}

  filt = observe(wm.rssm, wm_params["rssm"], embeds, rng, act=act)
  losses, metrics = elbo_losses(wm.targets(obs), wm.decode(wm_params, features(filt.states)), filt.posterior,
                                filt.prior, nll_reweight=mc.nll_reweight)
  extra = {}
  if config.use_idm:
    losses["action_kl"] = jnp.sum(filt.extras["action_kl"], axis=0)
    extra["action_kl"] = config.loss_weights.action_kl
  total, logged = weighted_sum(losses, _weights(wm, config.loss_weights, extra))
  # a_{t-1} against the demo's true pre_action, skipping each window's first step (its a_{-1} comes from s = 0).
  true = time_major(batch["action"])
  metrics["action_mse"] = jnp.mean(jnp.square(filt.actions[1:] - true[1:]))
  return total, {**logged, **metrics}
