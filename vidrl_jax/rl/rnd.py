"""Random network distillation (Burda et al. 2018, "Exploration by random network distillation") as an exploration
bonus for SAC: RLV's task-agnostic baseline "SAC with the exploration bonus of RND" (paper §4.3, Fig. 6c/7c).

A fixed, randomly initialised target MLP g and a trained predictor MLP f of the same shape map the features of the
next observation s' to `out` numbers; the prediction error e(s') = mean_k (f(s')_k - g(s')_k)^2 is large on states
unlike those trained on. As a `sac.Aux` (SAC's auxiliary-loss hook):

- `relabel` adds beta * e(s') / (std_batch(e) + eps) to each transition's reward (the batch's standard deviation
  of e, stop-gradient: a scale-free bonus, as Burda et al. divide by a running std of the intrinsic return; the
  `sac.Aux` hook has no state besides trained params, so the batch's std stands in for the running one), and keeps
  the bonus under `BONUS` for logging.
- `loss` trains the predictor by the MSE e(s') on the batch (term `rnd`); the target is in the aux params (so it
  is checkpointed with them) but never trained: its gradient is stopped and its optimiser is `optax.set_to_zero`.

Features: vector observations without an encoder are used as they are (no observation normalisation: Acrobot's
and Meta-World's states are O(1) to O(10)); with SAC's shared encoder (pixels, or `state_encoder_hidden`) RND
reads the encoder's features under stop-gradient, so RND neither trains nor shapes the encoder (the target thus
sees features that drift as SAC trains the encoder; the predictor follows them). `relabel` sees the un-augmented
next observation, `loss` the augmented one (SAC augments between the two).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.mlp import MLP
from vidrl_jax.rl import sac

BONUS = "rnd_bonus"   # the relabelled batch's intrinsic reward, (B,)


def rnd_config(**overrides) -> ml_collections.ConfigDict:
  """RND's settings (our choices: the RLV paper gives none). `beta`: the bonus's weight against the task reward
  (0.1: the normalised bonus is O(1) per step, the sparse success reward of the manipulation tasks 0 or 1);
  `hidden`/`out`: the widths of the target and predictor relu MLPs (2x256, SAC's width, to a 64-d embedding);
  `lr`: the predictor's Adam rate (SAC's 3e-4); `eps`: added to the batch std; `weight`: the predictor loss's
  weight in SAC's summed loss (it reaches only the predictor, so with Adam it barely matters)."""
  c = ml_collections.ConfigDict(dict(beta=0.1, hidden=(256, 256), out=64, lr=3e-4, eps=1e-8, weight=1.0))
  c.update(overrides)
  return c


def networks(config: ml_collections.ConfigDict) -> tuple[MLP, MLP]:
  """(target, predictor): the same relu MLP shape, separate params."""
  return (MLP(tuple(config.hidden), out=int(config.out)),) * 2


def prediction_error(params: dict, feat: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
  """e(s') (B,): the predictor's squared error on the stop-gradient target's embedding, mean over its `out` dims."""
  target, predictor = networks(config)
  goal = jax.lax.stop_gradient(target.apply(params["target"], feat))
  return jnp.mean(jnp.square(predictor.apply(params["predictor"], feat) - goal), axis=-1)


def bonus(error: jax.Array, beta: float, eps: float) -> jax.Array:
  """beta * e / (std(e) + eps) over the batch, stop-gradient."""
  error = jax.lax.stop_gradient(error)
  return beta * error / (jnp.std(error) + eps)


def make_aux(config: ml_collections.ConfigDict) -> sac.Aux:
  """RND as `sac.Aux` for `sac.init/update` or `offpolicy.sac_task(..., aux=make_aux(rnd_config()))`. Aux
  params: {"target", "predictor"}."""
  if config.beta < 0 or config.lr <= 0 or config.eps <= 0 or config.weight < 0 or config.out < 1:
    raise VidrlError(f"RND needs beta >= 0, lr > 0, eps > 0, weight >= 0 and out >= 1, got {config.beta}, "
                     f"{config.lr}, {config.eps}, {config.weight} and {config.out}; fix the rnd config")
  config = ml_collections.FrozenConfigDict(config)
  target, predictor = networks(config)

  def init(rng: jax.Array, feat: jax.Array, action_dim: int) -> dict:
    del action_dim
    rng_target, rng_predictor = jax.random.split(rng)
    return {"target": target.init(rng_target, feat), "predictor": predictor.init(rng_predictor, feat)}

  def relabel(params: dict, encode, batch: dict, rng: jax.Array) -> dict:
    del rng
    b = bonus(prediction_error(params, encode(batch["next_obs"]), config), config.beta, config.eps)
    return {**batch, "reward": batch["reward"] + b, BONUS: b}

  def loss(params: dict, encode, batch: dict, rng: jax.Array) -> tuple[dict, dict]:
    del rng
    error = prediction_error(params, jax.lax.stop_gradient(encode(batch["next_obs"])), config)
    metrics = {"bonus": jnp.mean(batch[BONUS])} if BONUS in batch else {}
    return {"rnd": error}, metrics

  optimizer = optax.multi_transform({"predictor": optax.adam(config.lr), "target": optax.set_to_zero()},
                                    lambda params: {k: jax.tree.map(lambda _: k, v) for k, v in params.items()})
  return sac.Aux(init=init, loss=loss, weights={"rnd": float(config.weight)}, optimizer=optimizer, relabel=relabel)
