"""Recurrent state-space model (RSSM; Hafner et al. 2019, PlaNet/Dreamer) with a Gaussian stochastic state.

The cell follows AIME's official `RSSM` (paper App. B): a GRU deterministic state h, updated from the previous
stochastic state and action, and Gaussian prior p(s_t | h_t) / posterior q(s_t | h_t, e_t), each mean and std an
MLP (2 x 128 ELU by default; std = softplus + min_std):

  h_t = GRU(h_{t-1}, [s_{t-1}, a_{t-1}])
  prior     p(s_t | h_t)         = N(mu_p(h_t), sigma_p(h_t))
  posterior q(s_t | h_t, e_t)    = N(mu_q([h_t, e_t]), sigma_q([h_t, e_t]))

The time loop is a `lax.scan` in `observe` (filtering; the priors, which the recurrence does not need, are computed
after it in one batched pass) and `imagine` (open-loop prior rollout). Arrays are
time-major inside (T, B, ...). `observe` takes either the dataset's actions (AIME phase 1) or an `act` function
that chooses a_{t-1} from the state (AIME phase 2: the policy; App. C: an inverse model), so both phases share one
loop. APV reuses the cell without actions (action_dim 0) and POI its encoders.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrl_jax.distributions import Normal
from vidrl_jax.nets.mlp import MLP


class RSSMState(NamedTuple):
  deter: jax.Array   # (..., deter)
  stoch: jax.Array   # (..., stoch)


def features(state: RSSMState) -> jax.Array:
  """The model state fed to decoders and policies: [h, s]."""
  return jnp.concatenate([state.deter, state.stoch], axis=-1)


class GRUCell(nn.Module):
  """PyTorch's `GRUCell` with the three gates fused into two matmuls (input and hidden), which XLA:CPU runs
  markedly faster than Flax's six per-gate Dense layers at RSSM sizes (same function: r, z, n gates, with the
  hidden bias of n inside the reset gate's product).
  """
  features: int

  @nn.compact
  def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
    gi = nn.Dense(3 * self.features, name="input")(x)
    gh = nn.Dense(3 * self.features, name="hidden")(h)
    i_r, i_z, i_n = jnp.split(gi, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r, z = nn.sigmoid(i_r + h_r), nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    return (1.0 - z) * n + z * h


class RSSM(nn.Module):
  """The cell; use it through `observe` / `imagine` or the single-step methods."""
  deter: int = 512
  stoch: int = 128
  hidden: int = 128
  layers: int = 2
  activation: Callable[[jax.Array], jax.Array] = nn.elu
  layer_norm: bool = False
  min_std: float = 1e-6

  def setup(self):
    def mlp(name):
      return MLP(hidden=(self.hidden,) * self.layers, out=self.stoch, activation=self.activation,
                 layer_norm=self.layer_norm, name=name)
    self.cell = GRUCell(features=self.deter, name="gru")
    self.prior_mean, self.prior_std = mlp("prior_mean"), mlp("prior_std")
    self.post_mean, self.post_std = mlp("posterior_mean"), mlp("posterior_std")

  def initial(self, batch_shape: tuple[int, ...]) -> RSSMState:
    """s_0 = h_0 = 0 (Algorithm 1)."""
    return RSSMState(jnp.zeros((*batch_shape, self.deter)), jnp.zeros((*batch_shape, self.stoch)))

  def recur(self, state: RSSMState, action: jax.Array) -> jax.Array:
    return self.cell(state.deter, jnp.concatenate([state.stoch, action], axis=-1))

  def prior(self, deter: jax.Array) -> Normal:
    return Normal(self.prior_mean(deter), nn.softplus(self.prior_std(deter)) + self.min_std)

  def posterior(self, deter: jax.Array, embed: jax.Array) -> Normal:
    x = jnp.concatenate([deter, embed], axis=-1)
    return Normal(self.post_mean(x), nn.softplus(self.post_std(x)) + self.min_std)

  def obs_step(self, state: RSSMState, action: jax.Array, embed: jax.Array, rng: jax.Array
               ) -> tuple[RSSMState, Normal, Normal]:
    """One filtering step: (posterior state, posterior, prior)."""
    h = self.recur(state, action)
    prior, post = self.prior(h), self.posterior(h, embed)
    return RSSMState(h, post.sample(rng)), post, prior

  def filter_step(self, state: RSSMState, action: jax.Array, embed: jax.Array, rng: jax.Array
                  ) -> tuple[RSSMState, Normal]:
    """`obs_step` without the prior, which the state does not depend on (`observe` computes all priors at once)."""
    h = self.recur(state, action)
    post = self.posterior(h, embed)
    return RSSMState(h, post.sample(rng)), post

  def img_step(self, state: RSSMState, action: jax.Array, rng: jax.Array) -> tuple[RSSMState, Normal]:
    """One open-loop step from the prior."""
    h = self.recur(state, action)
    prior = self.prior(h)
    return RSSMState(h, prior.sample(rng)), prior

  def __call__(self, state: RSSMState, action: jax.Array, embed: jax.Array, rng: jax.Array):
    """Used by `init` only: touches every parameter."""
    return self.obs_step(state, action, embed, rng)


class Filtered(NamedTuple):
  """What `observe` returns, all time-major (T, B, ...)."""
  states: RSSMState
  posterior: Normal
  prior: Normal
  actions: jax.Array
  extras: dict


ActFn = Callable[[RSSMState, jax.Array, jax.Array], tuple[jax.Array, dict]]


def observe(model: RSSM, params, embeds: jax.Array, rng: jax.Array, actions: jax.Array | None = None,
            act: ActFn | None = None, initial: RSSMState | None = None) -> Filtered:
  """Filters a sequence: for t = 0..T-1, a_{t-1} -> h_t -> s_t ~ q(s_t | h_t, e_t) (Algorithm 1's inner loop).

  Args:
    embeds: (T, B, E) encoder outputs e_t = f(o_t).
    actions: (T, B, A) the action *preceding* each frame (AIME's `pre_action`), or None when `act` is given.
    act: `act(state_{t-1}, embed_t, rng) -> (a_{t-1}, extras)`, e.g. a policy pi(a | s_{t-1}) (phase 2).
    initial: the state before the first frame; zeros by default.
  """
  if (actions is None) == (act is None):
    raise ValueError("observe needs exactly one of `actions` and `act`")
  T, B = embeds.shape[:2]
  state = initial if initial is not None else model.apply(params, (B,), method=RSSM.initial)
  step_rngs = jax.random.split(rng, T)

  def body(state, inputs):
    embed, action, r = inputs
    r_act, r_step = jax.random.split(r)
    extras = {}
    if act is not None:
      action, extras = act(state, embed, r_act)
    new, post = model.apply(params, state, action, embed, r_step, method=RSSM.filter_step)
    return new, (new, post, action, extras)

  xs_actions = actions if actions is not None else jnp.zeros((T, B, 0), embeds.dtype)
  _, (states, post, acts, extras) = jax.lax.scan(body, state, (embeds, xs_actions, step_rngs))
  # The priors p(s_t | h_t) only enter the KL: one batched pass over all T steps instead of T small ones.
  prior = model.apply(params, states.deter, method=RSSM.prior)
  return Filtered(states, post, prior, acts, extras)


def imagine(model: RSSM, params, initial: RSSMState, actions: jax.Array, rng: jax.Array
            ) -> tuple[RSSMState, Normal]:
  """Open-loop prior rollout for (T, B, A) actions from `initial`; returns time-major states and priors."""
  def body(state, inputs):
    action, r = inputs
    new, prior = model.apply(params, state, action, r, method=RSSM.img_step)
    return new, (new, prior)

  _, (states, priors) = jax.lax.scan(body, initial, (actions, jax.random.split(rng, actions.shape[0])))
  return states, priors
