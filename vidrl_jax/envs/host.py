"""Host-side (numpy, not jit-able) environments, stepped from Python one decision at a time.

Used where the simulator itself is not JAX (DeepMind Control on MuJoCo, see `vidrl_jax.envs.dmc`; a gymnax env
stepped from the host, see `vidrl_jax.envs.gymnax_host`):

  env = BatchEnv([make_host_env('walker-walk', image_size=64) for _ in range(4)])
  policy = bind(recurrent_policy, agent_state, jax.random.PRNGKey(0))
  returns = run_episodes(env, policy, num_episodes=10, seed=0, on_episode=lambda i, episode: buffer.add(episode))

- Observations are dicts of numpy arrays: vectors float32 (d,), 'image' uint8 (H, W, 3).
- Actions are float32 in [-1, 1]^action_dim.
- An episode lasts `max_steps` decisions unless the env reports `terminal` earlier; a time-out is not terminal.
- Recorded episodes are plain (see `EpisodeRecorder`): 'obs' (T+1 of each key), 'action' (T), 'reward' (T),
  'terminal'. A method or the data layer turns them into its own file format (AIME's: `methods/aime/envs.py`).
- Every policy is a `RecurrentPolicy` (pure, jittable); `bind` fixes its agent state and rng, giving the host
  `Policy` that `run_episodes` drives (the host collector of `vidrl_jax.train.online` takes the
  `RecurrentPolicy` itself).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from vidrl_jax.errors import VidrlError

ObsSpec = dict[str, tuple[tuple[int, ...], np.dtype]]


@runtime_checkable
class HostEnv(Protocol):
  """One host-side environment copy (concrete classes in `vidrl_jax.envs.dmc` and `vidrl_jax.envs.gymnax_host`).

  `reset(seed)` starts a new episode and is deterministic: the same seed followed by the same actions gives the
  same observations and rewards. `step(action)` takes a float32 action in [-1, 1]^action_dim and returns
  `(obs, reward, terminal)`; stepping more than `max_steps` times after a reset, or before any reset, raises
  `VidrlError`.
  """
  name: str
  obs_spec: ObsSpec            # key -> (shape, dtype)
  action_dim: int
  max_steps: int               # decisions per episode (after action repeat)

  def reset(self, seed: int) -> dict[str, np.ndarray]:
    ...

  def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool]:
    ...


class RecurrentPolicy(NamedTuple):
  """A policy that carries state between env steps (DreamerV2, APV: the RSSM latent and the previous action; the
  empty carry `()` for a stateless one), as two pure, jittable functions:

  - `init(n) -> carry`: the carry of n fresh episodes, a pytree of numeric arrays with leading axis n;
  - `act(state, carry, obs, is_first, rng) -> (action (n, A) in [-1, 1], carry)` for the agent's `state`,
    batched obs {key: (n, ...)} and `is_first` (n,) bool, True where the policy starts from `init`'s carry
    (an episode's first frame): the policy resets its carry there itself, so a replay window (is_first in the
    data) and an online episode are filtered by the same code.

  `bind` turns it into the host `Policy` of `run_episodes`; `vidrl_jax.train.online.HostCollector` keeps its
  carry as numpy between steps and saves it with its checkpoint.
  """
  init: Callable[[int], Any]
  act: Callable[[Any, Any, Mapping[str, Any], jax.Array, jax.Array], tuple[jax.Array, Any]]


class Policy(NamedTuple):
  """What `run_episodes` drives (made by `bind`): `init(n) -> carry` and `act(carry, obs, is_first) -> (actions
  (n, A) float32, carry)` on batched numpy obs {key: (n, ...)} and `is_first` (n,) bool."""
  init: Callable[[int], Any]
  act: Callable[[Any, Mapping[str, np.ndarray], np.ndarray], tuple[np.ndarray, Any]]


def bind(policy: RecurrentPolicy, state: Any, rng: jax.Array,
         obs_fn: Callable[[Mapping[str, np.ndarray]], Any] | None = None) -> Policy:
  """`policy` acting for the fixed agent `state`: one jitted `policy.act` per decision, the bound policy's
  decision t (counted over all its calls) with `fold_in(rng, t)`; `obs_fn` maps each batch of host obs first
  (e.g. picks the keys the policy reads). The carry stays as `act` returns it (`run_episodes` only passes it on)."""
  act, decisions = jax.jit(policy.act), itertools.count()

  def host_act(carry: Any, obs: Mapping[str, np.ndarray], is_first: np.ndarray) -> tuple[np.ndarray, Any]:
    seen = obs if obs_fn is None else obs_fn(obs)
    action, carry = act(state, carry, seen, jnp.asarray(is_first), jax.random.fold_in(rng, next(decisions)))
    return np.asarray(action, np.float32), carry

  return Policy(init=policy.init, act=host_act)


class EpisodeLimit:
  """Decision counting for `HostEnv` classes: a step before `reset` or past `max_steps` is an error."""
  name: str
  max_steps: int
  action_dim: int

  def _start(self) -> None:
    self._elapsed = 0

  def _check_action(self, action: np.ndarray) -> np.ndarray:
    """Counts one decision and returns `action` as float32 clipped to [-1, 1]."""
    elapsed = getattr(self, '_elapsed', None)
    if elapsed is None:
      raise VidrlError(f'{self.name}: step was called before reset; call reset(seed) first.')
    if elapsed >= self.max_steps:
      raise VidrlError(f'{self.name}: step was called after the episode limit of {self.max_steps} decisions; '
                       'call reset(seed) to start a new episode.')
    action = np.asarray(action, np.float32)
    if action.shape != (self.action_dim,):
      raise VidrlError(f'{self.name}: expected an action of shape ({self.action_dim},), got {action.shape}.')
    self._elapsed = elapsed + 1
    return np.clip(action, -1.0, 1.0)


def episode_seed(seed: int, index: int) -> int:
  """The reset seed of episode `index` of a run seeded `seed`: a deterministic hash that fits in uint32."""
  if seed < 0 or index < 0:
    raise VidrlError(f'episode_seed needs a non-negative seed and index, got seed={seed} and index={index}.')
  return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0])


def _stack(obs_list: list[dict[str, np.ndarray]], spec: ObsSpec) -> dict[str, np.ndarray]:
  return {k: np.stack([o[k] for o in obs_list]).astype(dtype, copy=False) for k, (_, dtype) in spec.items()}


class BatchEnv:
  """`N` host envs stepped together with batched (N, ...) numpy inputs and outputs.

  A copy that has reported `terminal` is not stepped again: until the next `reset` it keeps returning its last
  obs with reward 0 and terminal True (no auto-reset). Actions are clipped to [-1, 1]. `elapsed` counts the
  decisions since the last reset; stepping past `max_steps` raises `VidrlError`.
  """

  def __init__(self, envs: list[HostEnv]):
    if not envs:
      raise VidrlError('BatchEnv needs at least one env; pass a non-empty list of host envs.')
    first = envs[0]
    for e in envs[1:]:
      if (dict(e.obs_spec) != dict(first.obs_spec) or e.action_dim != first.action_dim
          or e.max_steps != first.max_steps):
        raise VidrlError(f'BatchEnv needs envs with identical obs_spec, action_dim and max_steps, but {e.name} '
                         f'differs from {first.name}; build every copy with the same make_host_env arguments.')
    self._envs = list(envs)
    self._last_obs: list[dict[str, np.ndarray]] | None = None
    self._terminal = np.zeros(len(envs), bool)
    self._elapsed = 0

  @property
  def num_envs(self) -> int:
    return len(self._envs)

  @property
  def obs_spec(self) -> ObsSpec:
    return dict(self._envs[0].obs_spec)

  @property
  def action_dim(self) -> int:
    return self._envs[0].action_dim

  @property
  def max_steps(self) -> int:
    return self._envs[0].max_steps

  @property
  def name(self) -> str:
    return self._envs[0].name

  @property
  def elapsed(self) -> int:
    """Decisions taken since the last `reset`."""
    return self._elapsed

  def reset(self, seeds: Sequence[int]) -> dict[str, np.ndarray]:
    """Resets copy i with `seeds[i]`; returns the stacked first observations."""
    seeds = list(seeds)
    if len(seeds) != self.num_envs:
      raise VidrlError(f'BatchEnv.reset got {len(seeds)} seeds for {self.num_envs} envs; pass one seed per env.')
    self._last_obs = [e.reset(int(s)) for e, s in zip(self._envs, seeds)]
    self._terminal[:] = False
    self._elapsed = 0
    return _stack(self._last_obs, self.obs_spec)

  def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Steps every non-terminal copy; returns obs (N, ...), reward (N,) float32 and terminal (N,) bool."""
    if self._last_obs is None:
      raise VidrlError('BatchEnv.step was called before reset; call reset(seeds) first.')
    if self._elapsed >= self.max_steps:
      raise VidrlError(f'BatchEnv.step was called after the episode limit of {self.max_steps} decisions; '
                       'call reset(seeds) to start new episodes.')
    actions = np.asarray(actions, np.float32)
    if actions.shape != (self.num_envs, self.action_dim):
      raise VidrlError(f'BatchEnv.step expects actions of shape {(self.num_envs, self.action_dim)}, got '
                       f'{actions.shape}; pass one action vector per env.')
    actions = np.clip(actions, -1.0, 1.0)
    reward = np.zeros(self.num_envs, np.float32)
    for i, env in enumerate(self._envs):
      if self._terminal[i]:
        continue
      obs, r, term = env.step(actions[i])
      self._last_obs[i] = obs
      reward[i] = r
      self._terminal[i] = bool(term)
    self._elapsed += 1
    return _stack(self._last_obs, self.obs_spec), reward, self._terminal.copy()


