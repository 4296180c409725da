"""APV's two stages as tasks of the shared loop (paper Algorithm: pre-train on videos, then fine-tune online).

- `pretrain_task`: the action-free video model (`model.pretrain_loss`, Eq. 2) on (B, T) windows of the videos,
  Adam (official apv_pretraining: lr 3e-4, eps 1e-5, clip 100, weight decay 1e-6).
- `finetune_task`: the online agent. Each loop step the collector acts `train_every` env steps with the recurrent
  policy (`model.filter_frame` then the actor), then one burst of updates, each: the world model on a replay batch
  (`model.finetune_loss`, Eq. 6: two optimisers as the official, `enc` for the encoder and the action-free RSSM,
  frozen for the first `freeze_updates` updates when weights were loaded (official `enc_lr_type: no_pretrain`),
  `model` for the rest), then the actor-critic (`rl.dreamer.ActorCritic`) imagining from the batch's posteriors
  with the updated model. `finetune.load` names the pre-trained parts copied in before the first update
  (`warm_start`): "encoder", "decoder", "af_rssm" (APV) or "rssm" (naive fine-tuning, Fig. 6a: the single
  RSSM from the action-free one, its action rows re-initialised, paper App. E).
- `greedy_episodes`: a fine-tuned agent's held-out evaluation episodes (frames and actions: the open-loop plots).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from vidrl_jax.data.mix import Sampler
from vidrl_jax.data.replay import ReplayBuffer
from vidrl_jax.envs import host
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.apv import bonus as bonus_lib
from vidrl_jax.methods.apv import model as model_lib
from vidrl_jax.nets.rssm import action_rows, features
from vidrl_jax.rl.dreamer import ActorCritic, ActorCriticState, actor_mode, actor_sample
from vidrl_jax.train import Task, stage_rng
from vidrl_jax.train.online import make_collector
from vidrl_jax.train.optim import Start, make_optimizer

ENC_GROUP = ("encoder", "af_rssm")     # the parts the official `enc_model_opt` trains
LOADABLE = ("encoder", "decoder", "af_rssm", "rssm")
EVAL_SEED_OFFSET = 100_003


# ---- pre-training -----------------------------------------------------------------------------------------
class PretrainState(struct.PyTreeNode):
  params: Any
  opt: Any
  step: jax.Array


def pretrain_task(name: str, windows: Any, config: ml_collections.ConfigDict, seed: int) -> Task:
  """`windows`: a `sequence.Windows` of the video dataset (length `config.pretrain.length`)."""
  wm = model_lib.video_model(config.model)
  c = config.pretrain
  tx = make_optimizer(c.optim, c.steps)
  weights = pretrain_weights(config)

  def init(rng):
    params = wm.init(rng)
    return PretrainState(params=params, opt=tx.init(params), step=jnp.zeros((), jnp.int32))

  def step(state: PretrainState, batch: dict, rng: jax.Array):
    loss_fn = lambda p: model_lib.pretrain_loss(wm, p, batch, rng, weights)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt = tx.update(grads, state.opt, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates), opt=opt, step=state.step + 1), metrics

  def batch(i: int) -> dict:   # this process's rows of step i's global batch
    b = windows.sample(seed, i, c.batch_size, jax.process_index(), jax.process_count())
    return {"obs": {"image": b["obs"]["image"]}, "is_first": b["is_first"]}

  return Task(name=name, init=init, step=step, num_steps=int(c.steps), batch=batch,
              show=("loss/image", "loss/kl"))


def pretrain_weights(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The model config with pre-training's KL scale (official Meta-World pre-training: 0.1)."""
  out = ml_collections.ConfigDict(config.model.to_dict())
  out.loss_weights.kl = config.pretrain.kl
  return out


# ---- fine-tuning ------------------------------------------------------------------------------------------
class AgentState(struct.PyTreeNode):
  params: Any                 # the world model's (model.FineTuneModel)
  enc_opt: Any
  model_opt: Any
  ac: ActorCriticState
  bonus: bonus_lib.BonusState
  updates: jax.Array


def _split(params: dict) -> tuple[dict, dict]:
  return ({k: v for k, v in params.items() if k in ENC_GROUP}, {k: v for k, v in params.items() if k not in ENC_GROUP})


