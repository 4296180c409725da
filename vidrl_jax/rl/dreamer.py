"""DreamerV2's actor-critic in imagination (Hafner et al., ICLR 2021, Sec. 2.2-2.3; APV App. A), shared by APV and
its DreamerV2 baseline.

From start states (the world model's posteriors of a replay batch) the actor rolls the frozen world model forward
for `horizon` steps inside one `lax.scan` (`nets.rssm.imagine` with the policy called in the scan); the reward
and discount heads label the imagined states; the slow critic gives the lambda-returns (`rl.gae.lambda_returns`,
per-step discounts, Eq. 4 of DreamerV2):

  V^l_t = r_t + g_t ((1 - l) v(s_{t+1}) + l V^l_{t+1}),   V^l_H = v(s_H)

  actor   -E[ sum_t w_t (rho V^l_t + (1 - rho) ln pi(a_t|s_t) sg(V^l_t - v(s_t)) + eta H[pi(.|s_t)]) ]   (Eq. 6)
  critic   E[ sum_t w_t 1/2 (v_psi(s_t) - sg(V^l_t))^2 ]                                            (Eq. 5)

with w_t = prod_{k<t} g_k (the weight of an imagined state: the probability that the episode is still going),
rho = 1 ("dynamics": the gradient of the returns through the model, continuous actions) or 0 ("reinforce",
discrete actions), and the slow critic v a copy of the critic every `slow_target_update` updates
(`rl.target.periodic_update`). The critic's loss is the official Normal(mean, 1) negative log-likelihood without
its constant 0.5 log 2 pi. Arrays are time-major: (H + 1, B, ...) with the start state at index 0.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from vidrl_jax.distributions import OneHotCategorical, TruncNormal
from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.mlp import MLP
from vidrl_jax.nets.rssm import RSSM, RSSMState, features, imagine
from vidrl_jax.rl.gae import lambda_returns
from vidrl_jax.rl.target import periodic_update
from vidrl_jax.train.optim import make_optimizer, optim_config


def dreamer_config(**overrides) -> ml_collections.ConfigDict:
  """DreamerV2's actor-critic settings (its configs.yaml, DMC: continuous actions; Atari takes actor_ent 2e-3)."""
  c = ml_collections.ConfigDict(dict(
      horizon=15, lam=0.95,              # imag_horizon, discount_lambda (gamma is in the discounts given)
      actor_hidden=(400,) * 4, critic_hidden=(400,) * 4, min_std=0.1,
      actor_grad="auto",                 # auto: dynamics for continuous actions, reinforce for discrete; or "both"
      actor_grad_mix=0.1,                # rho for "both"
      actor_ent=1e-4,                    # eta
      slow_target_update=100, slow_target_fraction=1.0,
      actor_optim=optim_config(lr=8e-5, eps=1e-5, clip=100.0, weight_decay=1e-6),
      critic_optim=optim_config(lr=8e-5, eps=1e-5, clip=100.0, weight_decay=1e-6),
  ))
  c.update(overrides)
  return c


class Actor(nn.Module):
  """pi(a | s): a one-hot categorical over `num_actions` (discrete), or a truncated Gaussian on [-1, 1] with
  mean tanh(m) and std 2 sigmoid(s / 2) + min_std (DreamerV2's `trunc_normal`), from an ELU MLP."""
  action_dim: int
  discrete: bool
  hidden: tuple[int, ...]
  min_std: float = 0.1

  @nn.compact
  def __call__(self, feat: jax.Array):
    x = MLP(hidden=self.hidden, activation=nn.elu, name="torso")(feat)
    if self.discrete:
      return OneHotCategorical(nn.Dense(self.action_dim, name="logits")(x)[..., None, :])
    mean = jnp.tanh(nn.Dense(self.action_dim, name="mean")(x))
    std = 2.0 * nn.sigmoid(nn.Dense(self.action_dim, name="std")(x) / 2.0) + self.min_std
    return TruncNormal(mean, std)


