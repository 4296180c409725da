"""SAC on a host environment (dm_control, Meta-World) as an online stage of the shared loop, and the SAC actor as
a greedy host policy.

`sac_task` is the one binding of SAC to the online collectors (`vidrl_jax.train.online.make_collector`): the
replay stores the vector observation keys concatenated as key "state" and, for pixel SAC, the image (key
`config.image_key`) as it comes (uint8 stays uint8); actions after the random steps are sampled with
`fold_in(act_rng, env_step)`, and the loop's step is `sac.make_update_burst(config, aux)` on the collector's (K, B)
batches. Without an image SAC sees the "state" vector alone (no encoder: `sac.init` gets its width); with one it
sees the stored dict, and `sac.init` gets the stored spec, which switches on the shared image encoder and its
pad-and-crop augmentation. Randomness and resumption: `vidrl_jax.train.online`.

The host environment API (`vidrl_jax.envs.host`): `obs_spec: {key: (shape, dtype)}`, `action_dim`, `max_steps`,
`reset(seed) -> obs`, `step(action (A,) in [-1, 1]) -> (obs, reward, terminal)`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from vidrl_jax.data.mix import Sampler
from vidrl_jax.data.replay import ReplayBuffer
from vidrl_jax.envs import host
from vidrl_jax.envs.base import VecEnv
from vidrl_jax.errors import VidrlError
from vidrl_jax.rl import sac
from vidrl_jax.rl.evaluate import ActFn, continuous_act, evaluate_policy
from vidrl_jax.train.loop import Task, stage_rng
from vidrl_jax.train.online import make_collector

EVAL_SEED_OFFSET = 1_000_000  # evaluation episode i is reset with episode_seed(seed, EVAL_SEED_OFFSET + i)
STATE = "state"   # the stored key of the concatenated vector observation


def obs_vector(obs: Mapping[str, Any], keys: Sequence[str]) -> np.ndarray:
  """The SAC observation: the vector keys concatenated on their last axis as float32, (D,) for one observation
  or (N, D) for a batch of them (scalars count as width 1)."""
  missing = [k for k in keys if k not in obs]
  if missing:
    raise VidrlError(f"observation keys {missing} are not in the environment's observation {sorted(obs)}")
  parts = [np.asarray(obs[k], np.float32) for k in keys]
  return np.concatenate([p[None] if p.ndim == 0 else p for p in parts], axis=-1)


def stored_obs(obs: Mapping[str, Any], keys: Sequence[str], image_key: str) -> dict[str, np.ndarray]:
  """What the replay stores of an observation (or a batch of them): the keys other than `image_key` as one
  `obs_vector` under "state" (when there are any), the image under `image_key` in its own dtype (when in `keys`)."""
  vector = [k for k in keys if k != image_key]
  out = {STATE: obs_vector(obs, vector)} if vector else {}
  if image_key in keys:
    if image_key not in obs:
      raise VidrlError(f"the image key {image_key!r} is not in the environment's observation {sorted(obs)}")
    out[image_key] = np.asarray(obs[image_key])
  return out


def agent_obs(stored: Mapping[str, Any], image_key: str) -> Any:
  """SAC's input from stored observations (numpy or traced): the "state" vector alone when there is no image
  (the vector path: no encoder), else the whole dict (the shared encoder)."""
  return stored if image_key in stored else stored[STATE]


def obs_spec(env: Any, keys: Sequence[str], image_key: str) -> dict[str, tuple[tuple[int, ...], Any]]:
  """The replay's spec of `stored_obs` for `env.obs_spec`: vector (or scalar) keys, and at most one image, (H, W,
  C) under `image_key` (`sac_config`'s `image_key`)."""
  missing = [k for k in keys if k not in env.obs_spec]
  if missing or not keys:
    raise VidrlError(f"obs_keys {list(keys)} must be a non-empty subset of the environment's observation keys "
                     f"{sorted(env.obs_spec)}")
  shapes = {k: tuple(env.obs_spec[k][0]) for k in keys}
  wide = {k: s for k, s in shapes.items() if len(s) > 1 and k != image_key}
  if wide:
    raise VidrlError(f"SAC takes vector observations and one image under image_key {image_key!r}, but obs_keys "
                     f"{sorted(wide)} have shapes {list(wide.values())}; pick the state keys or set image_key")
  if image_key in shapes and len(shapes[image_key]) != 3:
    raise VidrlError(f"SAC's image {image_key!r} must have shape (H, W, C), got {shapes[image_key]}; pick an image "
                     f"key or leave it out of obs_keys")
  if image_key == STATE and len(keys) > 1:
    raise VidrlError(f"image_key {STATE!r} is the stored name of the vector keys {[k for k in keys if k != STATE]}; "
                     f"rename the image key in the config")
  spec = {}
  if len(shapes) > (image_key in shapes):
    spec[STATE] = ((sum(math.prod(s) for k, s in shapes.items() if k != image_key),), np.float32)
  if image_key in shapes:
    spec[image_key] = (shapes[image_key], np.dtype(env.obs_spec[image_key][1]))
  return spec


def greedy_policy(params: Any, obs_keys: Sequence[str], config: ml_collections.ConfigDict, action_dim: int
                  ) -> host.Policy:
  """A SAC actor acting greedily on host envs (`host.run_episodes`): tanh(mean) on `obs_keys` (an image among
  them under the config's `image_key`). `params = sac.policy_params(state)`; `config` the SAC config it was
  trained with."""
  learner, keys = sac.learner_config(config), tuple(obs_keys)
  return host.bind(_greedy(learner, int(action_dim)), params, jax.random.PRNGKey(0),
                   obs_fn=lambda obs: stored_obs(obs, keys, learner.image_key))


@functools.lru_cache(maxsize=16)
def _greedy(config: ml_collections.FrozenConfigDict, action_dim: int) -> host.RecurrentPolicy:
  """SAC's tanh(mean) on stored obs as a `RecurrentPolicy` of the actor's params (carry `()`)."""
  def act(params, carry, obs, is_first, rng):
    return sac.act(params, agent_obs(obs, config.image_key), rng, True, config, action_dim), carry
  return host.RecurrentPolicy(init=lambda n: (), act=act)


def vec_greedy(env: VecEnv, config: ml_collections.FrozenConfigDict, action_dim: int) -> ActFn:
  """SAC's tanh(mean) on a VecEnv's vector obs as the `evaluate.episode_returns` action of a `sac.SACState`."""
  return continuous_act(
      env, lambda s, obs, rng: sac.act(sac.policy_params(s), obs[STATE], rng, True, config, action_dim))


def sac_task(name: str, env: Any, obs_keys: Sequence[str] | None, config: ml_collections.ConfigDict, seed: int, *,
             on_episode: Callable[[int, dict], None] | None = None, eval_env: Any = None,
             aux: sac.Aux | None = None, extra_sources: Mapping[str, tuple[Any, int]] | None = None) -> Task:
  """SAC as an online stage of the shared loop (`vidrl_jax.train.run`) on a host env (`obs_keys`: its vector keys
  and optionally its image, named by `config.image_key`: pixel SAC) or a JAX-native `VecEnv` (`obs_keys` None:
  its one vector observation): `config.num_episodes` episodes of the env's episode length (per env copy: the env
  steps a run of untruncated episodes takes), an update burst of `round(train_every * updates_per_step)` updates
  of `batch_size` after every `train_every` (vector) env steps. `aux`: auxiliary losses on the shared encoder
  (`sac.Aux`), passed to `sac.init` and `sac.make_update_burst`. `extra_sources` {name: (source, share)}: more
  pools the `Sampler` draws from after the replay (RLV's action-free observations); each update's SAC batch
  carries their draws under their names (obs and next_obs as SAC sees them), for `aux.relabel` to use.

  Logged per `ceil(episode length / train_every)` loop steps (about an episode): `episode_return`,
  `episode_length`, `steps_per_s`, the mean update metrics (`sac.SAC_METRICS`), `env_steps` and `episodes`.
  Checkpoints every `checkpoint_every_episodes` episodes' worth of steps (0: at the end only); with `eval_env`,
  evaluates greedy episodes every `eval_every_episodes` episodes' worth (0: at the end only): `eval_episodes`
  seeded host-env episodes, or one episode per copy of a `VecEnv`. `run` returns the final `SACState` and
  {episodes, mean_return, last10_return, env_steps, eval/...}. `on_episode(e, trajectory)` (host envs): see
  `HostCollector`.
  """
  vec = isinstance(env, VecEnv)
  if vec and (obs_keys is not None or on_episode is not None or len(env.obs_shape) != 1):
    raise VidrlError(f"SAC on the VecEnv {env.name} takes its one vector observation: pass obs_keys=None and no "
                     f"on_episode, and use an env with vector observations (got shape {env.obs_shape})")
  image_key = str(config.image_key)
  obs_keys = None if vec else tuple(obs_keys)
  spec = {STATE: (tuple(env.obs_shape), np.float32)} if vec else obs_spec(env, obs_keys, image_key)
  A = env.action_shape[0] if vec and env.action_shape else getattr(env, "action_dim", 0)
  length = env.max_episode_steps if vec else env.max_steps
  K, B = round(config.train_every * config.updates_per_step), int(config.batch_size)
  if config.num_episodes < 1 or config.train_every < 1 or K < 1 or B < 1 or not length or A < 1:
    raise VidrlError(f"num_episodes, train_every, batch_size, round(train_every * updates_per_step), the episode "
                     f"length and the action size must be >= 1; got {config.num_episodes}, {config.train_every}, "
                     f"{B}, {K}, {length} and {A}")
  replay = ReplayBuffer(config.replay_capacity, spec, action_dim=A, streams=env.num_envs if vec else 1)
  extra_sources = dict(extra_sources or {})
  clash = sorted(set(extra_sources) & {"replay", "obs", "action", "reward", "next_obs", "discount"})
  if clash:
    raise VidrlError(f"extra_sources {clash} clash with the names of SAC's batch or its replay; rename them")
  sac_spec = spec if image_key in spec else spec[STATE][0][0]   # a dict switches the image encoder on
  learner = sac.learner_config(config)

  def policy(state: sac.SACState, obs: Mapping[str, jax.Array], rng: jax.Array) -> jax.Array:
    return sac.act(sac.policy_params(state), agent_obs(obs, image_key), rng, False, learner, A)

  # each process gathers only its rows of every update's batch (the replay is the same on every process)
  sampler = Sampler({"replay": (replay, B), **extra_sources}, seed, jax.process_index(), jax.process_count())
  collector = make_collector(env, replay, sampler, policy,
                             rng=stage_rng(seed, f"{name}/act"), seed=seed, train_every=config.train_every,
                             updates_per_burst=K, random_steps=config.random_steps, min_transitions=B,
                             obs_fn=None if vec else (lambda obs: stored_obs(obs, obs_keys, image_key)),
                             on_episode=on_episode)
  burst = sac.make_update_burst(config, aux)

  def step(state: sac.SACState, batch: dict, rng: jax.Array) -> tuple[sac.SACState, dict]:
    seen = {k: {**b, "obs": agent_obs(b["obs"], image_key), "next_obs": agent_obs(b["next_obs"], image_key)}
            for k, b in batch.items()}
    b = seen.pop("replay")
    return burst(state, dict(obs=b["obs"], action=b["action"], reward=b["reward"], next_obs=b["next_obs"],
                             discount=b["discount"], **seen), rng)

  evaluate = None
  if eval_env is not None and vec:   # the same episodes at every evaluation
    greedy = vec_greedy(eval_env, learner, A)

    def evaluate(state: sac.SACState, step: int) -> dict:
      return evaluate_policy(eval_env, greedy, state, stage_rng(seed, f"{name}/eval"))
  elif eval_env is not None:
    eval_batch = host.BatchEnv([eval_env])

    def evaluate(state: sac.SACState, step: int) -> dict:
      returns = host.run_episodes(eval_batch, greedy_policy(sac.policy_params(state), obs_keys, config, A),
                                  config.eval_episodes, seed, first_episode=EVAL_SEED_OFFSET)
      return dict(mean_return=float(np.mean(returns)), std_return=float(np.std(returns)),
                  num_episodes=len(returns))

  return Task(name=name, init=lambda rng: sac.init(rng, sac_spec, A, config, aux), step=step, collector=collector,
              evaluate=evaluate, show=("episode_return", "critic_loss"), **schedule(config, length))


def schedule(config: ml_collections.ConfigDict, episode_length: int) -> dict[str, int]:
  """An online `Task`'s step counts from a `sac.sac_config`'s episode-based fields: `num_steps` for
  `num_episodes` episodes of `episode_length` env steps, logging about once an episode, checkpoints and evaluation
  every `checkpoint_every_episodes` / `eval_every_episodes` episodes' worth (0: at the end only)."""
  per_episode = episode_length / config.train_every   # loop steps per episode (of each env copy)
  return dict(num_steps=math.ceil(config.num_episodes * per_episode), log_every=math.ceil(per_episode),
              checkpoint_every=math.ceil(config.checkpoint_every_episodes * per_episode),
              eval_every=math.ceil(config.eval_every_episodes * per_episode))