def load_pretrained(model: model_lib.FineTuneModel, params: dict, pretrained: dict, parts: tuple[str, ...]
                    ) -> dict:
  """`params` with the named parts copied from the pre-trained video model's `pretrained` params."""
  unknown = sorted(set(parts) - set(LOADABLE))
  if unknown:
    raise VidrlError(f"finetune.load {unknown}: the loadable parts are {LOADABLE}")
  out = dict(params)
  src = {"encoder": "encoder", "decoder": "decoders", "af_rssm": "rssm", "rssm": "rssm"}
  for part in parts:
    dst = "decoders" if part == "decoder" else part
    if dst not in out:
      raise VidrlError(f"finetune.load names {part!r} but the {model.config.kind} model has none; drop it from "
                       f"finetune.load")
    new = pretrained[src[part]]
    shapes = lambda t: jax.tree.map(lambda x: tuple(x.shape), t)
    if part == "rssm":    # naive fine-tuning: the action rows of the pre-trained kernel re-initialised
      path, rows = action_rows(model.upper.rssm, model.upper.action_dim)
      fresh = out["rssm"]
      new = jax.tree.map(np.array, new)           # a copy: the pre-trained params stay as they are
      _get(new["params"], path)[rows] = np.asarray(_get(fresh["params"], path))[rows]
    if shapes(new) != shapes(out[dst]):
      raise VidrlError(f"the pre-trained {part} has other shapes than this config's model; pre-train with the same "
                       f"model settings (model.*) or drop {part!r} from finetune.load")
    out[dst] = new
  return out


def _get(tree: dict, path: tuple[str, ...]):
  for k in path:
    tree = tree[k]
  return tree


def imagination_heads(model: model_lib.FineTuneModel, params: dict, gamma: float):
  """The actor-critic's `heads`: the reward head's mean and gamma everywhere (APV has no discount head, and
  Meta-World never terminates)."""
  def fn(states):
    reward = model_lib.reward_mean(model, params, features(states))
    return reward, jnp.full(reward.shape, gamma)
  return fn