def actor_sample(dist, rng: jax.Array) -> jax.Array:
  """An action as the environment takes it: (..., A), a one-hot vector for discrete actions."""
  a = dist.sample(rng)
  return a[..., 0, :] if isinstance(dist, OneHotCategorical) else a


def actor_mode(dist) -> jax.Array:
  a = dist.mode()
  return a[..., 0, :] if isinstance(dist, OneHotCategorical) else a


def _log_prob_and_entropy(dist, action: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Summed over the action's dimensions (one categorical variable, or the Gaussian's dimensions)."""
  if isinstance(dist, OneHotCategorical):
    return dist.log_prob(action[..., None, :])[..., 0], dist.entropy()[..., 0]
  return jnp.sum(dist.log_prob(action), -1), jnp.sum(dist.entropy(), -1)


class Critic(nn.Module):
  """v(s): the mean of DreamerV2's unit-variance Normal value head, from an ELU MLP."""
  hidden: tuple[int, ...]

  @nn.compact
  def __call__(self, feat: jax.Array) -> jax.Array:
    return MLP(hidden=self.hidden, out=1, activation=nn.elu, name="mlp")(feat)[..., 0]


class ActorCriticState(struct.PyTreeNode):
  actor: Any
  critic: Any
  slow_critic: Any
  actor_opt: Any
  critic_opt: Any
  step: jax.Array


class Imagination(NamedTuple):
  """An imagined batch, time-major (H + 1, B, ...): index 0 the start states (their action zero)."""
  feat: jax.Array
  action: jax.Array
  reward: jax.Array
  discount: jax.Array


# heads(states) -> (reward, discount), each (H + 1, B): the world model's reward head and gamma times its discount
# head (or gamma where there is none); the start's discount is gamma (1 - is_terminal), as in DreamerV2.
HeadsFn = Callable[[RSSMState], tuple[jax.Array, jax.Array]]


