"""Recurrent state-space model (RSSM; Hafner et al. 2019, PlaNet/Dreamer), Gaussian or categorical.

The Gaussian cell follows AIME's official `RSSM` (paper App. B): a GRU deterministic state h, updated from the previous
stochastic state and action, and Gaussian prior p(s_t | h_t) / posterior q(s_t | h_t, e_t), each mean and std an
MLP (2 x 128 ELU by default; std = softplus + min_std):

  h_t = GRU(h_{t-1}, [s_{t-1}, a_{t-1}])
  prior     p(s_t | h_t)         = N(mu_p(h_t), sigma_p(h_t))
  posterior q(s_t | h_t, e_t)    = N(mu_q([h_t, e_t]), sigma_q([h_t, e_t]))

The time loop is a `lax.scan` in `observe` (filtering; the priors, which the recurrence does not need, are computed
after it in one batched pass; `is_first` resets the state inside the scan) and `imagine` (prior rollout, open loop
from given actions or closed loop with a policy called inside the scan). Arrays are time-major inside (T, B, ...).
`observe` takes either the dataset's actions (AIME phase 1) or an `act` function that chooses a_{t-1} from the
state (AIME phase 2: the policy; App. C: an inverse model), so both phases share one loop. The stochastic state is
Gaussian (AIME) or categorical (DreamerV2's 32 x 32 one-hot variables, straight-through; APV); APV's action-free
model is the same cell with actions of width 0.

DreamerV2's cell (its `EnsembleRSSM` with ensemble 1, as APV's `common/nets.py`) is three switches away from
AIME's: `img_in` (a Dense + activation on [s_{t-1}, a_{t-1}] before the GRU), `gru="layernorm"` (its `GRUCell`
with `norm=True`: one bias-free Dense over [x, h], LayerNorm, the update gate's bias -1) and `action_pad` (the
action zero-padded to a fixed width, 50 in APV: `fill_action_with_zero`, so an action-free and an action-conditional
model have parameters of the same shapes, and a pre-trained model's action rows can be re-initialised in place).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrl_jax.distributions import Latent, Normal, OneHotCategorical
from vidrl_jax.errors import VidrlError
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


class LayerNormGRUCell(nn.Module):
  """DreamerV2's `GRUCell(norm=True)`: [r, c, u] = LayerNorm(W [x, h]) (no bias), r = sigmoid(r),
  c = tanh(r * c), u = sigmoid(u - 1), h' = u * c + (1 - u) * h (Keras' LayerNorm epsilon 1e-3)."""
  features: int

  @nn.compact
  def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
    parts = nn.Dense(3 * self.features, use_bias=False, name="dense")(jnp.concatenate([x, h], axis=-1))
    parts = nn.LayerNorm(epsilon=1e-3, name="norm")(parts)
    reset, cand, update = jnp.split(parts, 3, axis=-1)
    cand = jnp.tanh(nn.sigmoid(reset) * cand)
    update = nn.sigmoid(update - 1.0)
    return update * cand + (1.0 - update) * h


class RSSM(nn.Module):
  """The cell; use it through `observe` / `imagine` or the single-step methods.

  `latent`: "gaussian" (AIME: mean and std MLPs, `stoch` dimensions) or "categorical" (DreamerV2, APV: one logits
  MLP, `stoch` variables of `classes` classes, straight-through one-hot samples; the state holds them flat,
  stoch * classes wide). `initial`: "zeros" (Algorithm 1's s_0 = h_0 = 0) or "learned" (h_0 = tanh(w), s_0 the
  prior's mode at h_0: DreamerV3's). An action width of 0 is the action-free model (APV's pre-training).
  `img_in`, `gru` ("torch": AIME's; "layernorm": DreamerV2's) and `action_pad` (0: none) as in the module docstring.
  """
  deter: int = 512
  stoch: int = 128
  hidden: int = 128
  layers: int = 2
  activation: Callable[[jax.Array], jax.Array] = nn.elu
  layer_norm: bool = False
  min_std: float = 1e-6
  latent: str = "gaussian"
  classes: int = 32
  initial: str = "zeros"
  img_in: bool = False
  gru: str = "torch"
  action_pad: int = 0

  def setup(self):
    if (self.latent not in ("gaussian", "categorical") or self.initial not in ("zeros", "learned")
        or self.gru not in ("torch", "layernorm")):
      raise VidrlError(f"RSSM latent {self.latent!r} / initial {self.initial!r} / gru {self.gru!r}: pick latent "
                       "'gaussian' or 'categorical', initial 'zeros' or 'learned', gru 'torch' or 'layernorm'")

    def mlp(name, out):
      return MLP(hidden=(self.hidden,) * self.layers, out=out, activation=self.activation,
                 layer_norm=self.layer_norm, name=name)
    self.cell = (GRUCell if self.gru == "torch" else LayerNormGRUCell)(features=self.deter, name="gru")
    if self.img_in:
      self.img_in_layer = nn.Dense(self.hidden, name="img_in")
    if self.latent == "gaussian":
      self.prior_mean, self.prior_std = mlp("prior_mean", self.stoch), mlp("prior_std", self.stoch)
      self.post_mean, self.post_std = mlp("posterior_mean", self.stoch), mlp("posterior_std", self.stoch)
    else:
      self.prior_logits = mlp("prior_logits", self.stoch * self.classes)
      self.post_logits = mlp("posterior_logits", self.stoch * self.classes)
    if self.initial == "learned":
      self.initial_deter = self.param("initial_deter", nn.initializers.zeros, (self.deter,))

  @property
  def stoch_dim(self) -> int:
    """The width of the state's stochastic part (categorical: the flat one-hot samples)."""
    return self.stoch * (self.classes if self.latent == "categorical" else 1)

  def initial_state(self, batch_shape: tuple[int, ...]) -> RSSMState:
    """The state before a sequence's first frame: zeros (Algorithm 1), or learned."""
    if self.initial == "zeros":
      return RSSMState(jnp.zeros((*batch_shape, self.deter)), jnp.zeros((*batch_shape, self.stoch_dim)))
    h = jnp.broadcast_to(jnp.tanh(self.initial_deter), (*batch_shape, self.deter))
    return RSSMState(h, self.sample(self.prior(h), None))

  def reset(self, state: RSSMState, action: jax.Array, is_first: jax.Array) -> tuple[RSSMState, jax.Array]:
    """Where `is_first` (batch shape), the initial state and a zero previous action (an episode's first frame)."""
    init = self.initial_state(is_first.shape)
    pick = lambda new, old: jnp.where(is_first[..., None], new, old)
    return jax.tree.map(pick, init, state), pick(jnp.zeros_like(action), action)

  def recur(self, state: RSSMState, action: jax.Array) -> jax.Array:
    if self.action_pad:
      if action.shape[-1] > self.action_pad:
        raise VidrlError(f"the action has {action.shape[-1]} dimensions but the RSSM pads actions to "
                         f"action_pad={self.action_pad}; raise action_pad in the model config")
      action = jnp.pad(action, [(0, 0)] * (action.ndim - 1) + [(0, self.action_pad - action.shape[-1])])
    x = jnp.concatenate([state.stoch, action], axis=-1)
    if self.img_in:
      x = self.activation(self.img_in_layer(x))
    return self.cell(state.deter, x)

  def prior(self, deter: jax.Array) -> Latent:
    if self.latent == "categorical":
      return OneHotCategorical.from_flat(self.prior_logits(deter), self.classes)
    return Normal(self.prior_mean(deter), nn.softplus(self.prior_std(deter)) + self.min_std)

  def posterior(self, deter: jax.Array, embed: jax.Array) -> Latent:
    x = jnp.concatenate([deter, embed], axis=-1)
    if self.latent == "categorical":
      return OneHotCategorical.from_flat(self.post_logits(x), self.classes)
    return Normal(self.post_mean(x), nn.softplus(self.post_std(x)) + self.min_std)

  def sample(self, dist: Latent, rng: jax.Array | None) -> jax.Array:
    """A state's stochastic part from `dist` (flat); rng None: the mode (Gaussian: the mean)."""
    if isinstance(dist, Normal):
      return dist.mean if rng is None else dist.sample(rng)
    x = dist.mode() if rng is None else dist.sample(rng)
    return x.reshape(*x.shape[:-2], -1)

  def obs_step(self, state: RSSMState, action: jax.Array, embed: jax.Array, rng: jax.Array,
               is_first: jax.Array | None = None) -> tuple[RSSMState, Latent, Latent]:
    """One filtering step: (posterior state, posterior, prior); `is_first` resets the state first."""
    if is_first is not None:
      state, action = self.reset(state, action, is_first)
    h = self.recur(state, action)
    prior, post = self.prior(h), self.posterior(h, embed)
    return RSSMState(h, self.sample(post, rng)), post, prior

  def filter_step(self, state: RSSMState, action: jax.Array, embed: jax.Array, rng: jax.Array,
                  is_first: jax.Array | None = None) -> tuple[RSSMState, Latent]:
    """`obs_step` without the prior, which the state does not depend on (`observe` computes all priors at once)."""
    if is_first is not None:
      state, action = self.reset(state, action, is_first)
    h = self.recur(state, action)
    post = self.posterior(h, embed)
    return RSSMState(h, self.sample(post, rng)), post

  def img_step(self, state: RSSMState, action: jax.Array, rng: jax.Array) -> tuple[RSSMState, Latent]:
    """One open-loop step from the prior."""
    h = self.recur(state, action)
    prior = self.prior(h)
    return RSSMState(h, self.sample(prior, rng)), prior

  def __call__(self, state: RSSMState, action: jax.Array, embed: jax.Array, rng: jax.Array):
    """Used by `init` only: touches every parameter."""
    if self.initial == "learned":
      state, action = self.reset(state, action, jnp.ones(state.deter.shape[:-1], bool))
    return self.obs_step(state, action, embed, rng)


def action_rows(model: RSSM, action_dim: int) -> tuple[tuple[str, ...], slice]:
  """Where the previous action enters the cell: (the path of the kernel that reads [s_{t-1}, a_{t-1}] in the
  params' "params" tree, the slice of its rows that multiply the action). APV's naive fine-tuning re-initialises
  these rows of a model pre-trained with zero actions (paper App. E)."""
  width = model.action_pad or action_dim
  rows = slice(model.stoch_dim, model.stoch_dim + width)
  if model.img_in:
    return ("img_in", "kernel"), rows
  return (("gru", "input", "kernel") if model.gru == "torch" else ("gru", "dense", "kernel")), rows


class Filtered(NamedTuple):
  """What `observe` returns, all time-major (T, B, ...)."""
  states: RSSMState
  posterior: Latent
  prior: Latent
  actions: jax.Array
  extras: dict


ActFn = Callable[[RSSMState, jax.Array, jax.Array], tuple[jax.Array, dict]]


def zeros_state(model: RSSM, batch_shape: tuple[int, ...]) -> RSSMState:
  """An all-zero state (any `initial`; no parameters needed), e.g. the input of `init`."""
  return RSSMState(jnp.zeros((*batch_shape, model.deter)), jnp.zeros((*batch_shape, model.stoch_dim)))


def observe(model: RSSM, params, embeds: jax.Array, rng: jax.Array, actions: jax.Array | None = None,
            act: ActFn | None = None, initial: RSSMState | None = None,
            is_first: jax.Array | None = None) -> Filtered:
  """Filters a sequence: for t = 0..T-1, a_{t-1} -> h_t -> s_t ~ q(s_t | h_t, e_t) (Algorithm 1's inner loop).

  Args:
    embeds: (T, B, E) encoder outputs e_t = f(o_t).
    actions: (T, B, A) the action *preceding* each frame (AIME's `pre_action`; A = 0: action-free), or None when
      `act` is given.
    act: `act(state_{t-1}, embed_t, rng) -> (a_{t-1}, extras)`, e.g. a policy pi(a | s_{t-1}) (phase 2).
    initial: the state before the first frame; the model's initial state by default.
    is_first: (T, B) bool, True on an episode's first frame: the state is reset to the initial one and the
      previous action to zero there (before `act` is asked), so one window may span several episodes.
  """
  if (actions is None) == (act is None):
    raise ValueError("observe needs exactly one of `actions` and `act`")
  T, B = embeds.shape[:2]
  state = initial if initial is not None else model.apply(params, (B,), method=RSSM.initial_state)
  step_rngs = jax.random.split(rng, T)
  resets = jnp.zeros((T, B), bool) if is_first is None else is_first

  def body(state, inputs):
    embed, action, first, r = inputs
    r_act, r_step = jax.random.split(r)
    extras = {}
    if is_first is not None:
      state, action = model.apply(params, state, action, first, method=RSSM.reset)
    if act is not None:
      action, extras = act(state, embed, r_act)
    new, post = model.apply(params, state, action, embed, r_step, method=RSSM.filter_step)
    return new, (new, post, action, extras)

  xs_actions = actions if actions is not None else jnp.zeros((T, B, 0), embeds.dtype)
  _, (states, post, acts, extras) = jax.lax.scan(body, state, (embeds, xs_actions, resets, step_rngs))
  # The priors p(s_t | h_t) only enter the KL: one batched pass over all T steps instead of T small ones.
  prior = model.apply(params, states.deter, method=RSSM.prior)
  return Filtered(states, post, prior, acts, extras)


class Imagined(NamedTuple):
  """What `imagine` returns, time-major: the H states after `start`, their priors, the H actions that led there
  (a_t taken in state t - 1, `start` for t = 0) and the policy's extras per step."""
  states: RSSMState
  priors: Latent
  actions: jax.Array
  extras: dict


PolicyFn = Callable[[RSSMState, jax.Array], tuple[jax.Array, dict]]


def imagine(model: RSSM, params, start: RSSMState, rng: jax.Array, actions: jax.Array | None = None,
            policy: PolicyFn | None = None, horizon: int | None = None) -> Imagined:
  """Prior rollout from `start` (B, ...): open loop with (H, B, A) `actions`, or closed loop with
  `policy(state, rng) -> (action, extras)` called inside the scan for `horizon` steps (Dreamer's imagination: the
  policy's gradient flows through the states it visits)."""
  if (actions is None) == (policy is None) or (policy is not None and not horizon):
    raise ValueError("imagine needs either `actions`, or `policy` and a `horizon`")
  steps = actions.shape[0] if actions is not None else int(horizon)
  xs_actions = actions if actions is not None else jnp.zeros((steps, 0))

  def body(state, inputs):
    action, r = inputs
    r_act, r_step = jax.random.split(r)
    extras = {}
    if policy is not None:
      action, extras = policy(state, r_act)
    new, prior = model.apply(params, state, action, r_step, method=RSSM.img_step)
    return new, (new, prior, action, extras)

  _, (states, priors, acts, extras) = jax.lax.scan(body, start, (xs_actions, jax.random.split(rng, steps)))
  return Imagined(states, priors, acts, extras)
