"""Online stages: the host side of a stage that collects while it trains, driven by `vidrl_jax.train.loop.run`.

A `Collector` is what turns a `Task` into an online stage. Loop step n of such a stage is one iteration:
`collect(state, n)` acts `train_every` environment steps with the agent in `state` and adds them to its replay
buffer; `batch(n)` then gives the stacked batches of one jitted burst of updates (the task's `step`), or None
while no update is due (random steps, a replay smaller than a batch). The loop checkpoints the agent with orbax and
the collector's `state_dict()` (replay, counters) beside it as one atomic file of the same step. A method with
more than one source (RLV: a growing interaction replay and a fixed observation pool, a replay or a dataset's
`transitions()`, 256 + 256 per update) passes a `mix.Sampler` over all of them; the collector fills and saves only
its own replay, and the task's `step` receives {source name: batch}.

`make_collector` builds the right collector from a pure, jittable `policy(state, obs, rng)`, or from a
`host.RecurrentPolicy` (a policy that carries state between env steps, e.g. a world model's latent and its
previous action: DreamerV2, APV), host envs only:

- `VecCollector` steps a JAX-native `VecEnv` (gymnax under `vmap`) inside one jitted `lax.scan` per loop step
  (see its docstring for its randomness; the env state is checkpointed with the replay);
- `HostCollector` steps a host environment (`vidrl_jax.envs.host.HostEnv`: dm_control, Meta-World, ...). Every
  random choice is a function of the seed and a counter, so a resumed run continues exactly as an uninterrupted one:
  episode e is reset with `episode_seed(seed, e)`; the uniform actions of the first `random_steps` env steps come
  from `np.random.default_rng([seed, 0, env_step])`; the policy samples from `fold_in(rng, env_step)`; the burst
  after u updates is `sampler.sample(u, (K,))`. A checkpoint taken in the middle of an episode stores that
  episode's actions and the policy's carry; resuming resets the environment with the episode's seed and replays
  the actions (a `HostEnv` is deterministic given its seed and actions; the replay does not call the policy), checks
  that it reached the stored observation, and restores the carry as it was.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from vidrl_jax.data.mix import Sampler
from vidrl_jax.data.replay import ReplayBuffer
from vidrl_jax.envs import host
from vidrl_jax.envs.base import VecEnv, env_action
from vidrl_jax.errors import VidrlError

Obs = Mapping[str, np.ndarray]


class Collector(Protocol):
  """The host side of an online stage (see module docstring)."""

  def collect(self, state: Any, step: int) -> dict[str, float]:
    """Acts for loop step `step` with the agent in `state`; returns metrics (e.g. of episodes that ended)."""
    ...

  def batch(self, step: int) -> Any | None:
    """The numpy batch of this step's update burst, or None when no update is due."""
    ...

  def counters(self) -> dict[str, float]:
    """Running totals logged as they are (not averaged), e.g. env steps and episodes so far."""
    ...

  def summary(self) -> dict[str, float]:
    """What the stage's caller gets back from `run` beside the evaluation metrics."""
    ...

  def state_dict(self) -> dict[str, np.ndarray]:
    ...

  def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
    ...


def make_collector(env: Any, replay: ReplayBuffer, sampler: Sampler,
                   policy: Callable[[Any, Obs, jax.Array], Any] | host.RecurrentPolicy,
                   *, rng: jax.Array, seed: int, train_every: int, updates_per_burst: int, random_steps: int,
                   min_transitions: int, obs_fn: Callable[[Obs], Obs] | None = None,
                   on_episode: Callable[[int, dict], None] | None = None) -> Collector:
  """The collector for `env`: a `VecCollector` for a JAX-native `VecEnv` (stored obs key "state"), else a
  `HostCollector` (`obs_fn` picks the stored obs). `policy` is a pure, jittable `policy(state, obs, rng) -> action
  in [-1, 1]^A` or, for a host env, a `host.RecurrentPolicy`; env step t's sample uses `fold_in(rng, t)`. The
  replay must be one of `sampler`'s sources."""
  schedule = dict(train_every=train_every, updates_per_burst=updates_per_burst, random_steps=random_steps,
                  min_transitions=min_transitions)
  if isinstance(env, VecEnv):
    if isinstance(policy, host.RecurrentPolicy):
      raise VidrlError(f"the VecEnv collector takes a stateless policy(state, obs, rng), not a RecurrentPolicy; "
                       f"step {env.name} on the host (a HostEnv) to act with a carry")
    if on_episode is not None or obs_fn is not None:
      raise VidrlError(f"the VecEnv {env.name} has one observation and no episode recorder: pass neither obs_fn "
                       f"nor on_episode")
    return VecCollector(env, replay, sampler, policy, rng=rng, **schedule)
  if obs_fn is None:
    raise VidrlError(f"the host env {env.name} returns a dict of observations: pass obs_fn to pick what is stored")
  if not isinstance(policy, host.RecurrentPolicy):
    policy = _single_stateless(policy)
  return HostCollector(env, replay, sampler, policy, rng=rng, seed=seed, obs_fn=obs_fn, on_episode=on_episode,
                       **schedule)