def agent(action_dim: int, config: ml_collections.ConfigDict, num_updates: int
          ) -> tuple[model_lib.FineTuneModel, ActorCritic, Callable, Callable]:
  """(world model, actor-critic, init(rng) -> AgentState, update(state, batch, rng) -> (state, metrics))."""
  c = config.finetune
  model = model_lib.finetune_model(action_dim, config.model)
  ac = ActorCritic(model.upper.rssm, action_dim, discrete=False, config=config.ac, num_updates=num_updates)
  freeze = int(c.freeze_updates) if tuple(c.load) else 0
  enc_tx = lambda params: make_optimizer(c.enc_optim, num_updates,
                                         trainable=jax.tree.map(lambda _: Start(freeze), params))
  model_tx = make_optimizer(c.model_optim, num_updates)
  gamma = float(config.ac.discount)

  def init(rng: jax.Array) -> AgentState:
    r_wm, r_ac, r_bonus = jax.random.split(rng, 3)
    params = model.init(r_wm)
    enc, rest = _split(params)
    feat_dim = model.lower.feature_dim if model.lower is not None else model.upper.feature_dim
    return AgentState(params=params, enc_opt=enc_tx(enc).init(enc), model_opt=model_tx.init(rest),
                      ac=ac.init(r_ac), bonus=bonus_lib.init_bonus(r_bonus, feat_dim, config.bonus),
                      updates=jnp.zeros((), jnp.int32))

  def update(state: AgentState, batch: dict, rng: jax.Array) -> tuple[AgentState, dict]:
    r_wm, r_ac = jax.random.split(rng)
    loss_fn = lambda p: model_lib.finetune_loss(model, p, state.bonus, batch, r_wm, config.bonus)
    (_, (bonus, post, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    enc, rest = _split(state.params)
    g_enc, g_rest = _split(grads)
    u_enc, enc_opt = enc_tx(enc).update(g_enc, state.enc_opt, enc)
    u_rest, model_opt = model_tx.update(g_rest, state.model_opt, rest)
    params = {**optax.apply_updates(enc, u_enc), **optax.apply_updates(rest, u_rest)}
    start = jax.tree.map(lambda x: x.reshape(-1, x.shape[-1]), post)      # every posterior state of the batch
    ac_state, ac_metrics = ac.update(state.ac, params["rssm"], start, imagination_heads(model, params, gamma), r_ac)
    new = state.replace(params=params, enc_opt=enc_opt, model_opt=model_opt, ac=ac_state, bonus=bonus,
                        updates=state.updates + 1)
    return new, {**metrics, **ac_metrics}

  return model, ac, init, update


def recurrent_policy(model: model_lib.FineTuneModel, ac: ActorCritic, action_dim: int, greedy: bool
                     ) -> host.RecurrentPolicy:
  """The agent acting: filter the new frame through the stack (latents sampled, as the official `policy` in
  train and eval mode alike), then an actor sample (train) or its mode (`greedy`, eval)."""
  def act(state: AgentState, carry: tuple, obs: dict, is_first: jax.Array, rng: jax.Array):
    r_filter, r_act = jax.random.split(rng)
    low, post = model_lib.filter_frame(model, state.params, carry, obs, is_first, r_filter)
    dist = ac.actor.apply(state.ac.actor, features(post))
    action = actor_mode(dist) if greedy else actor_sample(dist, r_act)
    return action, (low, post, action)
  return host.RecurrentPolicy(init=lambda n: model_lib.initial_carry(model, n, action_dim), act=act)


def greedy_episodes(state: AgentState, env: host.BatchEnv, config: ml_collections.ConfigDict, seed: int,
                    num_episodes: int) -> list[dict]:
  """The fine-tuned agent `state`'s first `num_episodes` evaluation episodes on `env` (greedy, the evaluation's
  reset seeds; they never enter the replay), as `host.EpisodeRecorder` records them."""
  model = model_lib.finetune_model(env.action_dim, config.model)
  ac = ActorCritic(model.upper.rssm, env.action_dim, discrete=False, config=config.ac, num_updates=1)  # acts only
  policy = host.bind(recurrent_policy(model, ac, env.action_dim, greedy=True), state, jax.random.PRNGKey(seed),
                     obs_fn=lambda obs: {"image": obs["image"]})
  episodes = []
  host.run_episodes(env, policy, num_episodes, seed=seed + EVAL_SEED_OFFSET, on_episode=lambda i, e: episodes.append(e))
  return episodes


def finetune_task(name: str, env: host.HostEnv, eval_env: Any, config: ml_collections.ConfigDict, seed: int,
                  pretrained: dict | None) -> Task:
  """The online stage (module docstring) for `config.finetune.env_steps` env steps of the image env `env`;
  `eval_env` (a `host.BatchEnv` of the sparse-success twin) scores `eval_episodes` greedy episodes every
  `eval_every` env steps: success rate (an episode succeeds if any step does) and return."""
  c = config.finetune
  A, B, T = env.action_dim, int(c.batch_size), int(c.length)
  num_steps = int(c.env_steps) // int(c.train_every)
  due = max(num_steps - int(c.prefill) // int(c.train_every), 1)
  model, ac, init, update = agent(A, config, num_updates=due)
  spec = {"image": ((config.env.image_size, config.env.image_size, 3), np.uint8)}
  replay = ReplayBuffer(int(c.replay_capacity), spec, action_dim=A)
  sampler = Sampler({"replay": (replay.windows(T), B)}, seed)
  collector = make_collector(env, replay, sampler, recurrent_policy(model, ac, A, greedy=False),
                             rng=stage_rng(seed, f"{name}/act"), seed=seed, train_every=int(c.train_every),
                             updates_per_burst=1, random_steps=int(c.prefill), min_transitions=T,
                             obs_fn=lambda obs: {"image": obs["image"]})

  def step(state: AgentState, burst: dict, rng: jax.Array):
    def body(s, xs):
      b, i = xs
      b = {"obs": {"image": b["obs"]["image"]}, "action": b["action"], "reward": b["reward"],
           "is_first": b["is_first"]}
      return update(s, b, jax.random.fold_in(rng, i))
    burst = burst["replay"]                      # the sampler's one source: (K, B, T, ...)
    K = jax.tree.leaves(burst)[0].shape[0]
    state, metrics = jax.lax.scan(body, state, (burst, jnp.arange(K)))
    return state, jax.tree.map(jnp.mean, metrics)

  greedy = recurrent_policy(model, ac, A, greedy=True)

  def evaluate(state: AgentState, done: int) -> dict:
    # the same episodes (reset seeds) at every evaluation, seeds apart from the training episodes'; one jitted
    # step for all envs, decision t's rng fold_in(PRNGKey(seed + done), t)
    policy = host.bind(greedy, state, jax.random.PRNGKey(seed + done), obs_fn=lambda obs: {"image": obs["image"]})
    returns = host.run_episodes(eval_env, policy, int(c.eval_episodes), seed=seed + EVAL_SEED_OFFSET)
    return {"success_rate": float(np.mean(returns > 0)), "success_steps": float(np.mean(returns)),
            "env_steps": float(done * int(c.train_every))}

  warm = None
  if pretrained is not None and tuple(c.load):
    def warm(state: AgentState) -> AgentState:
      params = load_pretrained(model, jax.device_get(state.params), jax.device_get(pretrained), tuple(c.load))
      return state.replace(params=params)
  every = max(int(c.eval_every) // int(c.train_every), 1)
  return Task(name=name, init=init, step=step, num_steps=num_steps, collector=collector, evaluate=evaluate,
              warm_start=warm, eval_every=every, log_every=max(int(c.log_every) // int(c.train_every), 1),
              checkpoint_every=max(int(c.checkpoint_every) // int(c.train_every), 1),
              show=("episode_return", "loss/image"))
