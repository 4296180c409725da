"""Soft actor-critic with automatic temperature (Haarnoja et al., 2018a, "SAC"; 2018b, "SAC algorithms and
applications"), shared by the methods that need an off-policy learner on continuous actions in [-1, 1] (AIME's
experts, RLV), on vector or pixel observations.

The pieces are pure functions on arrays so that a method can feed its own batches: `init(rng, obs_spec,
action_dim, config, aux=None) -> SACState`, `update(state, batch, rng, config, aux=None) -> (state, metrics)`,
`update_burst` (K updates in one `lax.scan`) and `act(params, obs, rng, deterministic, config, action_dim)` with
`params = policy_params(state)`. The networks come from the config alone (`actor_module`, `critic_module`,
`encoder_module`); `learner_config` is its hashable part, the static argument of the jitted functions.

Observations. `obs_spec` an int D: vectors (B, D) straight into the MLPs (no encoder). `obs_spec` a dict
{key: (shape, dtype)}: dict observations through ONE shared `nets.encoder.ObsEncoder` (the `image_key` image, uint8,
through RLV's conv net; the other keys appended as vectors) whose features feed the actor, the twin critic and any
auxiliary head. Images are augmented by `augment.random_crop` (replicate-pad `augment_pad`, random crop; obs and
next_obs independently) after the relabel step and before the losses. Which losses train the encoder (as SAC-AE
and DrQ): the critic loss plus the auxiliary losses; the actor and the temperature see stop-gradient features; the
critic target uses a Polyak-averaged target encoder (rate `tau`, as the target critic). The encoder has its own
Adam at `critic_lr` (the same maths as sharing the critic's Adam, which is per-parameter).

Auxiliary losses (`Aux`, RLV's inverse model and domain discriminator): their params live in the state with their
own optimiser; `aux.loss(aux_params, encode, batch, rng)` returns named per-sample terms and metrics, and their
`weighted_sum` with `aux.weights` is added to the critic loss, so their gradients reach the encoder (and their
own params); with all weights 0 the update is plain SAC's. `aux.relabel(aux_params, encode, batch, rng) -> batch`
(optional) runs first with the stop-gradient encoder: it may read extra batch keys (an action-free half) and must
return the SAC batch (`obs`, `action`, `reward`, `next_obs`, `discount`), extra keys allowed.

One update computes every loss from the state it is given (critic with the current actor and target critic,
actor with the current critic, temperature with the actor's log-probability), then applies the Adam steps and the
Polyak target updates (`rl.target.polyak`, the project's one).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vidrl_jax.augment import random_crop
from vidrl_jax.errors import VidrlError
from vidrl_jax.losses import weighted_sum
from vidrl_jax.nets.encoder import ObsEncoder
from vidrl_jax.nets.heads import TanhGaussianPolicy
from vidrl_jax.nets.mlp import MLP
from vidrl_jax.rl.target import polyak

Params = Any
Encode = Callable[[Any], jax.Array]
SAC_METRICS = ("critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_mean")
# The config fields the networks and updates read; the rest only steer the training loop.
LEARNER_KEYS = ("actor_hidden", "critic_hidden", "actor_lr", "critic_lr", "alpha_lr", "gamma", "tau",
                "init_temperature", "target_entropy", "log_std_min", "log_std_max", "encoder_filters",
                "encoder_kernel", "image_key", "augment_pad", "state_encoder_hidden")


def sac_config(**overrides) -> ml_collections.ConfigDict:
  """SAC settings: the usual defaults of Haarnoja et al. (2018b), as RLV uses them (Adam 3e-4, tau 5e-3,
  gamma .99, batch 256, 2x256 relu MLPs, 1,000 uniform random steps), the temperature starting at 0.1.

  `target_entropy=None` means `-action_dim`. Dict observations only: `encoder_filters`/`encoder_kernel` (RLV's
  conv net: 16/16/32 filters of 5x5, each with a 2x2 max-pool), `image_key`, `augment_pad` (pad-and-crop
  augmentation, 0: none). Vector observations only: `state_encoder_hidden` (default (): none, the vector itself
  is the feature) puts a relu MLP with these widths between the vector and the actor/critic, a shared encoder
  trained as the pixel one is (by the critic and the auxiliary losses; RLV's state-based domain shift needs it for
  the adversarial term to reach what SAC sees). Every `train_every` env steps the loop runs `round(train_every * updates_per_step)`
  updates in one jitted call, once `random_steps` env steps are done and the replay holds `batch_size`
  transitions. `num_episodes`, `checkpoint_every_episodes`, `eval_every_episodes` (0: never), `eval_episodes` and
  `replay_capacity` are for `vidrl_jax.rl.offpolicy.sac_task` (SAC as an online stage of the shared loop).
  """
  c = ml_collections.ConfigDict(dict(
      actor_hidden=(256, 256), critic_hidden=(256, 256), actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4,
      gamma=0.99, tau=0.005, init_temperature=0.1, target_entropy=None, batch_size=256, random_steps=1000,
      train_every=50, updates_per_step=1.0, log_std_min=-5.0, log_std_max=2.0, encoder_filters=(16, 16, 32),
      encoder_kernel=5, image_key="image", augment_pad=4, state_encoder_hidden=(), replay_capacity=1_000_000, num_episodes=1000,
      checkpoint_every_episodes=5, eval_every_episodes=0, eval_episodes=5))
  c.update(overrides)
  return c


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


@dataclasses.dataclass(frozen=True, eq=False)
class Aux:
  """Auxiliary losses that train the encoder (hashable by identity: a static argument of the jitted update).

  init(rng, features (1, F), action_dim) -> params; loss(params, encode, batch, rng) -> (terms, metrics), terms
  named as `weights` (per-sample arrays or scalars, averaged by `weighted_sum`); relabel(params, encode, batch,
  rng) -> batch, or None. `encode(obs) -> features` is the shared encoder (identity for vector observations):
  differentiable in `loss`, stop-gradient in `relabel`.
  """
  init: Callable[[jax.Array, jax.Array, int], Params]
  loss: Callable[[Params, Encode, dict, jax.Array], tuple[dict, dict]]
  weights: Mapping[str, float]
  optimizer: optax.GradientTransformation
  relabel: Callable[[Params, Encode, dict, jax.Array], dict] | None = None


@flax.struct.dataclass
class SACState:
  """Everything one SAC update changes (a pytree; checkpointed whole). The encoder fields are None for vector
  observations, the aux fields None without auxiliary losses."""
  actor_params: Params
  critic_params: Params
  target_params: Params
  log_alpha: jax.Array
  actor_opt: optax.OptState
  critic_opt: optax.OptState
  alpha_opt: optax.OptState
  step: jax.Array  # updates done (int32)
  encoder_params: Params = None
  target_encoder_params: Params = None
  encoder_opt: optax.OptState = None
  aux_params: Params = None
  aux_opt: optax.OptState = None


def learner_config(config: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  """The `LEARNER_KEYS` of `config`, frozen (hashable): the static argument of the jitted functions, so runs
  that differ only in loop settings share their compilations."""
  missing = [k for k in LEARNER_KEYS if k not in config]
  if missing:
    raise VidrlError(f"the SAC config lacks {missing}; build it with vidrl_jax.rl.sac.sac_config(...)")
  return ml_collections.FrozenConfigDict({k: config[k] for k in LEARNER_KEYS})


def _optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, ...]:
  return optax.adam(config.actor_lr), optax.adam(config.critic_lr), optax.adam(config.alpha_lr)


def actor_module(config: ml_collections.ConfigDict, action_dim: int) -> TanhGaussianPolicy:
  """SAC's actor: one relu MLP torso giving the mean and the raw log std, squashed into [log_std_min,
  log_std_max] by a rescaled tanh."""
  return TanhGaussianPolicy(int(action_dim), tuple(config.actor_hidden), nn.relu, torso="shared",
                            std="tanh_log_std", log_std_min=float(config.log_std_min),
                            log_std_max=float(config.log_std_max))


def critic_module(config: ml_collections.ConfigDict) -> TwinQ:
  return TwinQ(tuple(config.critic_hidden))


def encoder_module(config: ml_collections.ConfigDict, vector: bool = False) -> nn.Module:
  """The shared encoder: `ObsEncoder` for dict observations; for vectors the `state_encoder_hidden` MLP."""
  if vector:
    hidden = tuple(config.state_encoder_hidden)
    return MLP(hidden=hidden[:-1], out=hidden[-1])
  return ObsEncoder(tuple(config.encoder_filters), int(config.encoder_kernel), str(config.image_key))


def target_entropy(config: ml_collections.ConfigDict, action_dim: int) -> float:
  """The entropy the temperature steers the policy to; `-action_dim` unless the config sets one."""
  return -float(action_dim) if config.target_entropy is None else float(config.target_entropy)


def _spec_key(obs_spec: int | Mapping) -> int | tuple:
  """A hashable form of `obs_spec`: D, or ((key, shape, dtype name), ...) sorted by key."""
  if isinstance(obs_spec, Mapping):
    if not obs_spec:
      raise VidrlError("SAC got an empty observation spec; pass {key: (shape, dtype)} or the vector width")
    return tuple((k, tuple(int(n) for n in obs_spec[k][0]), np.dtype(obs_spec[k][1]).name) for k in sorted(obs_spec))
  if int(obs_spec) < 1:
    raise VidrlError(f"SAC needs obs_dim >= 1, got {obs_spec}")
  return int(obs_spec)


def init(rng: jax.Array, obs_spec: int | Mapping, action_dim: int, config: ml_collections.ConfigDict,
         aux: Aux | None = None) -> SACState:
  """Fresh actor, twin critic (the target a copy of it), log temperature log(init_temperature), Adam states;
  for dict `obs_spec` ({key: (shape, dtype)} of one observation) the shared encoder and its target copy; with
  `aux`, its params and optimiser state."""
  if action_dim < 1:
    raise VidrlError(f"SAC needs action_dim >= 1, got {action_dim}")
  if config.init_temperature <= 0:
    raise VidrlError(f"init_temperature must be positive, got {config.init_temperature}")
  return _init_jit(rng, _spec_key(obs_spec), int(action_dim), learner_config(config), aux)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _init_jit(rng: jax.Array, spec: int | tuple, action_dim: int, config: ml_collections.FrozenConfigDict,
              aux: Aux | None) -> SACState:
  """`init` compiled once per (shapes, config): Linen's op-by-op init costs seconds of tiny compilations."""
  rng_actor, rng_critic = jax.random.split(rng)
  encoder = None
  if isinstance(spec, int):
    feat = jnp.zeros((1, spec), jnp.float32)
    if config.state_encoder_hidden:
      encoder = encoder_module(config, vector=True)
      encoder_params = encoder.init(jax.random.fold_in(rng, 1), feat)
      feat = encoder.apply(encoder_params, feat)
  else:
    encoder = encoder_module(config)
    obs = {k: jnp.zeros((1, *shape), dtype) for k, shape, dtype in spec}
    encoder_params = encoder.init(jax.random.fold_in(rng, 1), obs)
    feat = encoder.apply(encoder_params, obs)
  action = jnp.zeros((1, action_dim), jnp.float32)
  actor_params = actor_module(config, action_dim).init(rng_actor, feat)
  critic_params = critic_module(config).init(rng_critic, feat, action)
  log_alpha = jnp.asarray(math.log(config.init_temperature), jnp.float32)
  actor_tx, critic_tx, alpha_tx = _optimizers(config)
  extra = {}
  if encoder is not None:
    extra.update(encoder_params=encoder_params, target_encoder_params=jax.tree.map(jnp.copy, encoder_params),
                 encoder_opt=critic_tx.init(encoder_params))
  if aux is not None:
    aux_params = aux.init(jax.random.fold_in(rng, 2), feat, action_dim)
    extra.update(aux_params=aux_params, aux_opt=aux.optimizer.init(aux_params))
  return SACState(actor_params=actor_params, critic_params=critic_params,
                  target_params=jax.tree.map(jnp.copy, critic_params), log_alpha=log_alpha,
                  actor_opt=actor_tx.init(actor_params), critic_opt=critic_tx.init(critic_params),
                  alpha_opt=alpha_tx.init(log_alpha), step=jnp.zeros((), jnp.int32), **extra)