def _single_stateless(policy: Callable[[Any, Obs, jax.Array], Any]) -> host.RecurrentPolicy:
  """A stateless policy as the `RecurrentPolicy` of the host collector's batch of one, with the empty carry `()`:
  it is called on the obs without their batch axis, as it always was there, so its samples stay bit for bit."""
  def act(state, carry, obs, is_first, rng):
    if is_first.shape != (1,):
      raise VidrlError(f"a stateless policy wrapped for the host collector acts on a batch of one, got "
                       f"{is_first.shape[0]}; wrap it as a RecurrentPolicy of its own for more")
    return policy(state, jax.tree.map(lambda x: x[0], obs), rng)[None], carry
  return host.RecurrentPolicy(init=lambda n: (), act=act)


class _ReplayCollector:
  """What both collectors share: update bursts drawn from the sampler, the returns summary."""
  env_steps: int
  updates: int
  returns: list[float]
  random_steps: int
  min_transitions: int
  updates_per_burst: int
  replay: ReplayBuffer
  sampler: Sampler

  def batch(self, step: int) -> Any | None:
    if self.env_steps < self.random_steps or self.replay.num_transitions() < self.min_transitions:
      return None
    out = self.sampler.sample(self.updates, (self.updates_per_burst,))
    self.updates += self.updates_per_burst
    return out

  def summary(self) -> dict[str, float]:
    r = self.returns
    return {"episodes": len(r), "mean_return": float(np.mean(r)) if r else float("nan"),
            "last10_return": float(np.mean(r[-10:])) if r else float("nan"), "env_steps": self.env_steps}


