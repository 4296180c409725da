"""Soft actor-critic with automatic temperature (Haarnoja et al., 2018a, "SAC"; 2018b, "SAC algorithms and
applications"), shared by the methods that need an off-policy learner on continuous actions in [-1, 1] (AIME's
experts, RLV).

The pieces are pure functions on arrays so that a method can feed its own batches: `init(rng, obs_dim,
action_dim, config) -> SACState`, `update(state, batch, rng, config) -> (state, metrics)`, `update_burst` (K
updates in one `lax.scan`) and `act`. One update computes the three losses from the state it is given (critic with
the current actor and target critic, actor with the current critic, temperature with the actor's log-probability),
then applies the three Adam steps and the Polyak target update. The host-side training loop for environments
that cannot run inside `jit` is `vidrl_jax.rl.offpolicy.train_sac`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vidrl_jax.distributions import TanhNormal
from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.mlp import MLP

Params = Any
SAC_METRICS = ("critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_mean")
# The config fields the networks and updates read; the rest only steer the training loop.
LEARNER_KEYS = ("actor_hidden", "critic_hidden", "actor_lr", "critic_lr", "alpha_lr", "gamma", "tau",
                "init_temperature", "target_entropy", "log_std_min", "log_std_max")


def sac_config(**overrides) -> ml_collections.ConfigDict:
  """SAC settings: the usual defaults of Haarnoja et al. (2018b), as RLV uses them (Adam 3e-4, tau 5e-3,
  gamma .99, batch 256, 2x256 relu MLPs, 1,000 uniform random steps), the temperature starting at 0.1.

  `target_entropy=None` means `-action_dim`. Every `train_every` env steps the loop runs
  `round(train_every * updates_per_step)` updates in one jitted call, once `random_steps` env steps are done and
  the replay holds `batch_size` transitions. `num_episodes`, `checkpoint_every_episodes`, `eval_every_episodes`
  (0: never), `eval_episodes` and `replay_capacity` are for `vidrl_jax.rl.offpolicy.train_sac`.
  """
  c = ml_collections.ConfigDict(dict(
      actor_hidden=(256, 256), critic_hidden=(256, 256), actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4,
      gamma=0.99, tau=0.005, init_temperature=0.1, target_entropy=None, batch_size=256, random_steps=1000,
      train_every=50, updates_per_step=1.0, log_std_min=-5.0, log_std_max=2.0, replay_capacity=1_000_000,
      num_episodes=1000, checkpoint_every_episodes=5, eval_every_episodes=0, eval_episodes=5))
  c.update(overrides)
  return c


class Actor(nn.Module):
  """obs (..., D) -> (mean, log_std) (..., A) of the pre-tanh Gaussian; log_std is squashed into
  [log_std_min, log_std_max] with a rescaled tanh (smooth, unlike a clip)."""
  action_dim: int
  hidden: Sequence[int]
  log_std_min: float = -5.0
  log_std_max: float = 2.0

  @nn.compact
  def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    out = MLP(hidden=self.hidden, out=2 * self.action_dim, name="torso")(obs)
    mean, raw = jnp.split(out, 2, axis=-1)
    log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (jnp.tanh(raw) + 1.0)
    return mean, log_std


class TwinQ(nn.Module):
  """(obs (..., D), action (..., A)) -> Q (2, ...): two independent MLP critics vmapped over a leading axis
  (clipped double Q, Fujimoto et al. 2018); their params carry that axis of size 2."""
  hidden: Sequence[int]

  @nn.compact
  def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
    x = jnp.concatenate([obs, action], axis=-1)
    twin = nn.vmap(MLP, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None, out_axes=0,
                   axis_size=2)
    return twin(hidden=tuple(self.hidden), out=1, name="q")(x)[..., 0]


@flax.struct.dataclass
class SACState:
  """Everything one SAC update changes (a pytree; checkpointed whole)."""
  actor_params: Params
  critic_params: Params
  target_params: Params
  log_alpha: jax.Array
  actor_opt: optax.OptState
  critic_opt: optax.OptState
  alpha_opt: optax.OptState
  step: jax.Array  # updates done (int32)


def learner_config(config: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  """The `LEARNER_KEYS` of `config`, frozen (hashable): the static argument of the jitted functions, so runs
  that differ only in loop settings share their compilations."""
  return ml_collections.FrozenConfigDict({k: config[k] for k in LEARNER_KEYS})


def _optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, ...]:
  return optax.adam(config.actor_lr), optax.adam(config.critic_lr), optax.adam(config.alpha_lr)


def _actor_module(action_dim: int, hidden: Sequence[int], config: ml_collections.ConfigDict | None) -> Actor:
  config = sac_config() if config is None else config
  return Actor(action_dim=action_dim, hidden=tuple(hidden), log_std_min=float(config.log_std_min),
               log_std_max=float(config.log_std_max))


def _actor_from_params(actor_params: Params, config: ml_collections.ConfigDict | None) -> Actor:
  """The `Actor` whose params these are (widths read from the kernels' shapes)."""
  torso = actor_params["params"]["torso"]
  hidden = [torso[f"dense{i}"]["kernel"].shape[-1] for i in range(len(torso) - 1)]
  return _actor_module(torso["out"]["kernel"].shape[-1] // 2, hidden, config)


def target_entropy(config: ml_collections.ConfigDict, action_dim: int) -> float:
  """The entropy the temperature steers the policy to; `-action_dim` unless the config sets one."""
  return -float(action_dim) if config.target_entropy is None else float(config.target_entropy)


def init(rng: jax.Array, obs_dim: int, action_dim: int, config: ml_collections.ConfigDict) -> SACState:
  """Fresh actor, twin critic (the target a copy of it), log temperature log(init_temperature), Adam states."""
  if obs_dim < 1 or action_dim < 1:
    raise VidrlError(f"SAC needs obs_dim and action_dim >= 1, got {obs_dim} and {action_dim}")
  if config.init_temperature <= 0:
    raise VidrlError(f"init_temperature must be positive, got {config.init_temperature}")
  return _init_jit(rng, int(obs_dim), int(action_dim), learner_config(config))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init_jit(rng: jax.Array, obs_dim: int, action_dim: int, config: ml_collections.FrozenConfigDict) -> SACState:
  """`init` compiled once per (shapes, config): Linen's op-by-op init costs seconds of tiny compilations."""
  rng_actor, rng_critic = jax.random.split(rng)
  obs, action = jnp.zeros((1, obs_dim), jnp.float32), jnp.zeros((1, action_dim), jnp.float32)
  actor_params = _actor_module(action_dim, config.actor_hidden, config).init(rng_actor, obs)
  critic_params = TwinQ(tuple(config.critic_hidden)).init(rng_critic, obs, action)
  log_alpha = jnp.asarray(math.log(config.init_temperature), jnp.float32)
  actor_tx, critic_tx, alpha_tx = _optimizers(config)
  return SACState(actor_params=actor_params, critic_params=critic_params,
                  target_params=jax.tree.map(jnp.copy, critic_params), log_alpha=log_alpha,
                  actor_opt=actor_tx.init(actor_params), critic_opt=critic_tx.init(critic_params),
                  alpha_opt=alpha_tx.init(log_alpha), step=jnp.zeros((), jnp.int32))


def tanh_gaussian_log_prob(pre_tanh: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
  """log pi(tanh(u)) summed over the last axis (Haarnoja et al. 2018a, App. C, Eq. 21):
  sum_i log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2), with the stable form
  log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) (the shared `distributions.TanhNormal`)."""
  return TanhNormal(mean, jnp.exp(log_std)).log_prob_pre_tanh(pre_tanh)


def sample_action(rng: jax.Array, mean: jax.Array, log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Reparameterised tanh-Gaussian sample a = tanh(mean + std * eps) and its log-probability."""
  u = mean + jnp.exp(log_std) * jax.random.normal(rng, mean.shape, mean.dtype)
  return jnp.tanh(u), tanh_gaussian_log_prob(u, mean, log_std)


def act(actor_params: Params, obs: jax.Array, rng: jax.Array, deterministic: bool = False,
        config: ml_collections.ConfigDict | None = None) -> jax.Array:
  """Action in [-1, 1] for obs (..., D): tanh(mean) when `deterministic`, else a sample.

  The network's widths come from the params; `config` gives the log-std bounds of a stochastic action
  (default: `sac_config()`'s, the same bounds unless a run changed them).
  """
  mean, log_std = _actor_from_params(actor_params, config).apply(actor_params, obs)
  if deterministic:
    return jnp.tanh(mean)
  return sample_action(rng, mean, log_std)[0]


def critic_target(reward: jax.Array, discount: jax.Array, next_q: jax.Array, next_log_prob: jax.Array,
                  alpha: jax.Array, gamma: float) -> jax.Array:
  """Soft Bellman target y = r + gamma * discount * (min_i Qbar_i(s', a') - alpha log pi(a'|s')), a' ~ pi(s')
  (Haarnoja et al. 2018b, Sec. 4.2, with the clipped double Q of Sec. 6). next_q: (2, B) target-critic values."""
  soft_value = jnp.min(next_q, axis=0) - alpha * next_log_prob
  return reward + gamma * discount * soft_value


def critic_loss(q: jax.Array, target: jax.Array) -> jax.Array:
  """J_Q: the squared soft Bellman residual, mean over the batch, summed over the twin critics q (2, B)."""
  return jnp.sum(jnp.mean(jnp.square(q - target[None]), axis=-1))


def actor_loss(q: jax.Array, log_prob: jax.Array, alpha: jax.Array) -> jax.Array:
  """J_pi = E[alpha log pi(a|s) - min_i Q_i(s, a)], a ~ pi(s) reparameterised (Haarnoja et al. 2018b, Sec. 4.2)."""
  return jnp.mean(alpha * log_prob - jnp.min(q, axis=0))


def alpha_loss(log_alpha: jax.Array, log_prob: jax.Array, entropy_target: float) -> jax.Array:
  """J(alpha) = E[-log_alpha (log pi(a|s) + target_entropy)] (Haarnoja et al. 2018b, Sec. 5), in log alpha."""
  return -jnp.mean(log_alpha * (jax.lax.stop_gradient(log_prob) + entropy_target))


def polyak(target: Params, online: Params, tau: float) -> Params:
  """target <- tau * online + (1 - tau) * target."""
  return jax.tree.map(lambda t, o: tau * o + (1.0 - tau) * t, target, online)


def update(state: SACState, batch: dict, rng: jax.Array,
           config: ml_collections.ConfigDict) -> tuple[SACState, dict]:
  """One SAC update on batch = obs (B, D), action (B, A), reward (B,), next_obs (B, D), discount (B,) (1 - terminal,
  without gamma). Returns the new state and the metrics in `SAC_METRICS` (losses before this step).

  `rng` splits into the keys of a' ~ pi(s') (critic target) and a ~ pi(s) (actor and temperature losses)."""
  action_dim = batch["action"].shape[-1]
  actor = _actor_module(action_dim, config.actor_hidden, config)
  critic = TwinQ(tuple(config.critic_hidden))
  actor_tx, critic_tx, alpha_tx = _optimizers(config)
  alpha = jnp.exp(state.log_alpha)
  rng_next, rng_pi = jax.random.split(rng)

  next_mean, next_log_std = actor.apply(state.actor_params, batch["next_obs"])
  next_action, next_log_prob = sample_action(rng_next, next_mean, next_log_std)
  next_q = critic.apply(state.target_params, batch["next_obs"], next_action)
  target = jax.lax.stop_gradient(critic_target(batch["reward"], batch["discount"], next_q, next_log_prob, alpha,
                                               config.gamma))

  def critic_fn(params):
    q = critic.apply(params, batch["obs"], batch["action"])
    return critic_loss(q, target), q

  def actor_fn(params):
    mean, log_std = actor.apply(params, batch["obs"])
    action, log_prob = sample_action(rng_pi, mean, log_std)
    q = critic.apply(state.critic_params, batch["obs"], action)
    return actor_loss(q, log_prob, alpha), log_prob

  (c_loss, q), c_grads = jax.value_and_grad(critic_fn, has_aux=True)(state.critic_params)
  (a_loss, log_prob), a_grads = jax.value_and_grad(actor_fn, has_aux=True)(state.actor_params)
  t_loss, t_grad = jax.value_and_grad(alpha_loss)(state.log_alpha, log_prob, target_entropy(config, action_dim))

  c_updates, critic_opt = critic_tx.update(c_grads, state.critic_opt, state.critic_params)
  critic_params = optax.apply_updates(state.critic_params, c_updates)
  a_updates, actor_opt = actor_tx.update(a_grads, state.actor_opt, state.actor_params)
  actor_params = optax.apply_updates(state.actor_params, a_updates)
  t_update, alpha_opt = alpha_tx.update(t_grad, state.alpha_opt, state.log_alpha)
  log_alpha = optax.apply_updates(state.log_alpha, t_update)

  new_state = SACState(actor_params=actor_params, critic_params=critic_params,
                       target_params=polyak(state.target_params, critic_params, config.tau), log_alpha=log_alpha,
                       actor_opt=actor_opt, critic_opt=critic_opt, alpha_opt=alpha_opt, step=state.step + 1)
  metrics = dict(critic_loss=c_loss, actor_loss=a_loss, alpha_loss=t_loss, alpha=alpha,
                 entropy=-jnp.mean(log_prob), q_mean=jnp.mean(q))
  return new_state, metrics


def update_burst(state: SACState, batches: dict, rng: jax.Array,
                 config: ml_collections.ConfigDict) -> tuple[SACState, dict]:
  """K updates over stacked batches (K, B, ...) in one `lax.scan`; update n (counted by `state.step`) uses
  `fold_in(rng, n)`, so the stream continues exactly across bursts and resumptions. Metrics are (K,)."""
  def body(s, batch):
    return update(s, batch, jax.random.fold_in(rng, s.step), config)
  return jax.lax.scan(body, state, batches)


def make_update_burst(config: ml_collections.ConfigDict):
  """`jit(update_burst)` bound to `config`, donating the state: `(state, batches, rng) -> (state, metrics)`.

  The learner fields of the config are a static argument (`learner_config`): equal ones share one compilation.
  """
  return functools.partial(_update_burst_jit, config=learner_config(config))


_update_burst_jit = jax.jit(update_burst, static_argnames="config", donate_argnums=0)