def policy_params(state: SACState) -> dict:
  """What `act` needs: {'actor': actor params, 'encoder': encoder params or None}."""
  return {"actor": state.actor_params, "encoder": state.encoder_params}


def _encode(config: ml_collections.ConfigDict, encoder_params: Params, obs: Any) -> jax.Array:
  """Features of obs: the encoder's output, or the vector observation itself when there is no encoder."""
  if encoder_params is None:
    return obs
  return encoder_module(config, vector=not isinstance(obs, Mapping)).apply(encoder_params, obs)


def act(params: dict, obs: Any, rng: jax.Array, deterministic: bool, config: ml_collections.ConfigDict,
        action_dim: int) -> jax.Array:
  """Action (..., A) in [-1, 1] for obs (vectors (..., D) or a dict of (...)-batched arrays): tanh(mean) when
  `deterministic`, else a sample of `distributions.TanhNormal`. `params = policy_params(state)`."""
  dist = actor_module(config, action_dim).apply(params["actor"], _encode(config, params["encoder"], obs))
  return dist.mode() if deterministic else dist.sample(rng)


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


def augment(batch: dict, rng: jax.Array, config: ml_collections.ConfigDict) -> dict:
  """`random_crop` of the `image_key` image of `obs` and `next_obs` (independent crops); other keys untouched."""
  out = dict(batch)
  for i, key in enumerate(("obs", "next_obs")):
    obs = batch[key]
    if isinstance(obs, Mapping) and config.image_key in obs and config.augment_pad > 0:
      out[key] = {**obs, config.image_key: random_crop(jax.random.fold_in(rng, i), obs[config.image_key],
                                                       int(config.augment_pad))}
  return out