class EpisodeRecorder:
  """Records N parallel episodes as plain episode dicts, in no method's file format.

  Each episode from `finish`, for a copy that took T steps: 'obs', a dict with every obs key (T+1, ...) in its
  dtype (obs 0 from the reset, obs t+1 after action t); 'action' (T, A) float32, the actions clipped to [-1, 1];
  'reward' (T,) float32, reward[t] received for action t; 'terminal', a bool: the episode ended in a terminal
  state (False for a time-out).
  """

  def __init__(self, num_envs: int, action_dim: int):
    self.num_envs = num_envs
    self.action_dim = action_dim
    self._steps: list[list[tuple[dict, np.ndarray, float]]] | None = None
    self._terminal = np.zeros(num_envs, bool)

  def reset(self, obs: dict[str, np.ndarray]) -> None:
    """Starts N new episodes from batched first observations (N, ...)."""
    self._check_batch(obs)
    zeros = np.zeros(self.action_dim, np.float32)
    self._steps = [[({k: np.array(v[i]) for k, v in obs.items()}, zeros, 0.0)] for i in range(self.num_envs)]
    self._terminal[:] = False

  def step(self, action: np.ndarray, obs: dict[str, np.ndarray], reward: np.ndarray, terminal: np.ndarray) -> None:
    """Records one batched step; copies that were already terminal before it are ignored."""
    if self._steps is None:
      raise VidrlError('EpisodeRecorder.step was called before reset; call reset(first_obs) first.')
    self._check_batch(obs)
    action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
    if action.shape != (self.num_envs, self.action_dim):
      raise VidrlError(f'EpisodeRecorder.step expects actions of shape {(self.num_envs, self.action_dim)}, got '
                       f'{action.shape}; pass the batched actions given to the env.')
    reward = np.asarray(reward, np.float32).reshape(self.num_envs)
    terminal = np.asarray(terminal, bool).reshape(self.num_envs)
    for i in range(self.num_envs):
      if self._terminal[i]:
        continue
      self._steps[i].append(({k: np.array(v[i]) for k, v in obs.items()}, action[i].copy(), float(reward[i])))
    self._terminal |= terminal

  def finish(self) -> list[dict]:
    """The N recorded episodes (see class docstring)."""
    if self._steps is None:
      raise VidrlError('EpisodeRecorder.finish was called before reset; call reset(first_obs) first.')
    episodes = []
    for i, steps in enumerate(self._steps):
      action = np.stack([s[1] for s in steps[1:]]) if len(steps) > 1 else np.zeros((0, self.action_dim))
      episodes.append({'obs': {k: np.stack([s[0][k] for s in steps]) for k in steps[0][0]},
                       'action': action.astype(np.float32),
                       'reward': np.asarray([s[2] for s in steps[1:]], np.float32),
                       'terminal': bool(self._terminal[i])})
    return episodes

  def _check_batch(self, obs: dict[str, np.ndarray]) -> None:
    for k, v in obs.items():
      if np.shape(v)[:1] != (self.num_envs,):
        raise VidrlError(f'EpisodeRecorder expects batched obs with leading size {self.num_envs}, but {k!r} has '
                         f'shape {np.shape(v)}; pass the stacked obs from BatchEnv.')