class HostCollector(_ReplayCollector):
  """Collects from one host env into `replay` and draws update bursts of `updates_per_burst` batches from `sampler`.

  `obs_fn(env_obs) -> stored obs` picks what the agent sees (the replay's obs keys). The env is the policy's batch
  of one: after the random steps, `policy.act` (jitted once, rng `fold_in(rng, env_step)`) gives the action and
  the next carry; a stateless policy comes wrapped with the empty carry `()` (`make_collector`). The carry is
  `policy.init(1)` at each episode's start and `is_first` is True on the episode's first policy call only.
  During the random steps the policy is not called (DreamerV2's prefill), so the carry stays `init(1)`; when the
  random phase ends mid-episode the policy's first call there has is_first=True too: the policy has seen none of
  the episode's earlier frames nor their random actions, and starts from a reset as on an episode's first frame
  (an RSSM with a learned initial state takes it there, not the zeros of a carry that was never reset). The
  replay's own is_first marks only the episode's first row. The carry lives on the host as numpy between steps and
  is saved with the collector (`collector/carry/<i>`, its leaves in `jax.tree.leaves` order), so a run resumed
  mid-episode continues from the same carry; replaying the episode's actions on resume does not call the policy.

  An update burst is due after each iteration once `random_steps` env steps are done and the replay holds
  `min_transitions`. `on_episode(e, trajectory)` gets each finished episode as an `EpisodeRecorder` trajectory
  (every key the env returns); after a resumption it is called again, with the same trajectories, for the
  episodes that finished after the checkpoint.
  """

  def __init__(self, env: host.HostEnv, replay: ReplayBuffer, sampler: Sampler, policy: host.RecurrentPolicy, *,
               rng: jax.Array, seed: int, train_every: int, updates_per_burst: int, random_steps: int,
               min_transitions: int, obs_fn: Callable[[Obs], Obs],
               on_episode: Callable[[int, dict], None] | None = None):
    if train_every < 1 or updates_per_burst < 1 or min_transitions < 1 or env.max_steps < 1 or random_steps < 0:
      raise VidrlError(f"train_every, updates_per_burst, min_transitions and the env's max_steps must be >= 1 and "
                       f"random_steps >= 0; got {train_every}, {updates_per_burst}, {min_transitions}, "
                       f"{env.max_steps} and {random_steps}")
    self.env, self.replay, self.sampler, self.obs_fn = env, replay, sampler, obs_fn
    self.seed, self.train_every, self.updates_per_burst = int(seed), int(train_every), int(updates_per_burst)
    self.random_steps, self.min_transitions, self.on_episode = int(random_steps), int(min_transitions), on_episode

    def act(state, carry, obs, is_first, env_step):
      batched = jax.tree.map(lambda x: x[None], obs)
      action, carry = policy.act(state, carry, batched, is_first, jax.random.fold_in(rng, env_step))
      return action[0], carry

    self._act, self._init = jax.jit(act), jax.jit(lambda: policy.init(1))
    self._carry: Any = None   # the running episode's carry (numpy leaves)
    self.env_steps = 0      # env steps taken
    self.episode = 0        # index of the running (or next) episode
    self.updates = 0        # updates drawn
    self.returns: list[float] = []   # of every finished episode
    self._obs: Obs | None = None     # the running episode's current stored obs; None between episodes
    self._actions: list[np.ndarray] = []
    self._return = 0.0
    self._recorder: host.EpisodeRecorder | None = None

  # ---- acting -----------------------------------------------------------------------------------------
  def _start_episode(self, add_row: bool = True) -> None:
    obs = self.env.reset(host.episode_seed(self.seed, self.episode))
    self._obs, self._actions, self._return = self.obs_fn(obs), [], 0.0
    self._carry = jax.device_get(self._init())
    if add_row:
      self.replay.add(self._obs, is_first=True)
    if self.on_episode is not None:
      self._recorder = host.EpisodeRecorder(1, self.env.action_dim)
      self._recorder.reset(_batched(obs))

  def _env_step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool]:
    obs, reward, terminal = self.env.step(action)
    last = terminal or len(self._actions) + 1 == self.env.max_steps
    if self._recorder is not None:
      self._recorder.step(action[None], _batched(obs), np.asarray([reward], np.float32), np.asarray([terminal]))
    self._actions.append(action)
    self._return += float(reward)
    self._obs = self.obs_fn(obs)
    return self._obs, float(reward), bool(terminal), last

  def collect(self, state: Any, step: int) -> dict[str, float]:
    if self.env_steps != step * self.train_every:
      raise VidrlError(f"the collector is at env step {self.env_steps} but loop step {step} starts at env step "
                       f"{step * self.train_every}; its state and the agent's checkpoint are out of step")
    t0, finished, lengths = time.time(), [], []
    for _ in range(self.train_every):
      if self._obs is None:
        self._start_episode()
      if self.env_steps < self.random_steps:
        action = np.random.default_rng([self.seed, 0, self.env_steps]).uniform(
            -1.0, 1.0, self.env.action_dim).astype(np.float32)
      else:
        is_first = not self._actions or self.env_steps == self.random_steps   # the episode's first policy call
        action, self._carry = jax.device_get(self._act(state, self._carry, self._obs, np.asarray([is_first]),
                                                       self.env_steps))
        action = np.asarray(action, np.float32)
      obs, reward, terminal, last = self._env_step(action)
      self.replay.add(obs, action, reward, is_last=last, is_terminal=terminal)
      self.env_steps += 1
      if last:
        finished.append(self._return)
        lengths.append(len(self._actions))
        self._finish_episode()
    metrics = {"steps_per_s": self.train_every / max(time.time() - t0, 1e-9)}
    if finished:
      metrics.update(episode_return=float(np.mean(finished)), episode_length=float(np.mean(lengths)))
    return metrics

  def _finish_episode(self) -> None:
    self.returns.append(self._return)
    if self._recorder is not None:
      self.on_episode(self.episode, self._recorder.finish()[0])
    self.episode += 1
    self._obs, self._recorder = None, None

  def counters(self) -> dict[str, float]:
    return {"env_steps": float(self.env_steps), "episodes": float(self.episode)}

  # ---- saving -----------------------------------------------------------------------------------------
  def state_dict(self) -> dict[str, np.ndarray]:
    A = self.env.action_dim
    extra = dict(env_steps=self.env_steps, episode=self.episode, updates=self.updates,
                 returns=np.asarray(self.returns, np.float64), running=self._obs is not None,
                 episode_actions=np.asarray(self._actions, np.float32).reshape(-1, A))
    out = {f"collector/{k}": np.asarray(v) for k, v in extra.items()}
    if self._obs is not None:
      out.update({f"collector/carry/{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(self._carry))})
    out.update({f"replay/{k}": v for k, v in self.replay.state_dict().items()})
    return out

  def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
    self.replay.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("replay/")})
    c = {k[10:]: v for k, v in state.items() if k.startswith("collector/")}
    self.env_steps, self.episode, self.updates = int(c["env_steps"]), int(c["episode"]), int(c["updates"])
    self.returns = [float(r) for r in c["returns"]]
    self._obs, self._recorder = None, None
    if bool(c["running"]):   # replay the running episode's actions to bring the env back to where it was
      stored = self.replay.newest_obs()
      self._start_episode(add_row=False)   # the restored replay holds the episode's rows already
      for action in c["episode_actions"]:
        self._env_step(np.asarray(action, np.float32))
      if any(not np.array_equal(self._obs[k], stored[k]) for k in stored):
        raise VidrlError(f"{self.env.name} did not return to the checkpointed observation when its episode was "
                         f"replayed from its seed; the environment is not deterministic, so this stage cannot "
                         f"resume mid-episode: delete its directory to start it again")
      self._carry = self._restored_carry(c)

  def _restored_carry(self, c: Mapping[str, np.ndarray]) -> Any:
    """The running episode's saved carry, in the tree of `init(1)` (whose leaves it must match)."""
    fresh = jax.device_get(self._init())
    leaves, treedef = jax.tree.flatten(fresh)
    saved = [np.asarray(c[k]) for k in sorted((k for k in c if k.startswith("carry/")), key=lambda k: int(k[6:]))]
    if [(x.shape, x.dtype) for x in saved] != [(np.shape(x), np.asarray(x).dtype) for x in leaves]:
      raise VidrlError(f"the checkpoint's policy carry {[(x.shape, str(x.dtype)) for x in saved]} does not match "
                       f"this policy's init(1) {[(np.shape(x), str(np.asarray(x).dtype)) for x in leaves]}; resume "
                       f"with the policy that wrote it, or delete the stage's directory to start it again")
    return jax.tree.unflatten(treedef, saved)