def _apply_tx(tx: optax.GradientTransformation, grads: Params, opt_state: optax.OptState,
              params: Params) -> tuple[Params, optax.OptState]:
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def update(state: SACState, batch: dict, rng: jax.Array, config: ml_collections.ConfigDict,
           aux: Aux | None = None) -> tuple[SACState, dict]:
  """One SAC update on batch = obs (B, D) or dict, action (B, A), reward (B,), next_obs, discount (B,) (1 -
  terminal, without gamma). Returns the new state and the metrics in `SAC_METRICS` (losses before this step),
  plus the aux terms and metrics prefixed `aux/`.

  `rng` splits into the keys of a' ~ pi(s') (critic target) and a ~ pi(s) (actor and temperature losses);
  `fold_in(rng, 1)` gives the relabel, augmentation and aux keys."""
  rng_next, rng_pi = jax.random.split(rng)
  rng_relabel, rng_aug, rng_aux = jax.random.split(jax.random.fold_in(rng, 1), 3)
  has_encoder, has_aux = state.encoder_params is not None, aux is not None
  if has_aux and aux.relabel is not None:
    frozen = jax.lax.stop_gradient(state.encoder_params)
    batch = aux.relabel(state.aux_params, functools.partial(_encode, config, frozen), batch, rng_relabel)
  if has_encoder:
    batch = augment(batch, rng_aug, config)
  action_dim = batch["action"].shape[-1]
  actor, critic = actor_module(config, action_dim), critic_module(config)
  actor_tx, critic_tx, alpha_tx = _optimizers(config)
  alpha = jnp.exp(state.log_alpha)

  next_feat = jax.lax.stop_gradient(_encode(config, state.encoder_params, batch["next_obs"]))
  next_action, next_log_prob = actor.apply(state.actor_params, next_feat).sample_and_log_prob(rng_next)
  target_feat = _encode(config, state.target_encoder_params, batch["next_obs"]) if has_encoder else next_feat
  next_q = critic.apply(state.target_params, target_feat, next_action)
  target = jax.lax.stop_gradient(critic_target(batch["reward"], batch["discount"], next_q, next_log_prob, alpha,
                                               config.gamma))

  def critic_fn(critic_params, encoder_params, aux_params):
    feat = _encode(config, encoder_params, batch["obs"])
    q = critic.apply(critic_params, feat, batch["action"])
    c_loss, aux_metrics = critic_loss(q, target), {}
    total = c_loss
    if has_aux:
      terms, extra = aux.loss(aux_params, functools.partial(_encode, config, encoder_params), batch, rng_aux)
      aux_total, logged = weighted_sum(terms, aux.weights)
      total = total + aux_total
      aux_metrics = {f"aux/{k}": v for k, v in {**logged, **extra}.items()}
    return total, (c_loss, q, feat, aux_metrics)

  argnums = (0,) + ((1,) if has_encoder else ()) + ((2,) if has_aux else ())
  (_, (c_loss, q, feat, aux_metrics)), grads = jax.value_and_grad(critic_fn, argnums, has_aux=True)(
      state.critic_params, state.encoder_params, state.aux_params)
  grads = dict(zip(argnums, grads))
  feat = jax.lax.stop_gradient(feat)  # the actor and the temperature do not train the encoder

  def actor_fn(params):
    action, log_prob = actor.apply(params, feat).sample_and_log_prob(rng_pi)
    q = critic.apply(state.critic_params, feat, action)
    return actor_loss(q, log_prob, alpha), log_prob

  (a_loss, log_prob), a_grads = jax.value_and_grad(actor_fn, has_aux=True)(state.actor_params)
  t_loss, t_grad = jax.value_and_grad(alpha_loss)(state.log_alpha, log_prob, target_entropy(config, action_dim))

  critic_params, critic_opt = _apply_tx(critic_tx, grads[0], state.critic_opt, state.critic_params)
  actor_params, actor_opt = _apply_tx(actor_tx, a_grads, state.actor_opt, state.actor_params)
  log_alpha, alpha_opt = _apply_tx(alpha_tx, t_grad, state.alpha_opt, state.log_alpha)
  new_state = state.replace(actor_params=actor_params, critic_params=critic_params,
                            target_params=polyak(state.target_params, critic_params, config.tau),
                            log_alpha=log_alpha, actor_opt=actor_opt, critic_opt=critic_opt, alpha_opt=alpha_opt,
                            step=state.step + 1)
  if has_encoder:
    encoder_params, encoder_opt = _apply_tx(critic_tx, grads[1], state.encoder_opt, state.encoder_params)
    new_state = new_state.replace(encoder_params=encoder_params, encoder_opt=encoder_opt,
                                  target_encoder_params=polyak(state.target_encoder_params, encoder_params,
                                                               config.tau))
  if has_aux:
    aux_params, aux_opt = _apply_tx(aux.optimizer, grads[2], state.aux_opt, state.aux_params)
    new_state = new_state.replace(aux_params=aux_params, aux_opt=aux_opt)
  metrics = dict(critic_loss=c_loss, actor_loss=a_loss, alpha_loss=t_loss, alpha=alpha,
                 entropy=-jnp.mean(log_prob), q_mean=jnp.mean(q), **aux_metrics)
  return new_state, metrics


def update_burst(state: SACState, batches: dict, rng: jax.Array, config: ml_collections.ConfigDict,
                 aux: Aux | None = None) -> tuple[SACState, dict]:
  """K updates over stacked batches (K, B, ...) in one `lax.scan`; update n (counted by `state.step`) uses
  `fold_in(rng, n)`, so the stream continues exactly across bursts and resumptions. Metrics are (K,)."""
  def body(s, batch):
    return update(s, batch, jax.random.fold_in(rng, s.step), config, aux)
  return jax.lax.scan(body, state, batches)


def make_update_burst(config: ml_collections.ConfigDict, aux: Aux | None = None):
  """`jit(update_burst)` bound to `config` (and `aux`), donating the state: `(state, batches, rng) -> (state,
  metrics)`. The learner fields of the config are a static argument (`learner_config`): equal ones share one
  compilation."""
  return functools.partial(_update_burst_jit, config=learner_config(config), aux=aux)


_update_burst_jit = jax.jit(update_burst, static_argnames=("config", "aux"), donate_argnums=0)