class ActorCritic:
  """The networks, optimisers and the one update; `init(rng)` and `update(state, rssm_params, start, heads, rng)`
  are pure (jit them, or call them inside a jitted world-model step)."""

  def __init__(self, rssm: RSSM, action_dim: int, discrete: bool, config: ml_collections.ConfigDict,
               num_updates: int):
    grad = config.actor_grad if config.actor_grad != "auto" else ("reinforce" if discrete else "dynamics")
    if grad not in ("dynamics", "reinforce", "both"):
      raise VidrlError(f"actor_grad {config.actor_grad!r}: use auto, dynamics, reinforce or both")
    if grad != "reinforce" and discrete:
      raise VidrlError("discrete actions have no gradient through the dynamics; use actor_grad 'reinforce'")
    self.rssm, self.action_dim, self.discrete, self.config, self.grad = rssm, action_dim, discrete, config, grad
    self.actor = Actor(action_dim, discrete, tuple(config.actor_hidden), config.min_std)
    self.critic = Critic(tuple(config.critic_hidden))
    self.actor_tx = make_optimizer(config.actor_optim, num_updates)
    self.critic_tx = make_optimizer(config.critic_optim, num_updates)

  def init(self, rng: jax.Array) -> ActorCriticState:
    feat = jnp.zeros((1, self.rssm.deter + self.rssm.stoch_dim))
    r_actor, r_critic = jax.random.split(rng)
    actor, critic = self.actor.init(r_actor, feat), self.critic.init(r_critic, feat)
    return ActorCriticState(actor=actor, critic=critic, slow_critic=critic, actor_opt=self.actor_tx.init(actor),
                            critic_opt=self.critic_tx.init(critic), step=jnp.zeros((), jnp.int32))

  def policy(self, actor_params) -> Callable[[RSSMState, jax.Array], tuple[jax.Array, dict]]:
    """The policy `imagine` calls: a sample from pi(a | sg(s)) (DreamerV2 stops the state's gradient into the
    actor's input; the action's own gradient still reaches the next states)."""
    def act(state: RSSMState, rng: jax.Array):
      return actor_sample(self.actor.apply(actor_params, jax.lax.stop_gradient(features(state))), rng), {}
    return act

  def imagine(self, actor_params, rssm_params, start: RSSMState, heads: HeadsFn, rng: jax.Array) -> Imagination:
    rolled = imagine(self.rssm, rssm_params, start, rng, policy=self.policy(actor_params),
                     horizon=int(self.config.horizon))
    states = jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s]), start, rolled.states)
    action = jnp.concatenate([jnp.zeros_like(rolled.actions[:1]), rolled.actions])
    reward, discount = heads(states)
    return Imagination(features(states), action, reward, discount)

  def losses(self, actor_params, critic_params, slow_params, seq: Imagination) -> tuple[dict, dict, jax.Array]:
    """(losses {'actor', 'critic'}, metrics, the lambda-returns (H, B)) of one imagined batch."""
    c = self.config
    value = self.critic.apply(slow_params, seq.feat)                                  # (H + 1, B)
    target = lambda_returns(seq.reward[:-1], value[:-1], seq.discount[:-1], value[-1], c.lam)   # (H, B)
    weight = jax.lax.stop_gradient(jnp.cumprod(jnp.concatenate([jnp.ones_like(seq.discount[:1]),
                                                                 seq.discount[:-1]]), axis=0))
    policy = self.actor.apply(actor_params, jax.lax.stop_gradient(seq.feat[:-2]))
    log_prob, entropy = _log_prob_and_entropy(policy, jax.lax.stop_gradient(seq.action[1:-1]))
    advantage = jax.lax.stop_gradient(target[1:] - value[:-2])
    mix = {"dynamics": 1.0, "reinforce": 0.0, "both": c.actor_grad_mix}[self.grad]
    objective = mix * target[1:] + (1.0 - mix) * log_prob * advantage + c.actor_ent * entropy
    actor_loss = -jnp.mean(weight[:-2] * objective)
    v = self.critic.apply(critic_params, jax.lax.stop_gradient(seq.feat[:-1]))
    critic_loss = jnp.mean(weight[:-1] * 0.5 * jnp.square(v - jax.lax.stop_gradient(target)))
    metrics = {"imag_return": jnp.mean(target[0]), "imag_reward": jnp.mean(seq.reward[1:]),
               "actor_entropy": jnp.mean(entropy), "critic_value": jnp.mean(v)}
    return {"actor": actor_loss, "critic": critic_loss}, metrics, target

  def update(self, state: ActorCriticState, rssm_params, start: RSSMState, heads: HeadsFn, rng: jax.Array
             ) -> tuple[ActorCriticState, dict]:
    """One actor and one critic step on an imagined batch from `start` (B, ...); the world model is not trained
    (its parameters are not differentiated), the slow critic follows every `slow_target_update` updates."""
    c = self.config

    def actor_objective(actor_params):
      seq = self.imagine(actor_params, rssm_params, start, heads, rng)
      losses, metrics, _ = self.losses(actor_params, state.critic, state.slow_critic, seq)
      return losses["actor"], (seq, metrics)

    (actor_loss, (seq, metrics)), actor_grads = jax.value_and_grad(actor_objective, has_aux=True)(state.actor)
    seq = jax.tree.map(jax.lax.stop_gradient, seq)
    critic_objective = lambda p: self.losses(state.actor, p, state.slow_critic, seq)[0]["critic"]
    critic_loss, critic_grads = jax.value_and_grad(critic_objective)(state.critic)
    a_updates, actor_opt = self.actor_tx.update(actor_grads, state.actor_opt, state.actor)
    c_updates, critic_opt = self.critic_tx.update(critic_grads, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, c_updates)
    # after the critic's step, from the updated critic (DreamerV2's update_slow_target; its reward normalisation
    # at the default momentum 1 is the identity, so there is none here)
    slow = periodic_update(state.slow_critic, critic, state.step, int(c.slow_target_update),
                           float(c.slow_target_fraction))
    new = state.replace(actor=optax.apply_updates(state.actor, a_updates), critic=critic, slow_critic=slow,
                        actor_opt=actor_opt, critic_opt=critic_opt, step=state.step + 1)
    return new, {"loss/actor": actor_loss, "loss/critic": critic_loss, **metrics}
