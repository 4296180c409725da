"""Proximal policy optimisation (Schulman et al., 2017) as a `Task` for the shared training loop.

One loop step is one PPO update, compiled whole in the PureJaxRL way: a `lax.scan` rollout of `num_steps` steps in
`num_envs` vectorised environments, GAE (Schulman et al., 2016), then `update_epochs` x `num_minibatches` clipped
minibatch updates as nested `lax.scan`s (Schulman et al., 2017, Alg. 1 and Eq. 7/9). Value clipping, advantage
normalisation per minibatch, global gradient clipping and Adam with eps 1e-5 follow the reference `ppo2` code that
Cobbe et al. (2020) trained Procgen with.

The network is the caller's: `apply_fn(params, obs) -> (logits, value)` on the env's raw observations (e.g.
`vidrl_jax.nets.actor_critic.make_actor_critic`). A `trainable` mask (`vidrl_jax.train.optim.trainable_mask`)
freezes parameters (LAPO stage 3 trains only its heads), and an `aux_loss` hook adds named terms (LAPO's online
decoder) to the PPO losses.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
from flax.training.train_state import TrainState

from vidrl_jax.envs.base import VecEnv
from vidrl_jax.errors import VidrlError
from vidrl_jax.losses import weighted_sum
from vidrl_jax.nets import conv
from vidrl_jax.nets.actor_critic import ApplyFn, Params
from vidrl_jax.rl.evaluate import discrete_act, evaluate_policy
from vidrl_jax.rl.gae import gae
from vidrl_jax.train.loop import Task
from vidrl_jax.train.optim import make_optimizer, optim_config
AuxLoss = Callable[[Params, dict, jax.Array], Mapping[str, jax.Array]]
AuxPrepare = Callable[[Params, dict, jax.Array], Mapping[str, jax.Array]]

PPO_LOSSES = ("pg", "value", "entropy")


def ppo_config(**overrides) -> ml_collections.ConfigDict:
  """PPO settings; MinAtar-friendly defaults in the PureJaxRL style (64 envs x 128 steps, 4 epochs x 8
  minibatches, lr 5e-4 annealed, gamma .99, lambda .95, clip .2; measured in `benchmarks/ppo_minatar.py`).

  `norm_rewards` divides rewards by the running std of the discounted return and clips them to [-10, 10]
  (ppo2's `VecNormalize(ob=False)`, used by Cobbe et al. 2020); logged episode returns stay unnormalised.

  `loss_weights` holds one weight per named loss: `pg`, `value`, `entropy` (the loss is minus the entropy, so
  its weight is the entropy bonus coefficient), plus one per `aux_loss` term.

  `unroll_updates` unrolls the epoch and minibatch loops into straight-line code. XLA:CPU runs convolution
  gradients 5-40x slower inside loop bodies (jax-ml/jax#12868), so set it when training a CNN's convolutions on
  a CPU. Measured for IMPALA x1 on MinAtar (64 x 128 steps, 4 x 8 minibatches, 2-core CPU): 78 -> 508 env steps/s,
  compile 131 s -> 370 s. Frozen convolutions (LAPO stage 3) need no weight gradients and are not affected.
  """
  c = ml_collections.ConfigDict(dict(
      num_envs=64, num_steps=128, total_env_steps=10_000_000, gamma=0.99, gae_lambda=0.95, clip_eps=0.2,
      clip_value=True, update_epochs=4, num_minibatches=8, lr=5e-4, adam_eps=1e-5, max_grad_norm=0.5,
      anneal_lr=True, norm_adv=True, norm_rewards=False, unroll_updates=False, eval_episodes=32,
      eval_greedy=False,
      loss_weights=ml_collections.ConfigDict(dict(pg=1.0, value=0.5, entropy=0.01))))
  c.update(overrides)
  return c


def procgen_ppo_config(**overrides) -> ml_collections.ConfigDict:
  """Procgen PPO of Cobbe et al. (2020), Table 2 / App. C: 64 envs x 256 steps, gamma .999, lambda .95, 3 epochs,
  8 minibatches, lr 5e-4 (constant), clip .2, entropy .01, value .5, grad clip .5, reward normalisation, 25M
  steps (easy mode).

  The network they used is IMPALA-CNN at channel multiplier 4 (`nets.actor_critic.make_actor_critic(...,
  channels=impala_channels(4))`).
  """
  c = ppo_config(num_envs=64, num_steps=256, total_env_steps=25_000_000, gamma=0.999, gae_lambda=0.95,
                 clip_eps=0.2, update_epochs=3, num_minibatches=8, lr=5e-4, max_grad_norm=0.5, anneal_lr=False,
                 norm_rewards=True, loss_weights=dict(pg=1.0, value=0.5, entropy=0.01))
  c.update(overrides)
  return c


def ppo_optim_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The `train.optim` settings of a PPO config: global-norm clipping at `max_grad_norm`, then Adam (eps
  `adam_eps`) at `lr`, decayed linearly to 0 over all minibatch updates when `anneal_lr`."""
  return optim_config(lr=config.lr, clip=config.max_grad_norm, eps=config.adam_eps,
                      decay="linear" if config.anneal_lr else "constant")


@flax.struct.dataclass
class RewardNorm:
  """Running statistics of the discounted return, whose std scales the rewards (`config.norm_rewards`)."""
  ret: jax.Array    # (N,) discounted return of each copy's running episode
  mean: jax.Array
  var: jax.Array
  count: jax.Array

  @classmethod
  def create(cls, num_envs: int) -> "RewardNorm":
    return cls(ret=jnp.zeros((num_envs,), jnp.float32), mean=jnp.zeros((), jnp.float32),
               var=jnp.ones((), jnp.float32), count=jnp.full((), 1e-4, jnp.float32))

  def normalise(self, rewards: jax.Array, dones: jax.Array, gamma: float) -> tuple["RewardNorm", jax.Array]:
    """Scales (T, N) rewards as ppo2's VecNormalize: ret = gamma ret + r; r / sqrt(var(ret) + 1e-8), clip 10."""
    def accumulate(ret, xs):
      reward, done = xs
      ret = gamma * ret + reward
      return jnp.where(done, 0.0, ret), ret
    ret, rets = jax.lax.scan(accumulate, self.ret, (rewards, dones))
    # Merge the batch moments into the running ones (Chan et al.'s parallel update, as ppo2's RunningMeanStd).
    n, batch_mean, batch_var = rets.size, rets.mean(), rets.var()
    delta, total = batch_mean - self.mean, self.count + n
    mean = self.mean + delta * n / total
    var = (self.var * self.count + batch_var * n + jnp.square(delta) * self.count * n / total) / total
    scaled = jnp.clip(rewards / jnp.sqrt(var + 1e-8), -10.0, 10.0)
    return RewardNorm(ret=ret, mean=mean, var=var, count=total), scaled


@flax.struct.dataclass
class PPOState:
  """Everything one PPO update changes (a pytree, checkpointed by the loop)."""
  train_state: TrainState
  env_state: Any
  obs: jax.Array             # the observation the next rollout starts from
  episode_return: jax.Array  # mean return of the episodes completed in the last rollout that completed any
  episode_length: jax.Array
  updates: jax.Array         # PPO updates done (int32)
  reward_norm: RewardNorm


def make_ppo_task(env: VecEnv, apply_fn: ApplyFn, init_params: Params | Callable[[jax.Array], Params],
                  config: ml_collections.ConfigDict, name: str = "ppo", trainable: Params | None = None,
                  aux_loss: AuxLoss | None = None, eval_env: VecEnv | None = None,
                  aux_prepare: AuxPrepare | None = None) -> Task:
  """A `Task` whose step is one PPO update (rollout, GAE, clipped minibatch epochs).

  Args:
    env: the training environments; `config.num_envs` must equal `env.num_envs`.
    apply_fn: `(params, obs (B, ...)) -> (logits (B, A), value (B,))` on raw observations.
    init_params: the initial params, or `rng -> params`.
    trainable: bool pytree like the params (None: all trainable); frozen leaves never change.
    aux_loss: `(params, traj, rng) -> {name: loss}` added to the PPO losses (weights from `config.loss_weights`);
      each loss a scalar or of the minibatch's shape (`losses.weighted_sum` checks).
      `traj` is the whole time-major rollout: obs (T, N, ...), action, reward, done, terminated, value, logp
      (T, N), and next_obs (N, ...), the observation after the last step. It is called once per minibatch with
      that minibatch's rng, so a costly hook should subsample or use `aux_prepare`.
    eval_env: when given, the task evaluates `config.eval_episodes` episodes on it (`evaluate.evaluate_policy`).
    aux_prepare: `(params, traj, rng) -> {key: array}`, run once per update (not differentiated) before the
      epochs; its outputs join `traj` for `aux_loss`. Put per-rollout work there that needs no gradient, such as
      labelling the rollout with a frozen model.
  """
  if env.num_actions is None:
    raise VidrlError(f"PPO here handles discrete actions only; {env.name} has continuous actions")
  if env.num_envs != config.num_envs:
    raise VidrlError(f"env {env.name} has {env.num_envs} copies but config.num_envs is {config.num_envs}; "
                     f"make them equal")
  batch_size = config.num_envs * config.num_steps
  if batch_size % config.num_minibatches:
    raise VidrlError(f"num_envs * num_steps = {batch_size} is not divisible by num_minibatches = "
                     f"{config.num_minibatches}")
  num_updates = config.total_env_steps // batch_size
  if num_updates < 1:
    raise VidrlError(f"total_env_steps = {config.total_env_steps} is less than one rollout ({batch_size} steps)")
  weights = {k: float(v) for k, v in config.loss_weights.items()}
  if trainable is not None and not callable(init_params) and (
      jax.tree.structure(trainable) != jax.tree.structure(init_params)):
    raise VidrlError("the trainable mask must have the same tree structure as the params; build it with "
                     "vidrl_jax.train.optim.trainable_mask(params, fn)")
  tx = make_optimizer(ppo_optim_config(config), num_updates * config.update_epochs * config.num_minibatches,
                      trainable)
  T, M = config.num_steps, config.num_minibatches
  unroll = bool(config.unroll_updates)

  def init(rng: jax.Array) -> PPOState:
    rng_params, rng_env = jax.random.split(rng)
    params = init_params(rng_params) if callable(init_params) else init_params
    env_state, obs = env.reset(rng_env)
    return PPOState(train_state=TrainState.create(apply_fn=apply_fn, params=params, tx=tx), env_state=env_state,
                    obs=obs, episode_return=jnp.zeros((), jnp.float32),
                    episode_length=jnp.zeros((), jnp.float32), updates=jnp.zeros((), jnp.int32),
                    reward_norm=RewardNorm.create(env.num_envs))

  def rollout(params, env_state, obs, rng):
    def env_step(carry, rng):
      env_state, obs = carry
      rng_action, rng_env = jax.random.split(rng)
      logits, value = apply_fn(params, obs)
      action = jax.random.categorical(rng_action, logits)
      logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[:, 0]
      env_state, next_obs, reward, done, info = env.step(env_state, action, rng_env)
      out = dict(obs=obs, action=action, reward=reward.astype(jnp.float32), done=done,
                 terminated=info["terminated"], value=value, logp=logp,
                 episode_return=info["episode_return"].astype(jnp.float32),
                 episode_length=info["episode_length"].astype(jnp.float32))
      return (env_state, next_obs), out

    return jax.lax.scan(env_step, (env_state, obs), jax.random.split(rng, T))

  def loss_fn(params, mb, traj, rng):
    logits, value = apply_fn(params, mb["obs"])
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, mb["action"][:, None], axis=-1)[:, 0]
    log_ratio = logp - mb["logp"]
    ratio = jnp.exp(log_ratio)
    adv = mb["advantage"]
    if config.norm_adv:
      adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    # Clipped surrogate, Schulman et al. (2017) Eq. 7 (as a loss to minimise).
    eps = config.clip_eps
    pg = jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1.0 - eps, 1.0 + eps))
    value_loss = jnp.square(value - mb["return"])
    if config.clip_value:  # ppo2's value clipping around the rollout's value estimate
      clipped = mb["value"] + jnp.clip(value - mb["value"], -eps, eps)
      value_loss = jnp.maximum(value_loss, jnp.square(clipped - mb["return"]))
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    losses = dict(pg=pg, value=0.5 * value_loss, entropy=-entropy)  # Eq. 9: L^CLIP - c1 L^VF + c2 S
    if aux_loss is not None:
      extra = dict(aux_loss(params, traj, rng))
      clash = sorted(set(extra) & set(losses))
      if clash:
        raise VidrlError(f"aux_loss terms {clash} clash with the PPO losses {list(PPO_LOSSES)}; rename them")
      losses.update(extra)
    total, metrics = weighted_sum(losses, weights)
    metrics.update(approx_kl=jnp.mean((ratio - 1.0) - log_ratio),  # the k3 estimator of KL(old || new)
                   clip_frac=jnp.mean((jnp.abs(ratio - 1.0) > eps).astype(jnp.float32)),
                   entropy=jnp.mean(entropy))
    return total, metrics

  def step(state: PPOState, batch: Any, rng: jax.Array) -> tuple[PPOState, dict]:
    # The rollout and the minibatch updates are loop bodies, where XLA:CPU's convolutions (and above all their
    # gradients) are slow: "auto" convolutions run as GEMMs there on the CPU (nets/conv.py, `loop_impl`).
    with conv.auto_impl(conv.loop_impl()):
      return _step(state, rng)

  def _step(state: PPOState, rng: jax.Array) -> tuple[PPOState, dict]:
    rng_rollout, rng_prepare, rng_update = jax.random.split(rng, 3)
    ts = state.train_state
    (env_state, next_obs), traj = rollout(ts.params, state.env_state, state.obs, rng_rollout)
    _, last_value = apply_fn(ts.params, next_obs)
    reward_norm, rewards = state.reward_norm, traj["reward"]
    if config.norm_rewards:
      reward_norm, rewards = reward_norm.normalise(rewards, traj["done"], config.gamma)
    advantages, returns = gae(rewards, traj["value"], traj["done"], last_value, config.gamma, config.gae_lambda)
    hook_traj = {k: traj[k] for k in ("obs", "action", "reward", "done", "terminated", "value", "logp")}
    hook_traj["next_obs"] = next_obs
    if aux_prepare is not None:
      hook_traj.update(aux_prepare(ts.params, hook_traj, rng_prepare))
    samples = dict(obs=traj["obs"], action=traj["action"], logp=traj["logp"], value=traj["value"],
                   advantage=advantages, **{"return": returns})

    def minibatch_update(ts, xs):
      mb, rng = xs
      grads, metrics = jax.grad(loss_fn, has_aux=True)(ts.params, mb, hook_traj, rng)
      return ts.apply_gradients(grads=grads), metrics

    def epoch(ts, rng):
      rng_perm, rng_aux = jax.random.split(rng)
      perm = jax.random.permutation(rng_perm, batch_size)
      shuffled = jax.tree.map(
          lambda x: x.reshape((batch_size,) + x.shape[2:])[perm].reshape((M, batch_size // M) + x.shape[2:]),
          samples)
      return jax.lax.scan(minibatch_update, ts, (shuffled, jax.random.split(rng_aux, M)), unroll=unroll)

    ts, metrics = jax.lax.scan(epoch, ts, jax.random.split(rng_update, config.update_epochs), unroll=unroll)
    metrics = jax.tree.map(jnp.mean, metrics)

    # Episodes completed in this rollout (a masked mean); carry the previous value when none completed.
    done = traj["done"].astype(jnp.float32)
    completed = done.sum()
    def masked_mean(x, previous):
      return jnp.where(completed > 0, jnp.sum(x * done) / jnp.maximum(completed, 1.0), previous)
    episode_return = masked_mean(traj["episode_return"], state.episode_return)
    episode_length = masked_mean(traj["episode_length"], state.episode_length)
    updates = state.updates + 1
    metrics.update(episode_return=episode_return, episode_length=episode_length, episodes_completed=completed,
                   env_steps=updates.astype(jnp.float32) * batch_size)
    new_state = PPOState(train_state=ts, env_state=env_state, obs=next_obs, episode_return=episode_return,
                         episode_length=episode_length, updates=updates, reward_norm=reward_norm)
    return new_state, metrics

  evaluate = None
  if eval_env is not None:
    def evaluate(state: PPOState, step: int) -> dict:
      rng = jax.random.fold_in(jax.random.PRNGKey(0x5EED), step)
      return evaluate_policy(eval_env, discrete_act(apply_fn, config.eval_greedy), state.train_state.params, rng,
                             config.eval_episodes)

  return Task(name=name, init=init, step=step, num_steps=num_updates, evaluate=evaluate, log_every=1,
              show=("episode_return", "loss/total"))
