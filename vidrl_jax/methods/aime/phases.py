"""AIME's two phases as `Task`s for the shared loop, and the policy that acts in the real environment.

Phase 1 trains the world model on embodiment windows; phase 2 trains only the policy on demonstration windows
through the frozen model (Algorithm 1). The frozen model's parameters ride in the phase-2 state (so a checkpoint
is self-contained) but no gradient or optimiser ever touches them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct
from flax.training.train_state import TrainState

from vidrl_jax.data.sequence import Windows
from vidrl_jax.envs import host
from vidrl_jax.methods.aime import model as model_lib
from vidrl_jax.nets.heads import TanhGaussianPolicy
from vidrl_jax.nets.rssm import RSSM, features, zeros_state
from vidrl_jax.train import Task
from vidrl_jax.train.optim import make_optimizer


def batch_fn(data: Windows, batch_size: int, seed: int) -> Callable[[int], dict]:
  """Deterministic (B, T) windows for step `step` (exact resumption); only what the steps read."""
  proc, count = jax.process_index(), jax.process_count()

  def batch(step: int) -> dict:
    b = data.sample(seed, step, batch_size, proc, count)
    return {"obs": b["obs"], "action": b["action"]}

  return batch


def phase1_task(name: str, wm: model_lib.WorldModel, data: Windows, config: ml_collections.ConfigDict,
                seed: int) -> Task:
  """Phase 1: maximise the ELBO of embodiment windows (Eq. 4)."""
  tx = make_optimizer(config.optim, config.steps)

  def init(rng):
    return TrainState.create(apply_fn=None, params=wm.init(rng), tx=tx)

  def step(state: TrainState, batch, rng):
    (_, metrics), grads = jax.value_and_grad(
        lambda p: model_lib.model_loss(wm, p, batch, rng), has_aux=True)(state.params)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.apply_gradients(grads=grads), metrics

  return Task(name=name, init=init, step=step, num_steps=config.steps,
              batch=batch_fn(data, config.batch_size, seed))


@struct.dataclass
class Phase2State:
  policy: TrainState       # the only trained part
  world_model: Any         # frozen phase-1 parameters


def phase2_task(name: str, wm: model_lib.WorldModel, wm_params, data: Windows, config: ml_collections.ConfigDict,
                seed: int, evaluate: Callable | None = None) -> Task:
  """Phase 2: maximise the ELBO of observation-only demonstrations w.r.t. the policy only (Eq. 8)."""
  policy = model_lib.policy_module(wm.action_dim, config)
  tx = make_optimizer(config.optim, config.steps)

  def init(rng):
    params = policy.init(rng, jnp.zeros((1, wm.feature_dim)))
    return Phase2State(TrainState.create(apply_fn=None, params=params, tx=tx), wm_params)

  def step(state: Phase2State, batch, rng):
    (_, metrics), grads = jax.value_and_grad(
        lambda p: model_lib.policy_loss(wm, state.world_model, policy, p, batch, rng, config),
        has_aux=True)(state.policy.params)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.replace(policy=state.policy.apply_gradients(grads=grads)), metrics

  return Task(name=name, init=init, step=step, num_steps=config.steps,
              batch=batch_fn(data, config.batch_size, seed), evaluate=evaluate, log_every=None)


def true_action_elbo(wm: model_lib.WorldModel, wm_params, batch: dict, rng: jax.Array) -> float:
  """The ELBO of demo windows under the frozen model with the demos' *true* actions (paper Fig. 8's reference)."""
  _, metrics = jax.jit(lambda p, b, r: model_lib.model_loss(wm, p, b, r))(wm_params, batch, rng)
  return float(metrics["elbo"])


def model_policy(wm: model_lib.WorldModel, wm_params, policy: TanhGaussianPolicy, policy_params, seed: int = 0
                 ) -> host.Policy:
  """The phase-2 policy acting in the real environment (`host.run_episodes`): the frozen model filters the
  observations, the policy acts deterministically with tanh(mean) on the filtered state (paper Sec. 4:
  'deterministic policy'). Decision t's posterior sample uses `fold_in(PRNGKey(seed), t)` (`host.bind`)."""
  return host.bind(_model_policy(wm, policy), (wm_params, policy_params), jax.random.PRNGKey(seed),
                   obs_fn=lambda obs: {k: obs[k] for k in wm.obs_keys})


@functools.lru_cache(maxsize=16)
def _model_policy(wm: model_lib.WorldModel, policy: TanhGaussianPolicy) -> host.RecurrentPolicy:
  """`model_policy`'s `RecurrentPolicy`, one per (world model, policy module), both hashable values: every
  evaluation of the same shapes shares its compilation (the parameters are its state)."""
  rssm = wm.rssm

  def act(params, carry, obs, is_first, rng):
    (wm_params, policy_params), (state, prev_action) = params, carry
    embed = wm.embed(wm_params, obs)
    # at an episode start the state is reset (s_0 = h_0 = 0) and pre_action is zero
    state, _, _ = rssm.apply(wm_params["rssm"], state, prev_action, embed, rng, is_first, method=RSSM.obs_step)
    action = policy.apply(policy_params, features(state)).mode()
    return action, (state, action)

  return host.RecurrentPolicy(init=lambda n: (zeros_state(rssm, (n,)), jnp.zeros((n, wm.action_dim))), act=act)