def _batched(obs: Obs) -> dict[str, np.ndarray]:
  return {k: np.asarray(v)[None] for k, v in obs.items()}


class VecCollector(_ReplayCollector):
  """Collects from a JAX-native `VecEnv` (gymnax under `vmap`): a loop step's `train_every` vector steps run as one
  jitted `lax.scan`, policy and environment inside `jit`; the rows come back to the host replay, one stream per
  env copy (`ReplayBuffer(streams=env.num_envs)`), stored obs key `obs_key`. Continuous actions: the policy acts
  in [-1, 1]^A, mapped linearly onto the env's [low, high].

  Counters are in transitions (`env_steps`: vector steps x copies, as are `random_steps` and the uniform-action
  phase). Vector step t draws its uniform action, policy sample and env step from `fold_in(rng, t)`; the env state
  and its current observation are part of `state_dict()`, so a resumed run continues the same episodes.

  It takes a stateless `policy(state, obs, rng)` only: a `RecurrentPolicy` would need its carry reset per copy at
  the auto-resets inside the scan and saved beside the env state, and the recurrent agents here (DreamerV2, APV)
  act on host envs, through `HostCollector`.
  """

  def __init__(self, env: Any, replay: ReplayBuffer, sampler: Sampler,
               policy: Callable[[Any, Obs, Any], Any], *, rng: Any, train_every: int, updates_per_burst: int,
               random_steps: int, min_transitions: int, obs_key: str = "state"):
    if env.num_actions is not None or env.action_low is None:
      raise VidrlError(f"{env.name} has discrete actions; the online collectors act in [-1, 1]^A, so use an env "
                       f"with continuous actions")
    if replay.streams != env.num_envs:
      raise VidrlError(f"the replay has {replay.streams} streams for {env.num_envs} env copies; build it with "
                       f"streams=env.num_envs")
    self.env, self.replay, self.sampler, self.obs_key = env, replay, sampler, obs_key
    self.train_every, self.updates_per_burst = int(train_every), int(updates_per_burst)
    self.random_steps, self.min_transitions = int(random_steps), int(min_transitions)
    self.env_steps = self.updates = 0
    self.returns: list[float] = []
    n = env.num_envs
    rng_reset, rng_steps = jax.random.split(rng)
    self._reset = jax.jit(lambda: env.reset(rng_reset))
    self._env_state: Any = None
    self._obs: Any = None

    def rollout(state, env_state, obs, t0):
      def body(carry, t):
        env_state, obs = carry
        k_rand, k_act, k_env = jax.random.split(jax.random.fold_in(rng_steps, t), 3)
        uniform = jax.random.uniform(k_rand, (n, *env.action_shape), jnp.float32, -1.0, 1.0)
        action = jnp.where(t * n < self.random_steps, uniform, policy(state, {obs_key: obs}, k_act))
        env_state, next_obs, reward, done, info = env.step(env_state, env_action(env, action), k_env)
        if "final_obs" not in info:
          raise VidrlError(f"{env.name} does not report info['final_obs'] (the observation before an auto-reset), "
                           f"which off-policy learners bootstrap from; add it to that VecEnv's step")
        out = dict(action=action, reward=reward, final=info["final_obs"], reset=next_obs, done=done,
                   terminated=info["terminated"], episode_return=info["episode_return"],
                   episode_length=info["episode_length"])
        return (env_state, next_obs), out
      return jax.lax.scan(body, (env_state, obs), t0 + jnp.arange(self.train_every))

    self._rollout = jax.jit(rollout)

  def collect(self, state: Any, step: int) -> dict[str, float]:
    n = self.env.num_envs
    if self.env_steps != step * self.train_every * n:
      raise VidrlError(f"the collector is at env step {self.env_steps} but loop step {step} starts at env step "
                       f"{step * self.train_every * n}; its state and the agent's checkpoint are out of step")
    t0 = time.time()
    if self._env_state is None:
      self._env_state, self._obs = self._reset()
      self.replay.add({self.obs_key: np.asarray(self._obs)}, is_first=True)
    (self._env_state, self._obs), traj = self._rollout(state, self._env_state, self._obs, self.env_steps // n)
    traj = jax.device_get(traj)
    for t in range(self.train_every):
      self.replay.add({self.obs_key: traj["final"][t]}, traj["action"][t], traj["reward"][t],
                      is_last=traj["done"][t], is_terminal=traj["terminated"][t])
      ended = np.flatnonzero(traj["done"][t])
      if len(ended):   # the copies that auto-reset start their next episode
        self.replay.add({self.obs_key: traj["reset"][t][ended]}, is_first=True, streams=ended)
    self.env_steps += self.train_every * n
    done = traj["done"]
    finished = traj["episode_return"][done].astype(np.float64)
    self.returns.extend(finished.tolist())
    metrics = {"steps_per_s": self.train_every * n / max(time.time() - t0, 1e-9)}
    if done.any():
      metrics.update(episode_return=float(finished.mean()), episode_length=float(traj["episode_length"][done].mean()))
    return metrics

  def counters(self) -> dict[str, float]:
    return {"env_steps": float(self.env_steps), "episodes": float(len(self.returns))}

  def state_dict(self) -> dict[str, np.ndarray]:
    out = {f"replay/{k}": v for k, v in self.replay.state_dict().items()}
    out.update({"collector/env_steps": np.asarray(self.env_steps), "collector/updates": np.asarray(self.updates),
                "collector/returns": np.asarray(self.returns, np.float64)})
    if self._env_state is not None:
      leaves = jax.device_get(jax.tree.leaves((self._env_state, self._obs)))
      out.update({f"env/{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)})
    return out

  def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
    self.replay.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("replay/")})
    self.env_steps, self.updates = int(state["collector/env_steps"]), int(state["collector/updates"])
    self.returns = [float(r) for r in state["collector/returns"]]
    self._env_state = self._obs = None
    if "env/0" in state:
      treedef = jax.tree.structure(jax.eval_shape(self._reset))
      leaves = [jnp.asarray(state[f"env/{i}"]) for i in range(treedef.num_leaves)]
      self._env_state, self._obs = jax.tree.unflatten(treedef, leaves)