def run_episodes(env: BatchEnv, policy: Policy, num_episodes: int, seed: int,
                 on_episode: Callable[[int, dict], None] | None = None, first_episode: int = 0) -> np.ndarray:
  """Runs `num_episodes` episodes and returns their undiscounted returns, (num_episodes,) float64.

  Episodes run in rounds of `env.num_envs`; surplus episodes of the last round are run and discarded. Episode i
  (0-based over all rounds) is reset with `episode_seed(seed, first_episode + i)`. `policy.init(n)` starts each
  round and `policy.act(carry, obs, is_first)` gives (n, A) actions, with `is_first` True on an episode's first
  decision. A round ends after `env.max_steps` decisions or when every copy is terminal. `on_episode(i, episode)`
  gets each kept episode as recorded by `EpisodeRecorder`.
  """
  if num_episodes < 0:
    raise VidrlError(f'run_episodes needs num_episodes >= 0, got {num_episodes}.')
  n = env.num_envs
  returns = np.zeros(num_episodes, np.float64)
  recorder = EpisodeRecorder(n, env.action_dim) if on_episode is not None else None
  for start in range(0, num_episodes, n):
    obs = env.reset([episode_seed(seed, first_episode + start + j) for j in range(n)])
    if recorder is not None:
      recorder.reset(obs)
    carry = policy.init(n)
    is_first = np.ones(n, bool)
    totals = np.zeros(n, np.float64)
    done = np.zeros(n, bool)
    for _ in range(env.max_steps):
      actions, carry = policy.act(carry, obs, is_first)
      actions = np.asarray(actions, np.float32)
      obs, reward, terminal = env.step(actions)
      totals += np.where(done, 0.0, reward.astype(np.float64))
      if recorder is not None:
        recorder.step(actions, obs, reward, terminal)
      done |= terminal
      is_first = np.zeros(n, bool)
      if done.all():
        break
    keep = min(n, num_episodes - start)
    returns[start:start + keep] = totals[:keep]
    if recorder is not None:
      for j, episode in enumerate(recorder.finish()[:keep]):
        on_episode(start + j, episode)
  return returns


def random_policy(action_dim: int, seed: int = 0) -> Policy:
  """Uniform random actions in [-1, 1]^action_dim, decision t's from `fold_in(PRNGKey(seed), t)` (`bind`; the
  observations are not sent to the device)."""
  return bind(_uniform(int(action_dim)), None, jax.random.PRNGKey(seed), obs_fn=lambda obs: {})


@functools.lru_cache(maxsize=16)
def _uniform(action_dim: int) -> RecurrentPolicy:
  def act(state, carry, obs, is_first, rng):
    return jax.random.uniform(rng, (is_first.shape[0], action_dim), jnp.float32, -1.0, 1.0), carry
  return RecurrentPolicy(init=lambda n: (), act=act)


__all__ = ['BatchEnv', 'EpisodeLimit', 'EpisodeRecorder', 'HostEnv', 'Policy', 'RecurrentPolicy', 'bind',
           'episode_seed', 'random_policy', 'run_episodes']
